//! One request head, checked whole before hyper may parse it: the request
//! line, every field line, and what they say about the body and about the
//! connection after it.
//!
//! The rules are gunicorn 27's (its `message.py`), so a request it refuses
//! never reaches an app here either, plus what hyper needs to parse the head
//! the same way (targets that `http::Uri` would refuse are escaped, not lost).

use http::StatusCode;
use std::ops::Range;

use super::Refusal;

/// gunicorn's request limits, resolved from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

impl Limits {
    /// The most a head may hold: gunicorn's `max_buffer_headers` plus the request line.
    pub fn max_head(&self) -> usize {
        self.request_line + 2 + self.fields * (self.field_size + 2) + 4
    }
}

/// How the body that follows a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// What the connection does once this request's message has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// The next request head follows.
    Next,
    /// Nothing more is read: HTTP/1.0 without keep-alive, `Connection:
    /// close`, a CONNECT, a transfer coding gunicorn closes after.
    Close,
    /// The answer decides: `101 Switching Protocols` makes the rest of the
    /// stream another protocol's; any other answer leaves it HTTP.
    MaySwitch,
}

/// What the request target needs before hyper sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// hyper keeps it as it is.
    AsIs,
    /// hyper drops its `#fragment`: the raw target is kept for `RAW_URI`.
    Keep,
    /// It holds bytes `http::Uri` refuses (`"`, `<`, `>`, `` ` ``) although
    /// they are printable ASCII, and gunicorn accepts them: hyper gets them
    /// percent-encoded, the app the raw target.
    Escape,
}

#[derive(Debug)]
pub struct Head {
    /// Bytes of the head, from its first (or its one leading empty line) to
    /// the end of the empty line that closes it.
    pub len: usize,
    pub framing: Option<Framing>,
    pub after: After,
    pub target: Range<usize>,
    pub target_fix: Target,
}

/// Find the end of a head in `buf`, whose first `scanned` bytes were searched
/// before. Refuses as soon as the bytes so far cannot start a valid head.
pub fn find_end(buf: &[u8], scanned: usize, limits: &Limits) -> Result<Option<usize>, Refusal> {
    let from = scanned.saturating_sub(3);
    for nl in memchr::memchr_iter(b'\n', &buf[from..]) {
        let nl = from + nl;
        if nl == 0 || buf[nl - 1] != b'\r' {
            return Err(Refusal::bad("bare LF as line terminator"));
        }
        if nl >= 3 && &buf[nl - 3..nl - 1] == b"\r\n" {
            if nl == 3 {
                // `\r\n\r\n` first: a second empty line before the request line.
                return Err(Refusal::bad(
                    "more than one empty line before the request line",
                ));
            }
            return Ok(Some(nl + 1));
        }
    }
    // A request line still unfinished past its limit will not get shorter.
    let line_start = usize::from(buf.starts_with(b"\r\n")) * 2;
    if memchr::memchr(b'\n', &buf[line_start..]).is_none()
        && buf.len() - line_start > limits.request_line + 1
    {
        return Err(request_line_too_large(buf.len() - line_start, limits));
    }
    if buf.len() > limits.max_head() {
        return Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "Request head is too large (over {} bytes)",
                limits.max_head()
            ),
        ));
    }
    Ok(None)
}

fn request_line_too_large(len: usize, limits: &Limits) -> Refusal {
    Refusal::new(
        StatusCode::URI_TOO_LONG,
        format!(
            "Request Line is too large ({len} > {})",
            limits.request_line
        ),
    )
}

