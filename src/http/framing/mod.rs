//! The one authority on where each request and its body begin and end.
//!
//! hyper's HTTP/1 parser is lenient where a proxy in front may not be: bare
//! LF line ends, a Content-Length beside a Transfer-Encoding, duplicate
//! fields, odd chunk lines. When the proxy and the server split one byte
//! stream into requests differently, a request can hide inside another's
//! body (request smuggling). So every byte that arrives is checked here
//! first, against gunicorn 27's rules (RFC 9110/9112 strictly), and hyper
//! is handed only what has passed: whole heads once they are complete and
//! valid, body bytes as they are framed. Whatever hyper parses, this module
//! has parsed the same way before it; what it cannot frame without doubt it
//! refuses, and hyper never sees the rest of the connection.
//!
//! `Framer` is the state machine over the stream; `Gate` keeps the bytes
//! read but not yet passed, and what hyper gets instead of a refused head.

pub mod chunked;
mod gate;
pub mod head;

pub use gate::{Gate, Passed};

use http::StatusCode;
use std::borrow::Cow;

use head::{After, Framing, Head, Leniency, Limits, Target};

/// Why a request is refused, and the status its client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: Cow<'static, str>,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    pub fn bad(reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, reason)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkLine,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    /// A request that may switch protocols has been read: nothing more is
    /// framed until its answer says whether the connection is still HTTP.
    AwaitSwitch,
    /// Switched: the rest is another protocol's.
    Tunnel,
    /// Nothing more is read: the last request closes the connection, or
    /// one was refused.
    Closed,
}

/// One step over the bytes not yet passed.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next `n` bytes go to hyper as they are.
    Pass(usize),
    /// A valid head of `len` bytes that hyper must not get as it is: its
    /// target is kept for the app (`fix`), or the whole head is rewritten.
    Head {
        len: usize,
        fix: Target,
        target: std::ops::Range<usize>,
        rewrite: bool,
    },
    /// More bytes are needed (or the answer that decides a switch).
    Wait,
    /// The stream is refused here: the request's head if `in_head`, else its body.
    Refuse { refusal: Refusal, in_head: bool },
    /// Nothing more goes to hyper.
    Closed,
}

pub struct Framer {
    state: State,
    limits: Limits,
    lenient: Leniency,
    /// Protocol switches (WebSocket) are served on this connection.
    switching: bool,
    /// What follows the message being read.
    after: After,
    /// Bytes of the pending head already searched for its end.
    scanned: usize,
    /// Extension bytes seen in the current chunked body.
    extensions: usize,
    /// Heads passed so far: the index of the next request.
    seq: u32,
    /// The stream was refused within a body: hyper must see it end there.
    body_refused: bool,
    #[cfg(test)]
    pub log: Vec<tests::Message>,
}

impl Framer {
    pub fn new(limits: Limits, lenient: Leniency, switching: bool) -> Framer {
        Framer {
            state: State::Head,
            limits,
            lenient,
            switching,
            after: After::Next,
            scanned: 0,
            extensions: 0,
            seq: 0,
            body_refused: false,
            #[cfg(test)]
            log: Vec::new(),
        }
    }

    /// The index the next head will have.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Waiting for the head of a request (none has begun, or one is partly here).
    pub fn in_head(&self) -> bool {
        self.state == State::Head
    }

    /// What follows the message of the last head passed (`None` before any).
    pub fn after_last(&self) -> Option<After> {
        (self.seq > 0).then_some(self.after)
    }

    /// Within a request's body.
    pub fn mid_message(&self) -> bool {
        matches!(
            self.state,
            State::Body(_)
                | State::ChunkLine
                | State::ChunkData(_)
                | State::ChunkEnd
                | State::Trailers(_)
        )
    }

    pub fn awaiting_switch(&self) -> bool {
        self.state == State::AwaitSwitch
    }

    /// The answer to the request that could switch protocols came.
    pub fn switched(&mut self, switched: bool) {
        if self.state == State::AwaitSwitch {
            self.state = if switched { State::Tunnel } else { State::Head };
        }
    }

