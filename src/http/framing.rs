//! Request-smuggling checks hyper does not make.
//!
//! hyper follows RFC 9112 §6.3 leniently: with both Content-Length and
//! Transfer-Encoding it drops Content-Length (and closes afterwards), and it
//! merges duplicate equal Content-Length headers — in both cases the request
//! reaches us without a trace of the conflict. gunicorn (since 22.0) refuses
//! both with 400, and so do we: this scanner sees the bytes before hyper does,
//! follows message framing to find each request head, and records the first
//! head that is ambiguous. The service then answers that request with 400.

use memchr::memmem;
use std::sync::LazyLock;

/// Why a request head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    ContentLengthWithTransferEncoding = 1,
    DuplicateContentLength = 2,
}

impl Violation {
    pub fn message(self) -> &'static str {
        match self {
            Violation::ContentLengthWithTransferEncoding => {
                "Content-Length and Transfer-Encoding in one request"
            }
            Violation::DuplicateContentLength => "duplicate Content-Length header",
        }
    }

    pub fn from_code(code: u8) -> Option<Violation> {
        match code {
            1 => Some(Violation::ContentLengthWithTransferEncoding),
            2 => Some(Violation::DuplicateContentLength),
            _ => None,
        }
    }
}

enum State {
    Head,
    Body(u64),
    ChunkSize {
        size: u64,
        digits: u8,
        ext: bool,
    },
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers {
        line_len: usize,
    },
    /// Framing is unknown from here on (a refusal, an upgrade, a parse error
    /// that hyper answers itself): stop looking.
    Off,
}

impl State {
    fn chunk_size() -> State {
        State::ChunkSize {
            size: 0,
            digits: 0,
            ext: false,
        }
    }
}

pub struct FramingScanner {
    state: State,
    /// A head split across reads.
    pending: Vec<u8>,
    /// Index of the next request head on this connection.
    seq: u32,
    max_headers: usize,
    /// A head grew past `MAX_HEAD` unfinished: still a head to time out.
    oversized: bool,
}

/// Heads larger than this are hyper's to refuse (431); we stop following.
const MAX_HEAD: usize = 256 * 1024;

impl FramingScanner {
    pub fn new(max_headers: usize) -> FramingScanner {
        FramingScanner {
            state: State::Head,
            pending: Vec::new(),
            seq: 0,
            max_headers: max_headers.clamp(1, 32768),
            oversized: false,
        }
    }

    /// A request head has begun arriving and has not ended yet.
    pub fn mid_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.pending.is_empty() || self.oversized
    }

    /// Feed bytes as they are read; returns the index of a refused request head.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<(u32, Violation)> {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return None,
                State::Head => {
                    let (head, used) = if self.pending.is_empty() {
                        match find_head_end(data) {
                            Some(end) => (&data[..end + 4], end + 4),
                            None => {
                                self.pending.extend_from_slice(data);
                                return None;
                            }
                        }
                    } else {
                        let start = self.pending.len().saturating_sub(3);
                        self.pending.extend_from_slice(data);
                        match find_head_end(&self.pending[start..]) {
                            Some(end) => {
                                let total = start + end + 4;
                                let used = total - (self.pending.len() - data.len());
                                self.pending.truncate(total);
                                let head = std::mem::take(&mut self.pending);
                                let verdict = self.on_head(&head);
                                data = &data[used..];
                                if let Some(v) = verdict {
                                    return Some(v);
                                }
                                continue;
                            }
                            None => {
                                if self.pending.len() > MAX_HEAD {
                                    self.state = State::Off;
                                    self.oversized = true;
                                }
                                return None;
                            }
                        }
                    };
                    let verdict = self.on_head(head);
                    data = &data[used..];
                    if verdict.is_some() {
                        return verdict;
                    }
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkSize { size, digits, ext } => {
                    // Parsed as it streams by: no buffer, no allocation per chunk.
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' => {
                            self.state = match (*digits, *size) {
                                (0, _) => State::Off,
                                (_, 0) => State::Trailers { line_len: 0 },
                                (_, n) => State::ChunkData(n),
                            };
                        }
                        _ if *ext => {}
                        b';' => *ext = true,
                        b'\r' | b' ' | b'\t' => {}
                        _ => match (b as char).to_digit(16) {
                            Some(v) if *digits < 16 => {
                                *size = *size << 4 | u64::from(v);
                                *digits += 1;
                            }
                            // Not a chunk size hyper would accept: it refuses the body itself.
                            _ => self.state = State::Off,
                        },
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    let n = (*left as usize).min(data.len());
                    *left -= n as u8;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = State::chunk_size();
                    }
                }
                State::Trailers { line_len } => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' if *line_len == 0 => self.state = State::Head,
                        b'\n' => *line_len = 0,
                        b'\r' => {}
                        _ => *line_len += 1,
                    }
                }
            }
        }
        None
    }

    fn on_head(&mut self, head: &[u8]) -> Option<(u32, Violation)> {
        let seq = self.seq;
        self.seq += 1;
        if !names_framing(head) {
            // Most heads (a GET with no body): nothing to check, no second parse.
            self.state = State::Head;
            return None;
        }
        // Most heads fit a small stack array; only long ones pay for a heap one
        // (uninitialised: zeroing 1 KB per request showed up in profiles.)
        let mut small = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 32];
        let mut large;
        let mut req = httparse::Request::new(&mut []);
        let mut parsed = req.parse_with_uninit_headers(head, &mut small);
        if matches!(parsed, Err(httparse::Error::TooManyHeaders)) {
            large = vec![httparse::EMPTY_HEADER; self.max_headers + 1];
            req = httparse::Request::new(&mut large);
            parsed = req.parse(head);
        }
        if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
            // hyper refuses it (400/431) and closes the connection.
            self.state = State::Off;
            return None;
        }
        let mut content_lengths = 0;
        let mut length = None;
        let mut te = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                content_lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            }
        }
        let violation = if te.is_some() && content_lengths > 0 {
            Some(Violation::ContentLengthWithTransferEncoding)
        } else if content_lengths > 1 {
            Some(Violation::DuplicateContentLength)
        } else {
            None
        };
        if let Some(v) = violation {
            self.state = State::Off;
            return Some((seq, v));
        }
        let upgrade = req.method == Some("CONNECT")
            || req
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        self.state = if upgrade {
            State::Off
        } else if let Some(te) = te {
            if is_chunked(te) {
                State::chunk_size()
            } else {
                State::Off
            }
        } else if content_lengths == 0 {
            State::Head
        } else {
            match length {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Off,
            }
        };
        None
    }
}

