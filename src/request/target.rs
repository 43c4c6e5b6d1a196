//! The request target as the app sees it.

/// A request's target as the client sent it, when hyper got it altered
/// (see `crate::http::framing::head`): a request extension.
#[derive(Clone, Debug)]
pub struct RawTarget(pub bytes::Bytes);

impl RawTarget {
    /// The target without its fragment, split into path and query.
    pub fn path_and_query(&self) -> (&[u8], Option<&[u8]>) {
        let t = &self.0[..];
        let t = memchr::memchr(b'#', t).map_or(t, |h| &t[..h]);
        match memchr::memchr(b'?', t) {
            Some(q) => (&t[..q], Some(&t[q + 1..])),
            None => (t, None),
        }
    }

    pub fn as_str(&self) -> &str {
        // The framing authority passes printable ASCII targets only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The path with `%XX` escapes decoded (PATH_INFO, the ASGI `path`).
pub fn percent_decode(path: &str) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains('%') {
        return std::borrow::Cow::Borrowed(path.as_bytes());
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
