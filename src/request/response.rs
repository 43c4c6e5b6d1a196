//! Response pieces both app sides build the same way: the Server header,
//! error pages, and the response headers an app may set.

use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use pyo3::PyResult;
use pyo3::exceptions::PyValueError;
use std::sync::LazyLock;

use super::ResponseBody;

/// Chunks of a streamed response queued before the app side waits for the I/O thread.
pub const STREAM_DEPTH: usize = 64;

pub static SERVER_HEADER: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&format!("ferricorn/{}", crate::VERSION))
        .unwrap_or_else(|_| HeaderValue::from_static("ferricorn"))
});

/// A plain-text error page that also closes the connection.
pub fn error_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(bytes::Bytes::from(format!(
        "{message}\n"
    ))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::SERVER, SERVER_HEADER.clone());
    resp
}

/// Connection-level headers an app may not set (PEP 3333 §"Other HTTP Features").
pub fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// A response header from the app, refused when it could not go on the wire
/// as it is (a CR or LF in a value would split the response).
pub fn header_pair(name: &[u8], value: &[u8]) -> PyResult<(HeaderName, HeaderValue)> {
    super::fields::field(name, value, || {
        let name = HeaderName::from_bytes(name).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        let value = HeaderValue::from_bytes(value).map_err(|_| {
            PyValueError::new_err(format!(
                "invalid value for header {name}: {:?} (CR, LF and NUL are not allowed)",
                String::from_utf8_lossy(value)
            ))
        })?;
        Ok((name, value))
    })
}
