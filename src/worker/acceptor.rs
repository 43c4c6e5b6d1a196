//! The accept loop: one per listening socket, a connection slot per
//! connection, and a step back when other workers hold fewer connections
//! (see `crate::listen::balance`); then each connection's beginning: the
//! PROXY header, TLS, and HTTP/1.1 or HTTP/2 (`begin`).

use socket2::{SockAddr, Socket};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::http2;
use super::serve::{Conf, Serving, connection};
use crate::config::WorkerClass;
use crate::error;
use crate::http::idle::ReadReady;
use crate::http::preface::{Peek, is_http2};
use crate::http::proxy_protocol;
use crate::http::service::Shared;
use crate::http::shutdown::stopping;
use crate::listen::balance::Seat;
use crate::request::forwarded::Forwarded;
use crate::request::{Local, Peer};
use crate::tls::TlsInfo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

/// How long a worker ahead of the others waits at most before it accepts anyway.
const DEFER: Duration = Duration::from_millis(1);
/// How often a waiting worker looks at the board again. A wait must end as
/// soon as the others have caught up: two workers that each sat out a whole
/// `DEFER` in turn took a burst of 256 connections at a few per millisecond
/// (their first requests waited 20-30 ms), and traffic that opens a
/// connection per request ran at a fifth of its speed.
const LOOK: Duration = Duration::from_micros(100);

pub(super) struct Acceptor {
    pub slots: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub shared: Arc<Shared>,
    pub conf: Arc<Conf>,
    pub local: Arc<Local>,
}

impl Acceptor {
    /// The loop for one non-blocking listening socket, to be spawned.
    pub fn start(
        self,
        fd: OwnedFd,
        unix: bool,
    ) -> std::io::Result<impl Future<Output = ()> + use<>> {
        // SAFETY: the Socket owns its descriptor for as long as the AsyncFd
        // holds it, and as_raw_fd always returns that same descriptor.
        let listener =
            unsafe { AsyncFd::register_with_interest(Socket::from(fd), Interest::READABLE) }?;
        let pause = Pause::new()?;
        let nodelay = Nodelay::of(listener.get_ref(), unix);
        Ok(self.run(listener, pause, unix, nodelay))
    }