fn is_chunked(te: &[u8]) -> bool {
    te.rsplit(|&b| b == b',')
        .next()
        .map(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .unwrap_or(false)
}

/// Where the blank line that ends a head starts (`\r\n\r\n`).
fn find_head_end(hay: &[u8]) -> Option<usize> {
    // `memmem::find` builds its searcher on every call, which cost more than
    // the search itself on a short head (callgrind: ~450 instructions a head).
    static BLANK_LINE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\r\n\r\n"));
    BLANK_LINE.find(hay)
}

/// Whether a head may say anything about framing: a CONNECT, or a line that
/// names Content-Length, Transfer-Encoding or Upgrade. Only those heads are
/// parsed; for the others the next head starts right after this one. (A head
/// malformed in a way this misses — say, a space before the colon — is
/// refused by hyper, which then closes the connection: there is no next head
/// to find.)
fn names_framing(head: &[u8]) -> bool {
    const NAMES: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
    head.starts_with(b"CONNECT ")
        || memchr::memchr_iter(b'\n', head).any(|nl| {
            let line = &head[nl + 1..];
            NAMES.iter().any(|name| {
                line.get(name.len()) == Some(&b':') && line[..name.len()].eq_ignore_ascii_case(name)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> Option<(u32, Violation)> {
        let mut s = FramingScanner::new(100);
        pieces.iter().find_map(|p| s.feed(p))
    }

    #[test]
    fn a_head_is_mid_way_only_between_its_first_and_last_byte() {
        let mut s = FramingScanner::new(100);
        assert!(!s.mid_head());
        s.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(!s.mid_head(), "a whole head in one read");
        s.feed(b"POST / HTTP/1.1\r\nContent-Len");
        assert!(s.mid_head());
        s.feed(b"gth: 4\r\n\r\n");
        assert!(!s.mid_head(), "in the body");
        s.feed(b"abcdGET /");
        assert!(s.mid_head(), "the next head began");
        let mut big = FramingScanner::new(100);
        big.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..(MAX_HEAD / 1000 + 1) {
            big.feed(&[b'a'; 1000]);
        }
        assert!(big.mid_head(), "too big to follow, still unfinished");
    }

    #[test]
    fn clean_requests_pass() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]), None);
        assert_eq!(
            scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"]),
            None
        );
    }

    #[test]
    fn conflicts_are_found_with_their_request_index() {
        let cl_te =
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            scan(&[cl_te]),
            Some((0, Violation::ContentLengthWithTransferEncoding))
        );
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(scan(&[dup]), Some((0, Violation::DuplicateContentLength)));
        // The second request on a keep-alive connection, after a chunked body with a trailer.
        let mut two = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n".to_vec();
        two.extend_from_slice(dup);
        assert_eq!(scan(&[&two]), Some((1, Violation::DuplicateContentLength)));
    }

    #[test]
    fn heads_with_many_headers_are_still_checked() {
        let mut head = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(scan(&[&head]), Some((0, Violation::DuplicateContentLength)));
    }

    #[test]
    fn only_heads_naming_framing_are_parsed() {
        assert!(!names_framing(
            b"GET /content-length HTTP/1.1\r\nHost: upgrade\r\nX-Transfer-Encoding: x\r\n\r\n"
        ));
        assert!(names_framing(
            b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh: 3\r\n\r\n"
        ));
        assert!(names_framing(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(names_framing(
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(names_framing(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"));
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"),
            Some(20)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\n\r\n"), None);
    }

    #[test]
    fn byte_by_byte_feeding_finds_the_same() {
        let mut two = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n\r\n\r\n".to_vec();
        two.extend_from_slice(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        );
        let pieces: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(
            scan(&pieces),
            Some((1, Violation::ContentLengthWithTransferEncoding))
        );
    }
}
