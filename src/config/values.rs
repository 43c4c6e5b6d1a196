//! Typed setting values and their parsers, shared by the command line and config files.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// How a worker runs the app (shared/DESIGN.md, "Worker classes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerClass {
    /// One request at a time, `Connection: close`; a long request is a silent worker.
    Sync,
    /// Connections on tokio, app calls on `threads` Python threads, keep-alive.
    Gthread,
    /// Each request in a greenlet on the gevent hub (monkey-patched), keep-alive.
    Gevent,
    /// An ASGI 3 app on an asyncio event loop, one task per request, keep-alive.
    Asgi,
}

impl WorkerClass {
    pub fn name(self) -> &'static str {
        match self {
            WorkerClass::Sync => "sync",
            WorkerClass::Gthread => "gthread",
            WorkerClass::Gevent => "gevent",
            WorkerClass::Asgi => "asgi",
        }
    }
}

/// The asyncio event loop of an asgi worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AsgiLoop {
    /// uvloop when it is installed, else asyncio's own.
    Auto,
    Asyncio,
    Uvloop,
}

/// Whether an asgi worker runs the app's lifespan protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AsgiLifespan {
    /// Run it; an app that does not support it carries on without.
    Auto,
    /// Run it; an app that does not support it fails to boot.
    On,
    Off,
}

/// Whether logs use journald's native protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Journald {
    /// When stderr is connected to the journal ($JOURNAL_STREAM).
    Auto,
    /// Always (the error log must be stderr).
    Yes,
    /// Never: plain lines on stderr or in --error-logfile.
    No,
}

/// How request header names with an underscore reach the WSGI environ
/// (gunicorn's `header_map`): `X_A` and `X-A` would both be `HTTP_X_A`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMap {
    /// Leave them out of the environ.
    Drop,
    /// Refuse the request (400).
    Refuse,
    /// Map them like any other header (not advisable: a client can pose as a proxy's header).
    Dangerous,
}

/// A file mode creation mask, written in octal (`0o022`, `022`), hex or decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Umask(pub u32);

impl fmt::Display for Umask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0o{:03o}", self.0)
    }
}

impl Serialize for Umask {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) if n <= 0o777 => Ok(Umask(n)),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "{n} is not a file mode mask (0 to 0o777)"
            ))),
            Raw::Str(s) => parse_umask(&s).map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_umask(s: &str) -> Result<Umask, String> {
    let t = s.trim();
    let parsed = if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    };
    match parsed {
        Ok(n) if n <= 0o777 => Ok(Umask(n)),
        _ => Err("expected a file mode mask from 0 to 0o777, e.g. 0o022".into()),
    }
}

pub fn parse_positive(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

pub fn parse_positive_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_forms() {
        assert_eq!(parse_umask("0o022"), Ok(Umask(0o22)));
        assert_eq!(parse_umask("022"), Ok(Umask(0o22)));
        assert_eq!(parse_umask("18"), Ok(Umask(18)));
        assert_eq!(parse_umask("0x12"), Ok(Umask(18)));
        assert!(parse_umask("0o1777").is_err());
        assert!(parse_umask("abc").is_err());
    }

    #[test]
    fn positive() {
        assert_eq!(parse_positive("4"), Ok(4));
        assert!(parse_positive("0").is_err());
        assert!(parse_positive("notanumber").is_err());
    }
}

/// Cleartext HTTP/2 (gunicorn's `http2_cleartext`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum H2Cleartext {
    /// HTTP/2 only over TLS.
    Off,
    /// Connections that open with the HTTP/2 preface.
    PriorKnowledge,
}

/// Which PROXY protocol headers are read (gunicorn's `proxy_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// None: every connection is plain HTTP.
    Off,
    /// The v1 text line only.
    V1,
    /// The v2 binary header only.
    V2,
    /// Either.
    Auto,
}

/// Addresses and networks (`10.0.0.0/8`), or anyone (`*`): who may send a
/// PROXY header (`proxy_allow_ips`).
#[derive(Clone, Debug, Default)]
pub struct Networks {
    pub anyone: bool,
    pub networks: Vec<(IpAddr, u8)>,
}

impl Networks {
    /// gunicorn's `proxy_allow_ips` entries: `*`, an address, or `address/bits`.
    pub fn parse(items: &[String]) -> Result<Networks, String> {
        let mut allow = Networks::default();
        for item in items {
            let item = item.trim();
            if item == "*" {
                allow.anyone = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| format!("{item:?}"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?}"))?,
                None => max,
            };
            allow.networks.push((addr, bits));
        }
        Ok(allow)
    }

    pub fn admits(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.anyone
            || self.networks.iter().any(|&(net, bits)| match (net, peer) {
                (IpAddr::V4(n), IpAddr::V4(p)) => prefix_eq(&n.octets(), &p.octets(), bits),
                (IpAddr::V6(n), IpAddr::V6(p)) => prefix_eq(&n.octets(), &p.octets(), bits),
                _ => false,
            })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    a[..whole] == b[..whole] && (rest == 0 || (a[whole] ^ b[whole]) & (0xff << (8 - rest)) == 0)
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn the_allow_list_takes_addresses_networks_and_a_star() {
        let allow = Networks::parse(&[
            "127.0.0.1".into(),
            "10.0.0.0/8".into(),
            "2001:db8::/32".into(),
        ])
        .unwrap();
        for ok in [
            "127.0.0.1",
            "10.200.3.4",
            "2001:db8:1::5",
            "::ffff:10.1.1.1",
        ] {
            assert!(allow.admits(ok.parse().unwrap()), "{ok}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "2001:db9::1"] {
            assert!(!allow.admits(no.parse().unwrap()), "{no}");
        }
        assert!(
            Networks::parse(&["*".into()])
                .unwrap()
                .admits("8.8.8.8".parse().unwrap())
        );
        assert!(Networks::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Networks::parse(&["nonsense".into()]).is_err());
    }
}
