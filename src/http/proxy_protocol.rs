//! `--proxy-protocol`: the PROXY header (v1 text, v2 binary) a load
//! balancer (HAProxy, an AWS NLB) sends before the HTTP bytes, naming the
//! real client. Read as gunicorn 27 reads it: only at the start of a
//! connection; a connection without one is served as plain HTTP; a header
//! from a peer outside `--proxy-allow-from` is refused (403), a malformed
//! one too (400).
//!
//! Only the header's own bytes are taken from the socket (peeked first,
//! then read to their exact length), so the framing authority and hyper
//! see the stream as if the header had never been there. Ours: the crates
//! for the format parse a buffer and leave the socket to the caller.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{Networks, ProxyProtocol as Mode};
use nix::sys::socket::{MsgFlags, recv};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Why a connection is refused before HTTP.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A header from a peer outside `--proxy-allow-from`.
    Forbidden,
    /// A header that is not one.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Forbidden => f.write_str("a PROXY header from a peer not in proxy_allow_ips"),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

impl Refusal {
    /// The answer on the wire (gunicorn's statuses), then the connection closes.
    pub fn response(&self) -> &'static [u8] {
        match self {
            Refusal::Forbidden => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\nConnection: close\r\n\r\nForbidden\n"
            }
            Refusal::Invalid(_) => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n"
            }
        }
    }
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line (the spec's 107 bytes, CRLF included).
const V1_MAX: usize = 107;

/// What the start of a connection holds.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Not a PROXY header (or not one this mode reads): plain HTTP.
    Http,
    /// More bytes are needed to tell.
    More,
    /// A header of this many bytes, naming this client (None: LOCAL,
    /// UNSPEC: keep the connection's own peer).
    Header(usize, Option<SocketAddr>),
}

/// Look at the first bytes of a connection.
fn inspect(buf: &[u8], mode: Mode) -> Result<Seen, Refusal> {
    let could_be = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if mode != Mode::V1 {
        if buf.starts_with(V2_SIGNATURE) {
            return v2(buf);
        }
        if could_be(V2_SIGNATURE) {
            return Ok(Seen::More);
        }
    }
    if mode != Mode::V2 {
        if buf.starts_with(b"PROXY ") {
            return v1(buf);
        }
        if could_be(b"PROXY ") {
            return Ok(Seen::More);
        }
    }
    Ok(Seen::Http)
}