    /// Take one step over `data`, the bytes read and not yet passed (never empty).
    pub fn step(&mut self, data: &[u8]) -> Step {
        debug_assert!(!data.is_empty());
        match self.state {
            State::Head => self.head(data),
            State::Body(left) | State::ChunkData(left) => {
                let n = left.min(data.len() as u64);
                self.log_body(&data[..n as usize]);
                self.state = match (self.state, left - n) {
                    (State::Body(_), 0) => self.message_end(),
                    (State::Body(_), rest) => State::Body(rest),
                    (_, 0) => State::ChunkEnd,
                    (_, rest) => State::ChunkData(rest),
                };
                Step::Pass(n as usize)
            }
            State::ChunkLine => {
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    return if data.len() > chunked::MAX_LINE {
                        self.refuse_body(Refusal::bad("chunk size line is too long"))
                    } else {
                        Step::Wait
                    };
                };
                if nl + 1 > chunked::MAX_LINE {
                    return self.refuse_body(Refusal::bad("chunk size line is too long"));
                }
                match chunked::size_line(&data[..=nl]) {
                    Ok((size, ext)) => {
                        self.extensions += ext;
                        if self.extensions > chunked::MAX_EXTENSIONS {
                            return self
                                .refuse_body(Refusal::bad("too many chunk extension bytes"));
                        }
                        self.state = match size {
                            0 => State::Trailers(0),
                            n => State::ChunkData(n),
                        };
                        Step::Pass(nl + 1)
                    }
                    Err(r) => self.refuse_body(r),
                }
            }
            State::ChunkEnd => match data {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkLine;
                    Step::Pass(2)
                }
                [b'\r'] => Step::Wait,
                _ => self.refuse_body(Refusal::bad("chunk data not followed by CRLF")),
            },
            State::Trailers(seen) => {
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    return if seen + data.len() > chunked::MAX_TRAILERS {
                        self.refuse_body(chunked::trailers_too_large())
                    } else {
                        Step::Wait
                    };
                };
                let line = &data[..=nl];
                if line == b"\r\n" {
                    self.state = self.message_end();
                    return Step::Pass(2);
                }
                if seen + line.len() > chunked::MAX_TRAILERS {
                    return self.refuse_body(chunked::trailers_too_large());
                }
                match chunked::trailer(line) {
                    Ok(()) => {
                        self.state = State::Trailers(seen + line.len());
                        Step::Pass(line.len())
                    }
                    Err(r) => self.refuse_body(r),
                }
            }
            State::AwaitSwitch => Step::Wait,
            State::Tunnel => Step::Pass(data.len()),
            State::Closed => Step::Closed,
        }
    }

    fn head(&mut self, data: &[u8]) -> Step {
        let end = match head::find_end(data, self.scanned, &self.limits) {
            Ok(Some(end)) => end,
            Ok(None) => {
                self.scanned = data.len();
                return Step::Wait;
            }
            Err(r) => return self.refuse_head(r),
        };
        self.scanned = 0;
        let head = match head::parse(&data[..end], &self.limits, &self.lenient, self.switching) {
            Ok(h) => h,
            Err(r) => return self.refuse_head(r),
        };
        #[cfg(test)]
        self.log.push(tests::Message::of(&data[..end], &head));
        let Head {
            len,
            framing,
            after,
            target,
            target_fix,
            rewrite,
        } = head;
        self.seq += 1;
        self.after = after;
        self.extensions = 0;
        self.state = match framing {
            None => self.message_end(),
            Some(Framing::Length(n)) => State::Body(n),
            Some(Framing::Chunked) => State::ChunkLine,
        };
        if target_fix == Target::AsIs && !rewrite {
            Step::Pass(len)
        } else {
            Step::Head {
                len,
                fix: target_fix,
                target,
                rewrite,
            }
        }
    }

    /// The state after a whole message (head and body) has been read.
    fn message_end(&self) -> State {
        match self.after {
            After::Next => State::Head,
            After::Close => State::Closed,
            After::MaySwitch => State::AwaitSwitch,
        }
    }

    fn refuse_head(&mut self, refusal: Refusal) -> Step {
        self.state = State::Closed;
        Step::Refuse {
            refusal,
            in_head: true,
        }
    }

    fn refuse_body(&mut self, refusal: Refusal) -> Step {
        self.state = State::Closed;
        self.body_refused = true;
        Step::Refuse {
            refusal,
            in_head: false,
        }
    }

    #[cfg(test)]
    fn log_body(&mut self, data: &[u8]) {
        if let Some(m) = self.log.last_mut() {
            m.body.extend_from_slice(data);
        }
    }

    #[cfg(not(test))]
    fn log_body(&mut self, _: &[u8]) {}
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
pub(crate) mod tests;