/// Check the complete head `buf` (as found by `find_end`).
pub fn parse(buf: &[u8], limits: &Limits, switching: bool) -> Result<Head, Refusal> {
    // RFC 9112 §2.2: one empty line before the request line is ignored; two are not.
    let start = if buf.starts_with(b"\r\n") { 2 } else { 0 };
    let line_end = start + find_crlf(&buf[start..]).unwrap_or(buf.len() - start);
    let line = &buf[start..line_end];
    if line.is_empty() {
        return Err(Refusal::bad("empty request line"));
    }
    if line.len() > limits.request_line {
        return Err(request_line_too_large(line.len(), limits));
    }
    let (method, rest) = split_sp(line).ok_or_else(|| invalid_line(line))?;
    let (target, version) = split_sp(rest).ok_or_else(|| invalid_line(line))?;
    check_method(method)?;
    let target_fix = check_target(method, target, line)?;
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => {
            return Err(Refusal::bad(format!(
                "Invalid HTTP Version: {:?}",
                String::from_utf8_lossy(version)
            )));
        }
    };
    let target_start = start + method.len() + 1;

    let mut fields = Fields::default();
    let mut count = 0;
    let mut pos = line_end + 2;
    while pos < buf.len() - 2 {
        let end = pos + find_crlf(&buf[pos..]).expect("a head ends with CRLF CRLF");
        let field = &buf[pos..end];
        pos = end + 2;
        count += 1;
        if count > limits.fields {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Too many header fields (over {})", limits.fields),
            ));
        }
        if field.len() + 2 > limits.field_size {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "Header field is too large ({} > {})",
                    field.len() + 2,
                    limits.field_size
                ),
            ));
        }
        let (name, value) = split_field(field)?;
        fields.note(name, value)?;
    }

    let framing = fields.framing(http11)?;
    if let Some(expect) = fields.expect
        && http11
        && !expect.eq_ignore_ascii_case(b"100-continue")
    {
        return Err(Refusal::new(
            StatusCode::EXPECTATION_FAILED,
            format!("Unsupported Expect: {:?}", String::from_utf8_lossy(expect)),
        ));
    }
    let keep_alive = if fields.close {
        false
    } else {
        http11 || fields.keep_alive
    };
    let after = if method == b"CONNECT" || !keep_alive || fields.close_after_coding {
        After::Close
    } else if switching && fields.upgrade && http11 {
        After::MaySwitch
    } else {
        After::Next
    };
    Ok(Head {
        len: buf.len(),
        framing,
        after,
        target: target_start..target_start + target.len(),
        target_fix,
    })
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    // Every LF in a found head follows a CR (`find_end` checked).
    memchr::memchr(b'\n', buf).map(|nl| nl - 1)
}

fn split_sp(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = memchr::memchr(b' ', line)?;
    Some((&line[..sp], &line[sp + 1..]))
}

fn invalid_line(line: &[u8]) -> Refusal {
    Refusal::bad(format!(
        "Invalid HTTP request line: {:?}",
        String::from_utf8_lossy(line)
    ))
}

/// gunicorn's default: a token of 3 to 20 characters, no lowercase letters
/// and no `#` (every registered method passes; `get` and typos do not).
fn check_method(method: &[u8]) -> Result<(), Refusal> {
    let ok = (3..=20).contains(&method.len())
        && method
            .iter()
            .all(|&b| is_token(b) && !b.is_ascii_lowercase() && b != b'#');
    if ok {
        Ok(())
    } else {
        Err(Refusal::bad(format!(
            "Invalid HTTP method: {:?}",
            String::from_utf8_lossy(method)
        )))
    }
}

fn check_target(method: &[u8], target: &[u8], line: &[u8]) -> Result<Target, Refusal> {
    let mut fix = Target::AsIs;
    for &b in target {
        match b {
            b'"' | b'<' | b'>' | b'`' => fix = Target::Escape,
            b'#' if fix == Target::AsIs => fix = Target::Keep,
            0x21..=0x7e => {}
            _ => return Err(invalid_line(line)),
        }
    }
    let origin = target.first() == Some(&b'/');
    let form_ok = match target {
        [] => false,
        b"*" => method == b"OPTIONS",
        _ if method == b"CONNECT" => true,
        _ => origin || memchr::memmem::find(target, b"://").is_some(),
    };
    if !form_ok {
        return Err(invalid_line(line));
    }
    // An origin-form target is one hyper parses whatever its printable bytes
    // (once escaped); any other form must be a URI `http` can parse too, or
    // hyper would refuse what was let through.
    if !origin && target != b"*" && http::Uri::try_from(&escape_target(target)[..]).is_err() {
        return Err(invalid_line(line));
    }
    Ok(fix)
}

