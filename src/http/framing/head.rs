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
        self.fields
            .saturating_mul(self.field_size.saturating_add(2))
            .saturating_add(self.request_line + 6)
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
    /// hyper must get the head as `rewrite` makes it.
    pub rewrite: bool,
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

/// gunicorn's settings that relax its default rules (and `header_map`, which
/// can tighten them), with gunicorn's names.
#[derive(Clone, Copy, Debug, Default)]
pub struct Leniency {
    /// `permit_obsolete_folding`: a field may continue on lines that start
    /// with white space; hyper gets the lines joined with a space.
    pub obs_fold: bool,
    /// `permit_unconventional_http_method`: any token is a method.
    pub unconventional_method: bool,
    /// `casefold_http_method`: the method is uppercased.
    pub casefold_method: bool,
    /// `strip_header_spaces`: white space before a field's colon is dropped.
    pub strip_header_spaces: bool,
    /// `header_map = "refuse"`: a field name with an underscore is refused.
    pub refuse_underscores: bool,
}

/// Check the complete head `buf` (as found by `find_end`).
pub fn parse(
    buf: &[u8],
    limits: &Limits,
    lenient: &Leniency,
    switching: bool,
) -> Result<Head, Refusal> {
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
    check_method(method, lenient)?;
    let is_method = |m: &[u8]| {
        if lenient.casefold_method {
            method.eq_ignore_ascii_case(m)
        } else {
            method == m
        }
    };
    let connect = is_method(b"CONNECT");
    let target_fix = check_target(is_method(b"OPTIONS"), connect, target, line)?;
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
    let mut rewrite = target_fix == Target::Escape
        || lenient.casefold_method && method.iter().any(u8::is_ascii_lowercase);

    let mut fields = Fields::default();
    let mut count = 0;
    let mut lines = FieldLines::new(buf, line_end + 2);
    while let Some(field) = lines.next() {
        count += 1;
        if count > limits.fields {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Too many header fields (over {})", limits.fields),
            ));
        }
        let (name, value) = split_field(field, lenient.strip_header_spaces)?;
        // White space stripped before the colon: hyper must not see it.
        rewrite |= field.get(name.len()) != Some(&b':');
        // Continuation lines (obs-fold), where they are allowed, join the value.
        let mut size = field.len() + 2;
        let mut joined: Option<Vec<u8>> = None;
        while lenient.obs_fold && lines.continues() {
            let more = lines.next().expect("a continuation line");
            size += more.len() + 2;
            let more = trim_ows(more);
            if has_ctl(more) {
                return Err(invalid_value(name));
            }
            let j = joined.get_or_insert_with(|| value.to_vec());
            j.push(b' ');
            j.extend_from_slice(more);
            rewrite = true;
        }
        if size > limits.field_size {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Header field is too large ({size} > {})", limits.field_size),
            ));
        }
        if lenient.refuse_underscores && name.contains(&b'_') {
            return Err(Refusal::bad(format!(
                "Invalid header name (underscore, --header-map refuse): {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        fields.note(name, joined.as_deref().unwrap_or(value))?;
    }

    let framing = fields.framing(http11)?;
    if let Some(refusal) = fields.expect {
        return Err(refusal);
    }
    let keep_alive = if fields.close {
        false
    } else {
        http11 || fields.keep_alive
    };
    let after = if connect || !keep_alive || fields.close_after_coding {
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
        rewrite,
    })
}

/// The field lines of a head, from `pos` to the empty line that ends it.
struct FieldLines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldLines<'a> {
    fn new(buf: &'a [u8], pos: usize) -> FieldLines<'a> {
        FieldLines { buf, pos }
    }

    /// The next line starts with white space: it continues the last field.
    fn continues(&self) -> bool {
        self.pos < self.buf.len() - 2 && matches!(self.buf[self.pos], b' ' | b'\t')
    }
}

impl<'a> Iterator for FieldLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.buf.len() - 2 {
            return None;
        }
        let end = self.pos + find_crlf(&self.buf[self.pos..]).expect("a head ends with CRLF CRLF");
        let line = &self.buf[self.pos..end];
        self.pos = end + 2;
        Some(line)
    }
}

