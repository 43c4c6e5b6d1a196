//! `--bind` addresses in gunicorn's forms.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Fd(i32),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "http://{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BindAddr::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

/// Parse one `bind` entry: `HOST`, `HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`, `fd://N`.
pub fn parse(spec: &str) -> Result<BindAddr, String> {
    let spec = spec.trim();
    if let Some(path) = spec
        .strip_prefix("unix://")
        .or_else(|| spec.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err("unix: needs a socket path, e.g. unix:/run/app.sock".into());
        }
        return Ok(BindAddr::Unix(PathBuf::from(path)));
    }
    if let Some(n) = spec.strip_prefix("fd://") {
        return n
            .parse::<i32>()
            .ok()
            .filter(|&n| n >= 0)
            .map(BindAddr::Fd)
            .ok_or_else(|| format!("fd://{n}: not a file descriptor number"));
    }
    if spec.is_empty() {
        return Err("empty address".into());
    }
    let (host, port) = split_host_port(spec)?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(BindAddr::Tcp(SocketAddr::new(ip, port)));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs
        .next()
        .map(BindAddr::Tcp)
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn split_host_port(spec: &str) -> Result<(&str, u16), String> {
    const DEFAULT_PORT: u16 = 8000;
    let bad_port = |p: &str| format!("bad port {p:?} (expected 0 to 65535)");
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("unclosed [ in IPv6 address, e.g. [::1]:8000")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
            None if after.is_empty() => Ok((host, DEFAULT_PORT)),
            None => Err(format!("unexpected {after:?} after ]")),
        };
    }
    match spec.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("IPv6 addresses need brackets, e.g. [::1]:8000".into())
        }
        Some((host, p)) => Ok((host, p.parse().map_err(|_| bad_port(p))?)),
        None => Ok((spec, DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse("127.0.0.1:9000"),
            Ok(BindAddr::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            parse("127.0.0.1"),
            Ok(BindAddr::Tcp("127.0.0.1:8000".parse().unwrap()))
        );
        assert_eq!(
            parse("[::1]:81"),
            Ok(BindAddr::Tcp("[::1]:81".parse().unwrap()))
        );
        assert_eq!(
            parse("[::1]"),
            Ok(BindAddr::Tcp("[::1]:8000".parse().unwrap()))
        );
        assert_eq!(
            parse(":82"),
            Ok(BindAddr::Tcp("0.0.0.0:82".parse().unwrap()))
        );
        assert_eq!(
            parse("unix:/tmp/x.sock"),
            Ok(BindAddr::Unix("/tmp/x.sock".into()))
        );
        assert_eq!(parse("fd://3"), Ok(BindAddr::Fd(3)));
        assert!(parse("127.0.0.1:99999").is_err());
        assert!(parse("::1:80").is_err());
        assert!(parse("fd://x").is_err());
    }
}
