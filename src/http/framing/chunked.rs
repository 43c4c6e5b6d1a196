//! The lines of a chunked body (RFC 9112 §7.1): chunk-size lines with their
//! extensions, and trailer fields. Each is checked whole, as gunicorn 27's
//! `ChunkedReader` does.

use http::StatusCode;

use super::Refusal;
use super::head::{is_token, split_field};

/// The longest chunk-size line, extensions included (gunicorn's limit).
pub const MAX_LINE: usize = 8190;
/// Extension bytes in one body: hyper refuses a body past 16 KiB of them,
/// so they are refused here first.
pub const MAX_EXTENSIONS: usize = 8 * 1024;
/// Trailer section bytes: hyper refuses past 16 KiB.
pub const MAX_TRAILERS: usize = 8 * 1024;

/// A chunk-size line (`line` ends at its LF): the size, and how many
/// extension bytes it carried.
pub fn size_line(line: &[u8]) -> Result<(u64, usize), Refusal> {
    let Some(content) = line.strip_suffix(b"\r\n") else {
        return Err(Refusal::bad("bare LF as line terminator in a chunked body"));
    };
    let (size, ext) = match memchr::memchr(b';', content) {
        // RFC 9112 §7.1.1: white space before an extension, and only there.
        Some(semi) => (trim_ows_end(&content[..semi]), &content[semi..]),
        None => (content, &b""[..]),
    };
    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(Refusal::bad(format!(
            "Invalid chunk size: {:?}",
            String::from_utf8_lossy(size)
        )));
    }
    let n = size
        .iter()
        .try_fold(0u64, |n, &d| {
            let digit = (d as char).to_digit(16).expect("checked hex") as u64;
            n.checked_mul(16)?.checked_add(digit)
        })
        .ok_or_else(|| Refusal::bad("chunk size overflows"))?;
    if !extensions(ext) {
        return Err(Refusal::bad(format!(
            "Invalid chunk extension: {:?}",
            String::from_utf8_lossy(ext)
        )));
    }
    Ok((n, ext.len()))
}

fn trim_ows_end(mut v: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`
fn extensions(mut s: &[u8]) -> bool {
    fn ows(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> Option<&[u8]> {
        let n = s.iter().take_while(|&&b| is_token(b)).count();
        (n > 0).then(|| &s[n..])
    }
    fn quoted(s: &[u8]) -> Option<&[u8]> {
        let mut i = 1;
        loop {
            match *s.get(i)? {
                b'"' => return Some(&s[i + 1..]),
                b'\\' => match *s.get(i + 1)? {
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => i += 2,
                    _ => return None,
                },
                b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => i += 1,
                _ => return None,
            }
        }
    }
    loop {
        s = ows(s);
        if s.is_empty() {
            return true;
        }
        let Some(rest) = s.strip_prefix(b";") else {
            return false;
        };
        let Some(rest) = token(ows(rest)) else {
            return false;
        };
        s = rest;
        let after = ows(s);
        if let Some(value) = after.strip_prefix(b"=") {
            let value = ows(value);
            s = match value.first() {
                Some(b'"') => match quoted(value) {
                    Some(rest) => rest,
                    None => return false,
                },
                _ => match token(value) {
                    Some(rest) => rest,
                    None => return false,
                },
            };
        }
    }
}

/// One trailer field line (`line` ends at its LF, and is not the empty line).
pub fn trailer(line: &[u8]) -> Result<(), Refusal> {
    let Some(field) = line.strip_suffix(b"\r\n") else {
        return Err(Refusal::bad("bare LF as line terminator in trailers"));
    };
    // Kept strict whatever the settings: hyper parses trailers as they come.
    let (name, _) = split_field(field, false)?;
    // RFC 9110 §6.5.1: fields that frame, route or authenticate a message
    // cannot arrive after it (gunicorn's list).
    const FORBIDDEN: [&str; 6] = [
        "host",
        "content-length",
        "transfer-encoding",
        "trailer",
        "authorization",
        "te",
    ];
    if FORBIDDEN
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
    {
        return Err(Refusal::bad(format!(
            "{} is not allowed in trailers",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// The trailer section grew past what is allowed.
pub fn trailers_too_large() -> Refusal {
    Refusal::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "trailer section is too large",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_extensions() {
        assert_eq!(size_line(b"5\r\n").unwrap(), (5, 0));
        assert_eq!(size_line(b"0005\r\n").unwrap().0, 5);
        assert_eq!(size_line(b"A\r\n").unwrap().0, 10);
        assert_eq!(size_line(b"000000000000000005\r\n").unwrap().0, 5);
        assert_eq!(size_line(b"5; some; parameters=stuff\r\n").unwrap().0, 5);
        assert_eq!(size_line(b"5 ;foo=\"bar baz\"\r\n").unwrap().0, 5);
        for bad in [
            &b"0 \r\n"[..],
            b" 0\r\n",
            b"\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"6_0\r\n",
            b"5\n",
            b"5;ext=val\rue\r\n",
            b"5;a\x00\r\n",
            b"5;\r\n",
            b"5;a=\"open\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                size_line(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trailers() {
        assert!(trailer(b"Vary: *\r\n").is_ok());
        assert!(trailer(b"Content-Length: 99\r\n").is_err());
        assert!(trailer(b"HOST: evil\r\n").is_err());
        assert!(trailer(b"Transfer-Encoding: chunked\r\n").is_err());
        assert!(trailer(b"X: a\n").is_err());
        assert!(trailer(b" folded\r\n").is_err());
    }
}