/// The target with the bytes `http::Uri` refuses percent-encoded.
pub fn escape_target(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 8);
    for &b in target {
        match b {
            b'"' | b'<' | b'>' | b'`' => {
                out.push(b'%');
                out.push(b"0123456789ABCDEF"[usize::from(b >> 4)]);
                out.push(b"0123456789ABCDEF"[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out
}

/// Split a field line into its name and its value without surrounding
/// white space, refusing what RFC 9110 §5 does not allow.
pub fn split_field(field: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if matches!(field.first(), Some(b' ' | b'\t')) {
        return Err(Refusal::bad("obsolete line folding in a header field"));
    }
    let colon = memchr::memchr(b':', field).unwrap_or(0);
    let name = &field[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(Refusal::bad(format!(
            "Invalid header name: {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    let value = trim_ows(&field[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Refusal::bad(format!(
            "Invalid header value in {}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok((name, value))
}

/// Without the optional white space (SP, HTAB) around a value or a list member.
pub fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 9110 §5.6.2 `tchar`.
pub fn is_token(b: u8) -> bool {
    static TOKEN: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            t[i] = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                );
            i += 1;
        }
        t
    };
    TOKEN[usize::from(b)]
}

/// What a head's fields say, gathered in one pass.
#[derive(Default)]
struct Fields<'a> {
    content_length: Option<&'a [u8]>,
    /// Transfer-Encoding: seen, and where chunked stands in its list.
    te: bool,
    chunked: bool,
    close_after_coding: bool,
    host: bool,
    content_type: bool,
    expect: Option<&'a [u8]>,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl<'a> Fields<'a> {
    fn note(&mut self, name: &[u8], value: &'a [u8]) -> Result<(), Refusal> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            4 if is("host") => once(&mut self.host, "Host")?,
            6 if is("expect") => self.expect = Some(value),
            7 if is("upgrade") => self.upgrade = true,
            10 if is("connection") => {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    }
                }
            }
            12 if is("content-type") => once(&mut self.content_type, "Content-Type")?,
            14 if is("content-length") && self.content_length.replace(value).is_some() => {
                return Err(Refusal::bad("duplicate Content-Length header"));
            }
            17 if is("transfer-encoding") => self.codings(value)?,
            _ => {}
        }
        Ok(())
    }

    /// gunicorn's reading of a Transfer-Encoding list: chunked once and last,
    /// identity and the compressions before it, nothing else.
    fn codings(&mut self, value: &[u8]) -> Result<(), Refusal> {
        self.te = true;
        for coding in value.split(|&b| b == b',').map(trim_ows) {
            let stacked = || Refusal::bad("Transfer-Encoding: chunked is not the last coding");
            if coding.eq_ignore_ascii_case(b"chunked") {
                if self.chunked {
                    return Err(stacked());
                }
                self.chunked = true;
            } else if coding.eq_ignore_ascii_case(b"identity") {
                if self.chunked {
                    return Err(stacked());
                }
            } else if [&b"gzip"[..], b"deflate", b"compress"]
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c))
            {
                if self.chunked {
                    return Err(stacked());
                }
                self.close_after_coding = true;
            } else {
                return Err(Refusal::new(
                    StatusCode::NOT_IMPLEMENTED,
                    format!(
                        "Unsupported transfer coding: {:?}",
                        String::from_utf8_lossy(coding)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn framing(&self, http11: bool) -> Result<Option<Framing>, Refusal> {
        if self.te {
            if !self.chunked {
                return Err(Refusal::bad("Transfer-Encoding does not end with chunked"));
            }
            if !http11 {
                return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if self.content_length.is_some() {
                return Err(Refusal::bad(
                    "Content-Length and Transfer-Encoding in one request",
                ));
            }
            return Ok(Some(Framing::Chunked));
        }
        let Some(cl) = self.content_length else {
            return Ok(None);
        };
        let n = (!cl.is_empty() && cl.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(cl).ok()?.parse::<u64>().ok())
            .flatten()
            // Far beyond any body, and short of hyper's own ceiling.
            .filter(|&n| n < 1 << 62)
            .ok_or_else(|| {
                Refusal::bad(format!(
                    "Invalid Content-Length: {:?}",
                    String::from_utf8_lossy(cl)
                ))
            })?;
        Ok((n > 0).then_some(Framing::Length(n)))
    }
}

/// RFC 9110 §5.3: a field that holds one value cannot come twice.
fn once(seen: &mut bool, name: &str) -> Result<(), Refusal> {
    if std::mem::replace(seen, true) {
        Err(Refusal::bad(format!("duplicate {name} header")))
    } else {
        Ok(())
    }
}
