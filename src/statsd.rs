//! `--statsd-host`: gunicorn's statsd metrics, under gunicorn's names, so
//! that dashboards built for gunicorn keep working: per request
//! `gunicorn.request.duration` (ms), `gunicorn.requests` and
//! `gunicorn.request.status.CODE` (counters), from the worker that served
//! it; `gunicorn.workers` (gauge) from the master once a second.
//!
//! Ours rather than a statsd crate: what is sent is three fixed lines
//! written into a stack buffer, one datagram per request, on a socket that
//! never blocks (a lost datagram is statsd's normal).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

pub struct Statsd {
    socket: UdpSocket,
    /// gunicorn's: the configured prefix with one dot after it, or nothing.
    prefix: String,
}

impl Statsd {
    pub fn connect(to: SocketAddr, prefix: &str) -> std::io::Result<Statsd> {
        let local: SocketAddr = if to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(to)?;
        socket.set_nonblocking(true)?;
        let trimmed = prefix.trim_end_matches('.');
        Ok(Statsd {
            socket,
            prefix: if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}.")
            },
        })
    }

    /// One answered request, as gunicorn's `Statsd.access` reports it.
    pub fn request(&self, status: u16, took: Duration) {
        let mut buf = [0u8; 512];
        let mut w = &mut buf[..];
        let p = &self.prefix;
        let ms = took.as_secs_f64() * 1000.0;
        let written = write!(
            w,
            "{p}gunicorn.request.duration:{ms}|ms\n{p}gunicorn.requests:1|c|@1.0\n{p}gunicorn.request.status.{status}:1|c|@1.0"
        );
        if written.is_ok() {
            let len = 512 - w.len();
            self.send(&buf[..len]);
        }
    }

    /// The master's worker count (gunicorn sends none while it is 0).
    pub fn workers(&self, n: usize) {
        if n > 0 {
            let line = format!("{}gunicorn.workers:{n}|g", self.prefix);
            self.send(line.as_bytes());
        }
    }

    fn send(&self, datagram: &[u8]) {
        // No statsd listening, or its buffer full: the metric is dropped.
        let _ = self.socket.send(datagram);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_gunicorns_names_and_one_dot_after_the_prefix() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let mut buf = [0u8; 1024];
        let mut recv = || {
            let n = server.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let s = Statsd::connect(to, "shop..").unwrap();
        s.request(404, Duration::from_micros(2500));
        assert_eq!(
            recv(),
            "shop.gunicorn.request.duration:2.5|ms\nshop.gunicorn.requests:1|c|@1.0\nshop.gunicorn.request.status.404:1|c|@1.0"
        );
        Statsd::connect(to, "").unwrap().workers(3);
        assert_eq!(recv(), "gunicorn.workers:3|g");
    }
}