    async fn run(self, listener: AsyncFd<Socket>, pause: Pause, unix: bool, nodelay: Nodelay) {
        let mut shutdown = self.shutdown.clone();
        let mut failing = Failing::default();
        let mut refused = Refused::default();
        let seat = self.conf.seat;
        loop {
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                // sync: one request at a time; the others wait in the
                // listen queue for a free worker, as with gunicorn.
                Err(_) if self.conf.class == WorkerClass::Sync => tokio::select! {
                    p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = stopping(&mut shutdown) => break,
                },
                Err(_) => match self.full(&listener, &mut shutdown, &mut refused).await {
                    Some(p) => p,
                    None if *shutdown.borrow() => break,
                    None => continue,
                },
            };
            let mut ready = tokio::select! {
                r = listener.readable() => match r {
                    Ok(ready) => ready,
                    Err(e) => {
                        error!("waiting for connections failed: {e}");
                        break;
                    }
                },
                _ = stopping(&mut shutdown) => break,
            };
            if let Some(seat) = seat {
                tokio::select! {
                    _ = leave_to_others(seat, &pause, DEFER) => {}
                    _ = stopping(&mut shutdown) => break,
                }
            }
            // Told to stop while a slot came free (a sync worker whose
            // thread is stuck past --request-timeout, at that same moment):
            // leave the connection to the other workers.
            if *shutdown.borrow() {
                break;
            }
            let accepted = match ready.try_io(|l| {
                l.get_ref()
                    .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            }) {
                Ok(accepted) => accepted,
                // Another worker took it.
                Err(_would_block) => continue,
            };
            match accepted {
                Ok((socket, addr)) => {
                    failing.recovered();
                    self.serve(socket, addr, unix, nodelay, permit)
                }
                // The client gave up before we accepted: nothing to serve.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, and
                    // say so once per episode, not ten times a second.
                    failing.failed(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// At the connection limit: idle connections are asked to make room,
    /// and a slot that frees within `ROOM_WAIT` is taken. Otherwise, while
    /// another worker has room the connection is left to it; when none has,
    /// one waiting connection is accepted and answered 503 (`None`), so that
    /// no client hangs unanswered behind a full worker.
    async fn full(
        &self,
        listener: &AsyncFd<Socket>,
        shutdown: &mut watch::Receiver<bool>,
        refused: &mut Refused,
    ) -> Option<OwnedSemaphorePermit> {
        self.conf.room.send_modify(|n| *n += 1);
        let slot = self.slots.clone().acquire_owned();
        tokio::pin!(slot);
        tokio::select! {
            p = &mut slot => return p.ok(),
            _ = tokio::time::sleep(ROOM_WAIT) => {}
            _ = stopping(shutdown) => return None,
        }
        if self
            .conf
            .seat
            .is_some_and(|s| s.others_have_room(self.slots_total()))
        {
            return tokio::select! {
                p = slot => p.ok(),
                _ = stopping(shutdown) => None,
            };
        }
        let mut ready = tokio::select! {
            p = &mut slot => return p.ok(),
            r = listener.readable() => r.ok()?,
            _ = stopping(shutdown) => return None,
        };
        if let Ok(Ok((socket, _))) = ready.try_io(|l| {
            l.get_ref()
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        }) {
            refused.one(self.slots_total());
            let tls = self.conf.tls.clone();
            tokio::spawn(answer_unavailable(socket, tls, self.conf.header_timeout));
        }
        None
    }

    fn slots_total(&self) -> usize {
        self.conf.capacity
    }

    fn serve(
        &self,
        socket: Socket,
        addr: SockAddr,
        unix: bool,
        nodelay: Nodelay,
        permit: OwnedSemaphorePermit,
    ) {
        let serving = Serving {
            shared: self.shared.clone(),
            conf: self.conf.clone(),
            local: self.local.clone(),
            shutdown: self.shutdown.clone(),
        };
        let held = Held::new(serving.conf.seat, permit);
        if unix {
            match tokio::net::UnixStream::from_std(socket.into()) {
                Ok(stream) => {
                    tokio::spawn(async move {
                        begin(serving, stream, Peer::Unix).await;
                        drop(held);
                    });
                }
                Err(e) => error!("accept failed: {e}"),
            }
            return;
        }
        if nodelay == Nodelay::PerConnection {
            let _ = socket.set_tcp_nodelay(true);
        }
        let (Some(addr), Ok(stream)) = (
            addr.as_socket(),
            tokio::net::TcpStream::from_std(socket.into()),
        ) else {
            error!("accept failed: not a TCP connection");
            return;
        };
        tokio::spawn(async move {
            let mut peer = addr;
            if let Some((mode, allow)) = &serving.conf.proxy {
                // Boxed: the connection's task stays as small as without it.
                let header = Box::pin(proxy_protocol::read_header(
                    &stream,
                    *mode,
                    addr,
                    allow,
                    serving.conf.header_timeout,
                ));
                match header.await {
                    Ok(Ok(client)) => peer = client.unwrap_or(addr),
                    Ok(Err(refusal)) => {
                        crate::warning!("Invalid request from {}: {refusal}", addr.ip());
                        let _ = stream.try_write(refusal.response());
                        drop(held);
                        return;
                    }
                    Err(_) => return,
                }
            }
            begin(serving, stream, Peer::Tcp(peer)).await;
            drop(held);
        });
    }
}

/// Where TCP_NODELAY comes from: the master sets it on TCP listening
/// sockets and accepted connections inherit it (`crate::listen`); on a
/// listener where that failed, each connection gets its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodelay {
    Inherited,
    PerConnection,
}

impl Nodelay {
    fn of(listener: &Socket, unix: bool) -> Nodelay {
        if unix || listener.tcp_nodelay().unwrap_or(false) {
            Nodelay::Inherited
        } else {
            Nodelay::PerConnection
        }
    }
}

/// Serve one connection to its end: TLS, then HTTP/1.1 or HTTP/2. Every
/// path but plain HTTP/1.1 is boxed: a connection's task is as large as its
/// largest path, and idle plain connections are the ones there are
/// thousands of.
async fn begin<S>(serving: Serving, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + ReadReady + Peek + Unpin + Send + 'static,
{
    let conf = serving.conf.clone();
    if let Some(acceptor) = &conf.tls {
        let handshake = Box::pin(tokio::time::timeout(
            conf.header_timeout,
            acceptor.accept(stream),
        ));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                crate::debug!("TLS handshake with {} failed: {e}", peer.ip_string());
                return;
            }
            Err(_) => {
                crate::debug!(
                    "TLS handshake with {} not done within --header-timeout",
                    peer.ip_string()
                );
                return;
            }
        };
        let tls = stream.get_ref().1;
        let info = Some(Arc::new(TlsInfo::of(tls)));
        if tls.alpn_protocol() == Some(b"h2") {
            Box::pin(http2::connection(stream, peer, info, serving)).await;
        } else {
            Box::pin(connection(stream, peer, info, serving)).await;
        }
        return;
    }
    if let Some(trusted) = &conf.h2c
        && trusts(trusted, peer)
        && Box::pin(is_http2(&stream, conf.header_timeout)).await
    {
        Box::pin(http2::connection(stream, peer, None, serving)).await;
        return;
    }
    connection(stream, peer, None, serving).await;
}

/// Whether cleartext HTTP/2 is taken from this peer: a unix socket's, or
/// one of `--forwarded-allow-ips` (gunicorn's rule: a proxy in front).
fn trusts(trusted: &Forwarded, peer: Peer) -> bool {
    match peer {
        Peer::Unix => true,
        Peer::Tcp(sa) => trusted.allow_all || trusted.allow.contains(&sa.ip()),
    }
}

/// While this worker holds more than its share, leave the waiting connection
/// to the others; but no longer than `longest` (they may be stuck), and not a
/// moment longer than they need to catch up.
async fn leave_to_others(seat: Seat, pause: &Pause, longest: Duration) {
    let since = Instant::now();
    while seat.ahead() && since.elapsed() < longest {
        if let Err(e) = pause.sleep(LOOK).await {
            error!("waiting for the other workers failed: {e}");
            return;
        }
    }
}

/// A short wait with a finer clock than tokio's.
struct Pause {
    timer: AsyncFd<File>,
}

impl Pause {
    fn new() -> std::io::Result<Pause> {
        let timer = File::from(crate::sys::timer()?);
        // SAFETY: the File owns the timer's descriptor for as long as the
        // AsyncFd holds it, and as_raw_fd always returns that same descriptor.
        let timer = unsafe { AsyncFd::register_with_interest(timer, Interest::READABLE) }?;
        Ok(Pause { timer })
    }

