//! Cleartext HTTP/2 by prior knowledge (`--http2-cleartext prior-knowledge`):
//! whether a new connection opens with the HTTP/2 preface, found by peeking
//! so that an HTTP/1 request stays on the socket for the framing authority.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::Interest;

use nix::sys::socket::{MsgFlags, recv};

/// What every HTTP/2 connection opens with (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A socket that can be read without consuming.
pub trait Peek: AsRawFd {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// A peek that clears the socket's readiness when nothing is there.
    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize>;
}

fn peek(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv(fd.as_raw_fd(), buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)
}

impl Peek for tokio::net::TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        tokio::net::TcpStream::readable(self)
    }
    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || peek(self, buf))
    }
}

impl Peek for tokio::net::UnixStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        tokio::net::UnixStream::readable(self)
    }
    fn try_peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Interest::READABLE, || peek(self, buf))
    }
}

/// Whether the client opens with the HTTP/2 preface. False as soon as its
/// bytes differ (an HTTP/1 request), at its end, or when the preface takes
/// longer than `limit` to arrive.
pub async fn is_http2<S: Peek>(stream: &S, limit: Duration) -> bool {
    let look = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            let n = match stream.try_peek(&mut buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            };
            if buf[..n] != PREFACE[..n] {
                return false;
            }
            if n == PREFACE.len() {
                return true;
            }
            // Part of the preface is in: the socket stays readable until
            // the rest is read, so wait a little rather than spin on it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(limit, look).await.unwrap_or(false)
}