/// The head as hyper must get it when `Head::rewrite`: the method
/// uppercased, the target escaped, names without white space before their
/// colon, folded values on one line.
pub fn rewrite(buf: &[u8], lenient: &Leniency) -> Vec<u8> {
    let start = if buf.starts_with(b"\r\n") { 2 } else { 0 };
    let line_end = start + find_crlf(&buf[start..]).expect("a request line");
    let line = &buf[start..line_end];
    let (method, rest) = split_sp(line).expect("a checked request line");
    let (target, version) = split_sp(rest).expect("a checked request line");
    let mut out = Vec::with_capacity(buf.len() + 16);
    if lenient.casefold_method {
        out.extend(method.iter().map(u8::to_ascii_uppercase));
    } else {
        out.extend_from_slice(method);
    }
    out.push(b' ');
    out.extend_from_slice(&escape_target(target));
    out.push(b' ');
    out.extend_from_slice(version);
    let mut lines = FieldLines::new(buf, line_end + 2);
    while let Some(field) = lines.next() {
        let Ok((name, value)) = split_field(field, lenient.strip_header_spaces) else {
            continue;
        };
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        while lenient.obs_fold && lines.continues() {
            out.push(b' ');
            out.extend_from_slice(trim_ows(lines.next().expect("a continuation line")));
        }
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

fn has_ctl(value: &[u8]) -> bool {
    value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

fn invalid_value(name: &[u8]) -> Refusal {
    Refusal::bad(format!(
        "Invalid header value in {}",
        String::from_utf8_lossy(name)
    ))
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
fn check_method(method: &[u8], lenient: &Leniency) -> Result<(), Refusal> {
    let conventional = || {
        (3..=20).contains(&method.len())
            && !method.iter().any(|&b| b.is_ascii_lowercase() || b == b'#')
    };
    let ok = !method.is_empty()
        && method.iter().all(|&b| is_token(b))
        && (lenient.unconventional_method || conventional());
    if ok {
        Ok(())
    } else {
        Err(Refusal::bad(format!(
            "Invalid HTTP method: {:?}",
            String::from_utf8_lossy(method)
        )))
    }
}

fn check_target(
    options: bool,
    connect: bool,
    target: &[u8],
    line: &[u8],
) -> Result<Target, Refusal> {
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
        b"*" => options,
        _ if connect => true,
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
pub fn split_field(field: &[u8], strip_spaces: bool) -> Result<(&[u8], &[u8]), Refusal> {
    if matches!(field.first(), Some(b' ' | b'\t')) {
        return Err(Refusal::bad("obsolete line folding in a header field"));
    }
    let colon = memchr::memchr(b':', field).unwrap_or(0);
    let name = if strip_spaces {
        trim_ows(&field[..colon])
    } else {
        &field[..colon]
    };
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(Refusal::bad(format!(
            "Invalid header name: {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    let value = trim_ows(&field[colon + 1..]);
    if has_ctl(value) {
        return Err(invalid_value(name));
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
struct Fields {
    /// Content-Length: its value, or why it is not one.
    content_length: Option<Result<u64, Refusal>>,
    /// Transfer-Encoding: seen, and where chunked stands in its list.
    te: bool,
    chunked: bool,
    close_after_coding: bool,
    host: bool,
    content_type: bool,
    /// An expectation that cannot be met (gunicorn: 417).
    expect: Option<Refusal>,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl Fields {
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<(), Refusal> {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            4 if is("host") => once(&mut self.host, "Host")?,
            6 if is("expect") && !value.eq_ignore_ascii_case(b"100-continue") => {
                self.expect = Some(Refusal::new(
                    StatusCode::EXPECTATION_FAILED,
                    format!("Unsupported Expect: {:?}", String::from_utf8_lossy(value)),
                ));
            }
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
            14 if is("content-length") => {
                if self.content_length.is_some() {
                    return Err(Refusal::bad("duplicate Content-Length header"));
                }
                self.content_length = Some(content_length(value));
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
        match &self.content_length {
            None => Ok(None),
            Some(Ok(n)) => Ok((*n > 0).then_some(Framing::Length(*n))),
            Some(Err(r)) => Err(r.clone()),
        }
    }
}

/// A Content-Length value: digits only (no sign, list or white space).
fn content_length(cl: &[u8]) -> Result<u64, Refusal> {
    (!cl.is_empty() && cl.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(cl).ok()?.parse::<u64>().ok())
        .flatten()
        // Far beyond any body, and short of hyper's own ceiling.
        .filter(|&n| n < 1 << 62)
        .ok_or_else(|| {
            Refusal::bad(format!(
                "Invalid Content-Length: {:?}",
                String::from_utf8_lossy(cl)
            ))
        })
}

/// RFC 9110 §5.3: a field that holds one value cannot come twice.
fn once(seen: &mut bool, name: &str) -> Result<(), Refusal> {
    if std::mem::replace(seen, true) {
        Err(Refusal::bad(format!("duplicate {name} header")))
    } else {
        Ok(())
    }
}