    async fn sleep(&self, d: Duration) -> std::io::Result<()> {
        crate::sys::arm_timer(self.timer.get_ref(), d)?;
        loop {
            let mut ready = self.timer.readable().await?;
            // The expiry count: read to clear it (an earlier wait cut short
            // may have left readiness behind that re-arming cleared).
            let mut expiries = [0u8; 8];
            match ready.try_io(|t| t.get_ref().read(&mut expiries)) {
                Ok(r) => return r.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A connection's slot and its count on the board, given back when dropped
/// (also if the connection's task ends early).
struct Held {
    seat: Option<Seat>,
    _permit: OwnedSemaphorePermit,
}

impl Held {
    fn new(seat: Option<Seat>, permit: OwnedSemaphorePermit) -> Held {
        if let Some(seat) = seat {
            seat.joined();
        }
        Held {
            seat,
            _permit: permit,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(seat) = self.seat {
            seat.left();
        }
    }
}

/// How long a full worker waits for an idle connection to make room.
const ROOM_WAIT: Duration = Duration::from_millis(50);

/// What a connection gets when every worker is at `--worker-connections`.
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nRetry-After: 1\r\nConnection: close\r\n\r\nService Unavailable\n";

/// Answer 503 and close, reading what the client sent meanwhile (closing
/// with it unread would reset the connection and could lose the answer).
/// A TLS client can read it only after its handshake.
async fn answer_unavailable(socket: Socket, tls: Option<TlsAcceptor>, handshake: Duration) {
    let Ok(stream) = tokio::net::TcpStream::from_std(socket.into()) else {
        return;
    };
    match tls {
        None => unavailable_on(stream).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) = tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                unavailable_on(stream).await;
            }
        }
    }
}

async fn unavailable_on<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(UNAVAILABLE).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// 503s sent at the connection limit: one log line a second at most.
#[derive(Default)]
struct Refused {
    last_log: Option<Instant>,
    since_log: u64,
}

impl Refused {
    fn one(&mut self, limit: usize) {
        self.since_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            crate::warning!(
                "Connection limit reached (--worker-connections {limit}, no connection idle): answered 503 to {} new connection(s)",
                std::mem::take(&mut self.since_log)
            );
            self.last_log = Some(Instant::now());
        }
    }
}

/// A run of failed accepts (the descriptor limit reached, memory short):
/// one line when it starts, one with the count when it ends.
#[derive(Default)]
struct Failing {
    since: Option<std::time::Instant>,
    count: u64,
}

impl Failing {
    fn failed(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            let hint = match e.raw_os_error() {
                Some(libc::EMFILE) => {
                    " (this worker's descriptor limit: raise LimitNOFILE= or ulimit -n)"
                }
                Some(libc::ENFILE) => " (the system's descriptor limit: fs.file-max)",
                _ => "",
            };
            error!(
                "accept failed: {e}{hint}; retrying every 100 ms, connections wait in the listen queue"
            );
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            crate::info!(
                "Accepting again after {} failed accepts over {:.1} s",
                std::mem::take(&mut self.count),
                since.elapsed().as_secs_f64()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::balance::Board;

    /// Two open seats on a fresh board, holding `a` and `b` connections.
    fn seats(a: u32, b: u32) -> (Seat, Seat) {
        let board = Board::new().unwrap();
        let seats = (board.claim().unwrap(), board.claim().unwrap());
        for (seat, n) in [(seats.0, a), (seats.1, b)] {
            seat.open();
            (0..n).for_each(|_| seat.joined());
        }
        seats
    }

    /// How long `seat` leaves a connection to the others, at most `longest`.
    fn wait(seat: Seat, longest: Duration) -> Duration {
        let t0 = Instant::now();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { leave_to_others(seat, &Pause::new().unwrap(), longest).await });
        t0.elapsed()
    }

    #[test]
    fn a_worker_ahead_waits_only_until_the_others_catch_up() {
        let (a, b) = seats(2, 0);
        assert!(a.ahead());
        let catch_up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            b.joined();
        });
        // A wait bounded only by a long `longest` shows when it ends.
        let waited = wait(a, Duration::from_secs(10));
        catch_up.join().unwrap();
        assert!(!a.ahead());
        assert!(
            waited < Duration::from_secs(5),
            "waited {waited:?} after the other worker caught up"
        );
    }

    #[test]
    fn a_worker_ahead_of_stuck_workers_accepts_after_the_longest_wait() {
        let (a, _b) = seats(2, 0);
        let waited = wait(a, Duration::from_millis(20));
        assert!(a.ahead(), "nobody caught up");
        assert!(waited >= Duration::from_millis(20));
    }

    #[test]
    fn a_worker_within_its_share_does_not_wait() {
        let (a, _b) = seats(1, 0);
        assert!(wait(a, Duration::from_secs(10)) < Duration::from_secs(5));
    }
}