fn v1(buf: &[u8]) -> Result<Seen, Refusal> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Refusal::Invalid("PROXY line too long".into()))
        } else {
            Ok(Seen::More)
        };
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    let bad = || Refusal::Invalid(format!("invalid PROXY line {line:?}"));
    let bits: Vec<&str> = line.split(' ').collect();
    if bits.len() != 6 {
        return Err(bad());
    }
    let client: IpAddr = match bits[1] {
        "TCP4" => {
            bits[3].parse::<Ipv4Addr>().map_err(|_| bad())?;
            IpAddr::V4(bits[2].parse().map_err(|_| bad())?)
        }
        "TCP6" => {
            bits[3].parse::<Ipv6Addr>().map_err(|_| bad())?;
            IpAddr::V6(bits[2].parse().map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    };
    let port: u16 = bits[4].parse().map_err(|_| bad())?;
    bits[5].parse::<u16>().map_err(|_| bad())?;
    Ok(Seen::Header(end + 2, Some(SocketAddr::new(client, port))))
}

fn v2(buf: &[u8]) -> Result<Seen, Refusal> {
    if buf.len() < 16 {
        return Ok(Seen::More);
    }
    let bad = |why: &str| Refusal::Invalid(format!("invalid PROXY v2 header: {why}"));
    let (ver_cmd, fam_proto) = (buf[12], buf[13]);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(bad("version is not 2"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(Seen::More);
    }
    let addrs = &buf[16..total];
    match ver_cmd & 0x0f {
        0 => return Ok(Seen::Header(total, None)), // LOCAL: the proxy's own check
        1 => {}
        _ => return Err(bad("unknown command")),
    }
    if fam_proto >> 4 == 0 {
        return Ok(Seen::Header(total, None)); // UNSPEC
    }
    if fam_proto & 0x0f != 1 {
        return Err(bad("only TCP is served"));
    }
    let client = match fam_proto >> 4 {
        1 if addrs.len() >= 12 => {
            let ip: [u8; 4] = addrs[0..4].try_into().expect("4 bytes");
            SocketAddr::new(ip.into(), u16::from_be_bytes([addrs[8], addrs[9]]))
        }
        2 if addrs.len() >= 36 => {
            let ip: [u8; 16] = addrs[0..16].try_into().expect("16 bytes");
            SocketAddr::new(ip.into(), u16::from_be_bytes([addrs[32], addrs[33]]))
        }
        1 | 2 => return Err(bad("address block too short")),
        _ => return Err(bad("unsupported address family")),
    };
    Ok(Seen::Header(total, Some(client)))
}

/// Read a PROXY header off the start of `stream`, if there is one: the
/// client it names (None: none, or LOCAL/UNSPEC), or why the connection is
/// refused. Gives up after `within` (the client then meets the header
/// timeout as any silent client does).
pub async fn read_header(
    stream: &TcpStream,
    mode: Mode,
    peer: SocketAddr,
    allow: &Networks,
    within: Duration,
) -> io::Result<Result<Option<SocketAddr>, Refusal>> {
    let mut buf = [0u8; 16 + 216];
    let work = async {
        loop {
            stream.readable().await?;
            let peeked = match stream.try_io(Interest::READABLE, || {
                recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)
            }) {
                Ok(0) => return Ok(Ok(None)), // gone before a byte
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            match inspect(&buf[..peeked], mode) {
                Ok(Seen::Http) => return Ok(Ok(None)),
                // The peer sent part of it: wait for the rest (a v2
                // header's address block fits this buffer: 216 bytes).
                // Peeking leaves the socket readable, so wait by time.
                Ok(Seen::More) if peeked < buf.len() => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Ok(Seen::More) => {
                    return Ok(Err(Refusal::Invalid("PROXY header too long".into())));
                }
                Err(refusal) => return Ok(Err(refusal)),
                Ok(Seen::Header(len, client)) => {
                    if !allow.admits(peer.ip()) {
                        return Ok(Err(Refusal::Forbidden));
                    }
                    // Take exactly the header: what follows is HTTP.
                    let mut taken = 0;
                    while taken < len {
                        stream.readable().await?;
                        match stream.try_read(&mut buf[taken..len]) {
                            Ok(0) => return Ok(Ok(None)),
                            Ok(n) => taken += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(Ok(client));
                }
            }
        }
    };
    match tokio::time::timeout(within, work).await {
        Ok(r) => r,
        Err(_) => Ok(Ok(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[test]
    fn v1_and_v2_headers_name_the_client_and_their_length() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            inspect(line, Mode::Auto),
            Ok(Seen::Header(42, Some("203.0.113.7:51234".parse().unwrap())))
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 4000 443\r\n";
        assert_eq!(
            inspect(line, Mode::V1),
            Ok(Seen::Header(
                line.len(),
                Some("[2001:db8::1]:4000".parse().unwrap())
            ))
        );
        let mut addrs = vec![198, 51, 100, 9, 10, 0, 0, 1];
        addrs.extend_from_slice(&4242u16.to_be_bytes());
        addrs.extend_from_slice(&80u16.to_be_bytes());
        let h = v2_header(1, 0x11, &addrs);
        assert_eq!(
            inspect(&h, Mode::V2),
            Ok(Seen::Header(28, Some("198.51.100.9:4242".parse().unwrap())))
        );
        assert_eq!(
            inspect(&v2_header(0, 0, &[]), Mode::Auto),
            Ok(Seen::Header(16, None))
        );
    }

    #[test]
    fn partial_other_and_malformed_starts() {
        assert_eq!(inspect(b"PRO", Mode::Auto), Ok(Seen::More));
        assert_eq!(inspect(b"PROXY TCP4 1.2.3.4", Mode::Auto), Ok(Seen::More));
        assert_eq!(inspect(&V2_SIGNATURE[..5], Mode::Auto), Ok(Seen::More));
        assert_eq!(inspect(b"GET / HTTP/1.1\r\n", Mode::Auto), Ok(Seen::Http));
        // A mode reads only its own version; the other is plain bytes.
        assert_eq!(
            inspect(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Mode::V2),
            Ok(Seen::Http)
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
        ] {
            assert!(
                matches!(inspect(bad, Mode::Auto), Err(Refusal::Invalid(_))),
                "{bad:?}"
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(matches!(
            inspect(&long, Mode::Auto),
            Err(Refusal::Invalid(_))
        ));
        let mut h = v2_header(1, 0x11, &[1, 2, 3]);
        assert!(matches!(inspect(&h, Mode::Auto), Err(Refusal::Invalid(_))));
        h[12] = 0x31;
        assert!(matches!(inspect(&h, Mode::Auto), Err(Refusal::Invalid(_))));
    }
}
