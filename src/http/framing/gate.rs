//! Between the socket and hyper: the bytes read but not yet passed by the
//! framer, and what hyper reads instead of them.
//!
//! In the common case (a whole head, then body bytes) the framer passes what
//! was read where it lies, in hyper's own buffer, and nothing is copied.
//! Bytes it cannot pass yet (a head split across reads, a chunk-size line
//! cut short, everything after a request that may switch protocols) are
//! held here until it can.

use bytes::{Buf, Bytes, BytesMut};

use super::head::{After, Leniency, Limits, Target};
use super::{Framer, Refusal, Step};

/// What hyper parses in place of a refused head: a request the service
/// answers with the refusal's status (it knows it by its index), after
/// which the connection closes.
pub(super) const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";

/// What the connection's requests must learn about the stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Passed {
    /// Request `index` was refused: in its head (it is answered with the
    /// refusal) or in its body (its body read fails).
    Refused {
        index: u32,
        in_head: bool,
        refusal: Refusal,
    },
    /// Request `index`'s target as the client sent it (hyper got it altered).
    RawTarget { index: u32, target: Bytes },
    /// Whether the stream goes on as HTTP after request `index` depends on its answer.
    MaySwitch { index: u32 },
    /// Nothing is read after request `index`: its answer must close the
    /// connection (hyper would keep a CONNECT's or a gzip body's open).
    Closes { index: u32 },
}

pub struct Gate {
    pub(super) framer: Framer,
    /// Read, not yet passed.
    held: BytesMut,
    /// Passed (or standing in for a refused head), not yet read by hyper.
    ready: BytesMut,
    events: Vec<Passed>,
    /// The index of the last head whose sequel was announced.
    announced: Option<u32>,
}

impl Gate {
    pub fn new(limits: Limits, lenient: Leniency, switching: bool) -> Gate {
        Gate {
            framer: Framer::new(limits, lenient, switching),
            held: BytesMut::new(),
            ready: BytesMut::new(),
            events: Vec::new(),
            announced: None,
        }
    }

    /// Nothing is held or waiting to be read: new bytes can be checked where they lie.
    pub fn is_clear(&self) -> bool {
        self.held.is_empty() && self.ready.is_empty()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Give hyper what is ready, as much as `out` takes.
    pub fn take_ready(&mut self, out: &mut tokio::io::ReadBuf<'_>) {
        let n = self.ready.len().min(out.remaining());
        out.put_slice(&self.ready[..n]);
        self.ready.advance(n);
    }

    /// Nothing more will be passed.
    pub fn finished(&self) -> bool {
        self.ready.is_empty() && self.framer.state == super::State::Closed
    }

    /// hyper must see the stream end now: a body was refused mid-way.
    /// (After a refused head or a closing request hyper closes by itself
    /// once it has answered; an end it saw earlier would cut that answer off.)
    pub fn ends_now(&self) -> bool {
        self.finished() && self.framer.body_refused
    }

    /// A request head has begun arriving and is not complete.
    pub fn mid_head(&self) -> bool {
        self.framer.in_head() && !self.held.is_empty()
    }

    pub fn awaiting_switch(&self) -> bool {
        self.framer.awaiting_switch()
    }

    /// The answer that decides a switch came: `switched` or still HTTP.
    pub fn decide(&mut self, switched: bool) {
        self.framer.switched(switched);
        self.drain_held();
    }

    /// Refuse the head that is arriving (it took too long): hyper reads the
    /// stand-in, and the client gets the refusal's status.
    pub fn refuse_head(&mut self, refusal: Refusal) {
        self.held.clear();
        let step = self.framer.refuse_head(refusal);
        self.apply(step, &[]);
    }

    /// Refuse the body that is arriving (too slowly): hyper sees the stream
    /// end there, and the request's body read fails with the refusal.
    pub fn refuse_body(&mut self, refusal: Refusal) {
        self.held.clear();
        let step = self.framer.refuse_body(refusal);
        self.apply(step, &[]);
    }

    /// Within a request's body.
    pub fn mid_body(&self) -> bool {
        self.framer.mid_message()
    }

    /// What the requests must learn, since the last call.
    pub fn events(&mut self) -> Option<std::vec::Drain<'_, Passed>> {
        (!self.events.is_empty()).then(|| self.events.drain(..))
    }

    /// Check bytes just read where they lie (only when `is_clear`); returns
    /// how many of the first bytes pass as they are. The rest is held, or
    /// dropped after a refusal.
    pub fn pass_in_place(&mut self, data: &[u8]) -> usize {
        debug_assert!(self.is_clear());
        let mut at = 0;
        while at < data.len() {
            let step = self.framer.step(&data[at..]);
            self.announce();
            match step {
                Step::Pass(n) => at += n,
                step => {
                    let rest = &data[at..];
                    match self.apply(step, rest) {
                        Some(used) => {
                            self.held.extend_from_slice(&rest[used..]);
                            self.drain_held();
                        }
                        None if self.framer.state != super::State::Closed => {
                            self.held.extend_from_slice(rest);
                        }
                        None => {}
                    }
                    return at;
                }
            }
        }
        at
    }

    /// Bytes just read while others are held: they queue behind those.
    pub fn pass_held(&mut self, data: &[u8]) {
        self.held.extend_from_slice(data);
        self.drain_held();
    }

    fn drain_held(&mut self) {
        while !self.held.is_empty() {
            let step = self.framer.step(&self.held);
            self.announce();
            let held = std::mem::take(&mut self.held);
            let used = self.apply(step, &held);
            self.held = held;
            match used {
                Some(n) => self.held.advance(n),
                None => {
                    if self.framer.state == super::State::Closed {
                        self.held.clear();
                    }
                    return;
                }
            }
        }
    }

    /// Carry out a step over `data` by putting what hyper reads into
    /// `ready`; returns the bytes used, or `None` when nothing more passes now.
    fn apply(&mut self, step: Step, data: &[u8]) -> Option<usize> {
        match step {
            Step::Pass(n) => {
                self.ready.extend_from_slice(&data[..n]);
                Some(n)
            }
            Step::Head {
                len,
                fix,
                target,
                rewrite,
            } => {
                if rewrite {
                    let head = super::head::rewrite(&data[..len], &self.framer.lenient);
                    self.ready.extend_from_slice(&head);
                } else {
                    self.ready.extend_from_slice(&data[..len]);
                }
                if fix != Target::AsIs {
                    self.events.push(Passed::RawTarget {
                        index: self.framer.seq() - 1,
                        target: Bytes::copy_from_slice(&data[target]),
                    });
                }
                Some(len)
            }
            Step::Refuse { refusal, in_head } => {
                let index = if in_head {
                    self.ready.extend_from_slice(STAND_IN);
                    self.framer.seq()
                } else {
                    self.framer.seq() - 1
                };
                self.events.push(Passed::Refused {
                    index,
                    in_head,
                    refusal,
                });
                None
            }
            Step::Wait | Step::Closed => None,
        }
    }

    /// A head whose sequel the requests must know of was just passed: say
    /// so before hyper can see it.
    fn announce(&mut self) {
        let Some(after) = self.framer.after_last() else {
            return;
        };
        let index = self.framer.seq() - 1;
        if after == After::Next || self.announced == Some(index) {
            return;
        }
        self.announced = Some(index);
        self.events.push(match after {
            After::MaySwitch => Passed::MaySwitch { index },
            _ => Passed::Closes { index },
        });
    }
}
