//! What a trusted proxy may say about the original request: the scheme.

use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Who may tell us the original scheme through `X-Forwarded-*` headers.
pub struct Forwarded {
    pub allow_all: bool,
    pub allow: Vec<IpAddr>,
}

/// The request headers the environ needs beyond their `HTTP_*` key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Plain,
    Host,
    ForwardedProto,
    ForwardedSsl,
    ForwardedProtocol,
}

impl Role {
    /// The value (any case) by which a trusted proxy says the client used https.
    fn https_value(self) -> Option<&'static [u8]> {
        match self {
            Role::ForwardedProto => Some(b"https"),
            Role::ForwardedSsl => Some(b"on"),
            Role::ForwardedProtocol => Some(b"ssl"),
            Role::Plain | Role::Host => None,
        }
    }

    pub fn says_https(self, value: &HeaderValue) -> bool {
        self.https_value()
            .is_some_and(|want| value.as_bytes().eq_ignore_ascii_case(want))
    }

    pub fn of(name: &str) -> Role {
        match name {
            "host" => Role::Host,
            "x-forwarded-proto" => Role::ForwardedProto,
            "x-forwarded-ssl" => Role::ForwardedSsl,
            "x-forwarded-protocol" => Role::ForwardedProtocol,
            _ => Role::Plain,
        }
    }
}

// Named once: looking a header up by `&str` parses the name on every call.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");
const X_FORWARDED_PROTOCOL: HeaderName = HeaderName::from_static("x-forwarded-protocol");

/// A trusted proxy says the client used https.
pub fn is_https(headers: &HeaderMap) -> bool {
    [X_FORWARDED_PROTO, X_FORWARDED_SSL, X_FORWARDED_PROTOCOL]
        .iter()
        .any(|name| {
            headers
                .get(name)
                .is_some_and(|v| Role::of(name.as_str()).says_https(v))
        })
}
