//! Response header fields an app sends again and again, parsed once.
//!
//! An app answers most requests with the same few fields (`Content-Type:
//! text/html; charset=utf-8`, a `Content-Length` of a page that does not
//! change). Parsing one means checking the name against the standard names,
//! checking every byte of the value and copying it into a new allocation —
//! which the I/O thread frees again after writing it. Each app thread keeps
//! the fields it parsed last; a field sent again is a clone of the kept
//! one (a reference count, no copy).

use http::{HeaderName, HeaderValue};
use std::cell::RefCell;

/// Longer fields are not kept: cookies and ETags seldom repeat.
const KEEP_UP_TO: usize = 64;
/// Fields kept per thread, most recently used first.
const KEPT: usize = 16;

struct Kept {
    /// The name's bytes followed by the value's, as the app sent them.
    text: Box<[u8]>,
    name_len: usize,
    field: (HeaderName, HeaderValue),
}

impl Kept {
    fn is(&self, name: &[u8], value: &[u8]) -> bool {
        self.name_len == name.len()
            && self.text.len() == name.len() + value.len()
            && self.text[..name.len()] == *name
            && self.text[name.len()..] == *value
    }
}

thread_local! {
    static RECENT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// The field for `name: value`: the kept one if this thread parsed the same
/// bytes lately, else `parse`'s (kept when it is valid and short).
pub fn field<E>(
    name: &[u8],
    value: &[u8],
    parse: impl FnOnce() -> Result<(HeaderName, HeaderValue), E>,
) -> Result<(HeaderName, HeaderValue), E> {
    if name.len() + value.len() > KEEP_UP_TO {
        return parse();
    }
    RECENT.with_borrow_mut(|recent| {
        if let Some(i) = recent.iter().position(|k| k.is(name, value)) {
            recent[..=i].rotate_right(1);
            return Ok(recent[0].field.clone());
        }
        let field = parse()?;
        recent.truncate(KEPT - 1);
        recent.insert(
            0,
            Kept {
                text: [name, value].concat().into_boxed_slice(),
                name_len: name.len(),
                field: field.clone(),
            },
        );
        Ok(field)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &[u8], value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
        field(name, value, || {
            Ok((
                HeaderName::from_bytes(name).map_err(|e| e.to_string())?,
                HeaderValue::from_bytes(value).map_err(|e| e.to_string())?,
            ))
        })
    }

    /// Each test starts with nothing kept, whichever thread runs it.
    fn fresh() {
        RECENT.with_borrow_mut(Vec::clear);
    }

    fn kept() -> Vec<String> {
        RECENT.with_borrow(|r| {
            r.iter()
                .map(|k| String::from_utf8_lossy(&k.text).into_owned())
                .collect()
        })
    }

    #[test]
    fn a_field_sent_again_is_the_kept_one() {
        fresh();
        let (n1, v1) = parse(b"Content-Type", b"text/plain").unwrap();
        let (n2, v2) = parse(b"Content-Type", b"text/plain").unwrap();
        assert_eq!((n1, &v1), (n2, &v2));
        assert_eq!(kept(), ["Content-Typetext/plain"]);
        // The same name with another value, or the value under another
        // name, is another field.
        let (_, v3) = parse(b"Content-Type", b"text/html").unwrap();
        assert_eq!(v3, "text/html");
        let (n4, _) = parse(b"X-Kind", b"text/plain").unwrap();
        assert_eq!(n4, "x-kind");
        assert_eq!(kept().len(), 3);
        // Bytes that split differently between name and value are not a hit.
        let (n5, v5) = parse(b"X-Kindt", b"ext/plain").unwrap();
        assert_eq!(
            (n5.as_str(), v5.to_str().unwrap()),
            ("x-kindt", "ext/plain")
        );
    }

    #[test]
    fn an_invalid_field_is_refused_every_time_and_never_kept() {
        fresh();
        assert!(parse(b"X-Bad", b"a\r\nb").is_err());
        assert!(parse(b"X-Bad", b"a\r\nb").is_err());
        assert!(parse(b"Bad Name", b"v").is_err());
        assert!(kept().is_empty());
    }

    #[test]
    fn few_and_short_fields_are_kept_the_last_used_first() {
        fresh();
        parse(b"Content-Type", b"text/plain").unwrap();
        for i in 0..40 {
            parse(b"Content-Length", i.to_string().as_bytes()).unwrap();
            // Used again between the others: it stays.
            parse(b"Content-Type", b"text/plain").unwrap();
        }
        let k = kept();
        assert_eq!(k.len(), KEPT);
        assert_eq!(k[0], "Content-Typetext/plain");
        assert_eq!(k[1], "Content-Length39");
        let long = "x".repeat(KEEP_UP_TO);
        parse(b"Set-Cookie", long.as_bytes()).unwrap();
        assert!(!kept().iter().any(|f| f.starts_with("Set-Cookie")));
    }
}
