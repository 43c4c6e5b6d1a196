//! Health checks for load balancers and Kubernetes, answered by the master
//! itself (`--health-bind`), so they tell the truth about the pool without
//! touching Python: `GET /livez` and `GET /readyz`.
//!
//! The master is one thread with no runtime, so this is a tiny HTTP/1.x
//! responder inside its poll loop: connections are non-blocking, at most
//! `MAX_PENDING` wait, each for at most `READ_TIME` and `MAX_HEAD` bytes,
//! and every answer fits a socket buffer, so no client can hold the loop.

use socket2::Socket;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::config::BindAddr;
use crate::listen::{self, ListenError, Listener};

const MAX_PENDING: usize = 64;
const READ_TIME: Duration = Duration::from_secs(1);
const MAX_HEAD: usize = 4096;

pub struct Health {
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

impl Health {
    pub fn bind(addr: &BindAddr) -> Result<Health, ListenError> {
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
        Ok(Health {
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

    /// After a poll: `readable` is in the order of `fds()`.
    pub fn serve(&mut self, readable: &[bool], verdict: Verdict) {
        let now = Instant::now();
        let mut answered = Vec::new();
        for (i, p) in self.pending.iter_mut().enumerate() {
            if readable.get(i + 1).copied().unwrap_or(false) && p.read_head() {
                p.answer(verdict);
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

    fn answer(&mut self, verdict: Verdict) {
        let line = self.head.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let (status, body) = match (method, path) {
            ("GET" | "HEAD", "/livez") if verdict.live => ("200 OK", "live\n"),
            ("GET" | "HEAD", "/livez") => ("503 Service Unavailable", "not live\n"),
            ("GET" | "HEAD", "/readyz") if verdict.ready => ("200 OK", "ready\n"),
            ("GET" | "HEAD", "/readyz") => ("503 Service Unavailable", "not ready\n"),
            ("GET" | "HEAD", _) => ("404 Not Found", "try /livez or /readyz\n"),
            _ => ("405 Method Not Allowed", "GET /livez or /readyz\n"),
        };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if method != "HEAD" {
            response.push_str(body);
        }
        // Small enough for any socket buffer: one write, never a wait.
        let _ = self.socket.write_all(response.as_bytes());
    }
}
