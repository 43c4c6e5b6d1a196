//! What the master answers over HTTP itself, without touching Python:
//! health checks for load balancers and Kubernetes (`--health-bind`:
//! `GET /livez`, `GET /readyz`) and Prometheus metrics (`--metrics-bind`:
//! `GET /metrics`).
//!
//! The master is one thread with no runtime, so this is a tiny HTTP/1.x
//! responder inside its poll loop: connections are non-blocking, at most
//! `MAX_PENDING` wait, each for at most `READ_TIME` and `MAX_HEAD` bytes,
//! and an answer is written at once (a metrics page may need a few writes;
//! they are bounded by a short timeout), so no client can hold the loop.

use socket2::Socket;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::config::BindAddr;
use crate::listen::{self, ListenError, Listener};

const MAX_PENDING: usize = 64;
const READ_TIME: Duration = Duration::from_secs(1);
const MAX_HEAD: usize = 4096;
/// The most a slow reader of an answer can hold the loop.
const WRITE_TIME: Duration = Duration::from_millis(200);

pub struct Responder {
    listener: Listener,
    socket: Socket,
    pending: Vec<Pending>,
}

struct Pending {
    socket: Socket,
    head: Vec<u8>,
    deadline: Instant,
}

/// What the supervisor says about the pool.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub live: bool,
    pub ready: bool,
}

/// An answer: status line, content type, body.
pub struct Reply {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.to_string(),
        }
    }
}

/// `/livez` and `/readyz`.
pub fn health(path: &str, v: Verdict) -> Reply {
    match path {
        "/livez" if v.live => Reply::text("200 OK", "live\n"),
        "/livez" => Reply::text("503 Service Unavailable", "not live\n"),
        "/readyz" if v.ready => Reply::text("200 OK", "ready\n"),
        "/readyz" => Reply::text("503 Service Unavailable", "not ready\n"),
        _ => Reply::text("404 Not Found", "try /livez or /readyz\n"),
    }
}

impl Responder {
    pub fn bind(addr: &BindAddr) -> Result<Responder, ListenError> {
        let listener = listen::bind_one(addr, 64)?;
        let socket = Socket::from(
            listener
                .fd
                .try_clone()
                .map_err(|source| ListenError::Bind {
                    addr: addr.clone(),
                    source,
                })?,
        );
        socket
            .set_nonblocking(true)
            .map_err(|source| ListenError::Bind {
                addr: addr.clone(),
                source,
            })?;
        Ok(Responder {
            listener,
            socket,
            pending: Vec::new(),
        })
    }

    pub fn addr(&self) -> &BindAddr {
        &self.listener.addr
    }

    /// What the poll loop watches: the listener, then each waiting client.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.socket.as_fd()).chain(self.pending.iter().map(|p| p.socket.as_fd()))
    }

    /// Descriptors a forked worker must not keep.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds()
            .map(|f| f.as_raw_fd())
            .chain([self.listener.fd.as_raw_fd()])
            .collect()
    }

    /// After a poll: `readable` is in the order of `fds()`; `route` answers
    /// a GET (or HEAD) of a path.
    pub fn serve(&mut self, readable: &[bool], route: impl Fn(&str) -> Reply) {
        let now = Instant::now();
        let mut answered = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            if readable.get(i + 1).copied().unwrap_or(false) && p.read_head() {
                p.answer(&route);
                answered.push(i);
            }
        }
        let mut i = 0;
        self.pending.retain(|p| {
            let keep = !answered.contains(&i) && now < p.deadline && p.head.len() <= MAX_HEAD;
            i += 1;
            keep
        });
        if readable.first().copied().unwrap_or(false) {
            while let Ok((socket, _)) = self.socket.accept() {
                if self.pending.len() >= MAX_PENDING {
                    // The oldest has had the longest to send its request.
                    self.pending.remove(0);
                }
                if socket.set_nonblocking(true).is_ok() {
                    self.pending.push(Pending {
                        socket,
                        head: Vec::new(),
                        deadline: now + READ_TIME,
                    });
                }
            }
        }
    }

    /// Remove a unix socket file we created.
    pub fn cleanup(&self) {
        listen::cleanup(std::slice::from_ref(&self.listener));
    }
}

impl Pending {
    /// Read what arrived; true once the head is complete (or the client
    /// closed its side, which gets an answer to whatever it sent).
    fn read_head(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.head.extend_from_slice(&buf[..n]);
                    if self.head.windows(4).any(|w| w == b"\r\n\r\n")
                        || self.head.windows(2).any(|w| w == b"\n\n")
                    {
                        return true;
                    }
                    if self.head.len() > MAX_HEAD {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    fn answer(&mut self, route: &impl Fn(&str) -> Reply) {
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let reply = match method {
            "GET" | "HEAD" => route(path),
            _ => Reply::text("405 Method Not Allowed", "GET only\n"),
        };
        let mut response = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            reply.status,
            reply.content_type,
            reply.body.len()
        );
        if method != "HEAD" {
            response.push_str(&reply.body);
        }
        let _ = self.socket.set_nonblocking(false);
        let _ = self.socket.set_write_timeout(Some(WRITE_TIME));
        let _ = self.socket.write_all(response.as_bytes());
    }
}
