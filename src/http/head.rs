//! A request head that owns its bytes.
//!
//! hyper parses a head in place: the request target and every header value
//! are slices of the connection's read buffer (8 KB). While any of them is
//! alive that buffer cannot be reused, and hyper reserves room for the
//! connection's next read as soon as it has handed the request over — long
//! before an app thread is done with it. So every request used to cost a
//! fresh 8 KB allocation on the I/O thread, freed later on an app thread.
//! Copying the few bytes a head holds into one small buffer of its own,
//! before hyper reads again, lets hyper reuse its buffer in place.

use bytes::BytesMut;
use http::{HeaderValue, Request, Uri};

/// Give `req`'s head its own copy of the bytes it borrows from hyper's read buffer.
pub fn detach<B>(req: &mut Request<B>) {
    let target = borrowed_target(req.uri());
    let target_len = target.map(str::len);
    let values_len: usize = req.headers().values().map(|v| v.len()).sum();
    if target_len.is_none() && values_len == 0 {
        return;
    }
    let mut buf = BytesMut::with_capacity(target_len.unwrap_or(0) + values_len);
    if let Some(t) = target {
        buf.extend_from_slice(t.as_bytes());
    }
    for v in req.headers().values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let mut own = buf.freeze();
    if let Some(n) = target_len {
        // Cannot fail: the same text parsed a moment ago.
        if let Ok(uri) = Uri::from_maybe_shared(own.split_to(n)) {
            *req.uri_mut() = uri;
        }
    }
    for v in req.headers_mut().values_mut() {
        let n = v.len();
        // Cannot fail: hyper accepted these bytes as a header value.
        if let Ok(copy) = HeaderValue::from_maybe_shared(own.split_to(n)) {
            *v = copy;
        }
    }
}

/// The request target's text when it is a slice of hyper's buffer: an
/// origin-form target other than `/` and `*` (which `http` keeps as static
/// strings), or a CONNECT's authority. An absolute-form target (a request
/// meant for a proxy) stays where it is: `http` cannot give its text back
/// without formatting it, and such requests are rare enough to keep the
/// buffer they came in.
fn borrowed_target(uri: &Uri) -> Option<&str> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) if pq.as_str().len() > 1 => Some(pq.as_str()),
        (None, Some(a), _) => Some(a.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A request whose target and header values are slices of `buffer`, as
    /// hyper builds them.
    fn parsed(
        buffer: &Bytes,
        target: std::ops::Range<usize>,
        values: &[(&str, std::ops::Range<usize>)],
    ) -> Request<()> {
        let mut b = Request::builder().uri(Uri::from_maybe_shared(buffer.slice(target)).unwrap());
        for (name, r) in values {
            b = b.header(
                *name,
                HeaderValue::from_maybe_shared(buffer.slice(r.clone())).unwrap(),
            );
        }
        b.body(()).unwrap()
    }

    #[test]
    fn a_detached_head_lets_go_of_the_read_buffer() {
        let buffer = Bytes::from(b"/items?id=7 example.com:8000 curl/8.5".to_vec());
        let mut req = parsed(&buffer, 0..11, &[("host", 12..28), ("user-agent", 29..37)]);
        assert!(!buffer.is_unique(), "the head borrows the buffer");
        detach(&mut req);
        assert!(buffer.is_unique(), "the head still holds hyper's buffer");
        assert_eq!(*req.uri(), "/items?id=7");
        assert_eq!(req.uri().query(), Some("id=7"));
        assert_eq!(req.headers()["host"], "example.com:8000");
        assert_eq!(req.headers()["user-agent"], "curl/8.5");
    }

    #[test]
    fn repeated_headers_keep_their_values_in_order() {
        let buffer = Bytes::from(b"/ a b c".to_vec());
        let mut req = parsed(
            &buffer,
            0..1,
            &[("x-a", 2..3), ("x-b", 4..5), ("x-a", 6..7)],
        );
        detach(&mut req);
        assert!(buffer.is_unique());
        let a: Vec<_> = req.headers().get_all("x-a").iter().collect();
        assert_eq!(a, ["a", "c"]);
        assert_eq!(req.headers()["x-b"], "b");
        assert_eq!(*req.uri(), "/");
    }

    #[test]
    fn authority_form_targets_are_copied_too() {
        let buffer = Bytes::from(b"example.com:443".to_vec());
        let mut req = parsed(&buffer, 0..15, &[]);
        detach(&mut req);
        assert!(buffer.is_unique());
        assert_eq!(req.uri().authority().unwrap(), "example.com:443");
    }
}
