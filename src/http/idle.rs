//! The socket under hyper: closes connections that sit idle between requests
//! (`--keep-alive`), cuts off a client whose request head takes longer than
//! `--header-timeout` to arrive, and hands hyper only the bytes the framing
//! authority (`super::framing`) has passed.
//!
//! hyper has no idle timeout of its own for HTTP/1, so the socket is wrapped:
//! while no request is in progress on the connection, a read that stays
//! pending past the idle limit ends as EOF and hyper closes the connection.
//! hyper's own header read timeout is not used: it runs from the moment hyper
//! waits for a head, so it also cut idle keep-alive connections short, and it
//! reads the clock and allocates and registers a timer for every request.
//! Here a head timer is armed only when a head arrives split across reads.
//!
//! In a crowded worker an idle keep-alive connection is parked: hyper gives
//! its socket back (hyper keeps an 8 KB read and an 8 KB write buffer per
//! connection for as long as it serves it, and cannot shrink them), the
//! socket alone waits for the next request, and a new hyper connection
//! takes it up then. Below `CROWDED` connections nothing is parked, so a
//! busy keep-alive connection pays nothing for it.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::framing::head::{Leniency, Limits};
use super::framing::{Gate, Passed, Refusal};
use super::pace::Pace;
use super::shutdown::stopping;
use crate::request::Peer;
use crate::request::response_body::Occupancy;

/// Shared by a connection's socket wrapper and the requests on it.
#[derive(Default)]
pub struct ConnState {
    pub busy: AtomicU32,
    /// Requests seen by the service so far (the next one's index).
    pub requests: AtomicU32,
    /// The refusal that ended the stream, with its request's index.
    refused: OnceLock<Refused>,
    /// Targets hyper got altered, by request index (rare: kept behind a flag).
    raw_targets: Mutex<Vec<(u32, Bytes)>>,
    any_raw_target: AtomicBool,
    /// index + 1 of the request whose answer decides whether the stream
    /// switches protocols (0: none); and the answer (`SWITCH_*`).
    switch_at: AtomicU32,
    switch: AtomicU8,
    /// index + 1 of the request after which nothing more is read (0: none).
    close_at: AtomicU32,
    /// The worker is stopping: every answer closes its connection, and an
    /// idle connection closes after `DRAIN_IDLE`.
    draining: AtomicBool,
    /// The socket found the connection idle in a crowded worker: whoever
    /// polls hyper's connection parks it (see `IdleIo::park`).
    park: AtomicBool,
    /// The connection's task, while it waits for its last request to leave
    /// (asgi lets go of one on its event loop's thread) before it can park.
    on_idle: AtomicWaker,
}

/// Connections open in this worker, and how many of them make it crowded:
/// then idle ones are parked. Few enough that the buffers of the unparked
/// ones (16 KB each) stay a small part of a crowded worker's memory.
static OPEN: AtomicUsize = AtomicUsize::new(0);
const CROWDED: usize = 256;

/// One open connection, counted while it lives.
pub struct Open(());

impl Open {
    pub fn count() -> Open {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a draining worker keeps an idle keep-alive connection open for
/// a request its client may already have sent (gunicorn's gthread closes
/// them about 1.5 s after a reload). A connection closes between one and two
/// of these after its last byte; `--graceful-timeout` bounds it all.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);

struct Refused {
    index: u32,
    in_head: bool,
    refusal: Refusal,
}

impl Occupancy for ConnState {
    fn enter(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&self) {
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.on_idle.wake();
        }
    }
}

const SWITCH_UNDECIDED: u8 = 0;
const SWITCH_YES: u8 = 1;
const SWITCH_NO: u8 = 2;

impl ConnState {
    /// Why the request with this index must be answered with an error, if it must.
    pub fn refusal(&self, index: u32) -> Option<&Refusal> {
        self.refused
            .get()
            .filter(|r| r.in_head && r.index == index)
            .map(|r| &r.refusal)
    }

    /// Why a request's body was cut short, if the framing authority did it.
    pub fn body_refusal(&self) -> Option<&Refusal> {
        self.refused
            .get()
            .filter(|r| !r.in_head)
            .map(|r| &r.refusal)
    }

    /// The target of request `index` as the client sent it, when hyper got it altered.
    pub fn raw_target(&self, index: u32) -> Option<Bytes> {
        if !self.any_raw_target.load(Ordering::Acquire) {
            return None;
        }
        let mut targets = self.raw_targets.lock().unwrap_or_else(|e| e.into_inner());
        let at = targets.iter().position(|(i, _)| *i == index)?;
        Some(targets.swap_remove(at).1)
    }

    /// Whether request `index`'s answer closes the connection: nothing is
    /// read after it, or the worker is stopping.
    pub fn closes_after(&self, index: u32) -> bool {
        self.close_at.load(Ordering::Acquire) == index + 1 || self.draining.load(Ordering::Acquire)
    }

    /// The worker stops: see `DRAIN_IDLE`.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the connection is to be parked now (asked once).
    pub fn take_park(&self) -> bool {
        self.park.swap(false, Ordering::Relaxed)
    }

    /// Whether the answer to request `index` decides a protocol switch.
    pub fn decides_switch(&self, index: u32) -> bool {
        self.switch_at.load(Ordering::Acquire) == index + 1
    }

    /// The answer to the request that could switch protocols: it did, or not.
    pub fn decide_switch(&self, switched: bool) {
        let v = if switched { SWITCH_YES } else { SWITCH_NO };
        self.switch.store(v, Ordering::Release);
    }

    fn publish(&self, passed: Passed) {
        match passed {
            Passed::Refused {
                index,
                in_head,
                refusal,
            } => {
                let _ = self.refused.set(Refused {
                    index,
                    in_head,
                    refusal,
                });
            }
            Passed::RawTarget { index, target } => {
                let mut targets = self.raw_targets.lock().unwrap_or_else(|e| e.into_inner());
                targets.push((index, target));
                self.any_raw_target.store(true, Ordering::Release);
            }
            Passed::Closes { index } => self.close_at.store(index + 1, Ordering::Release),
            Passed::MaySwitch { index } => {
                self.switch.store(SWITCH_UNDECIDED, Ordering::Release);
                self.switch_at.store(index + 1, Ordering::Release);
            }
        }
    }
}

pub struct IdleIo<S> {
    inner: S,
    state: Arc<ConnState>,
    limit: Duration,
    /// Traffic since the timer last fired. A flag rather than a timestamp:
    /// the request path reads no clock and moves no timer; the timer is
    /// re-armed once per period, so an idle connection closes between one
    /// and two periods after its last byte.
    active: bool,
    sleep: Pin<Box<Sleep>>,
    gate: Gate,
    header_limit: Duration,
    /// Runs while a request head is partly received.
    head_timer: Option<Pin<Box<Sleep>>>,
    /// The idle limit has been shortened to `DRAIN_IDLE`.
    draining: bool,
    /// The slowest a client may send a body, and read a response.
    body_pace: Pace,
    response_pace: Pace,
    peer: Peer,
    /// The last write hyper tried did not go out: hyper still holds bytes.
    write_blocked: bool,
    /// Bytes hyper had read but not used when the connection was parked;
    /// they passed the gate already.
    replay: Option<Bytes>,
}

/// A socket that can say when it has something to read, without reading.
pub trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

impl ReadReady for tokio::net::UnixStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::UnixStream::poll_read_ready(self, cx)
    }
}

/// A connection is parked only after a read found nothing: rustls then holds
/// no plaintext, and what comes next arrives on the socket.
impl<S: ReadReady> ReadReady for tokio_rustls::server::TlsStream<S> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// A connection's clocks: how long it may sit idle or take over a head,
/// and the slowest it may move a body either way (bytes per second, 0: any).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub idle: Duration,
    pub head: Duration,
    pub min_body_rate: u32,
    pub min_response_rate: u32,
}

impl<S> IdleIo<S> {
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        timing: Timing,
        limits: Limits,
        lenient: Leniency,
        switching: bool,
        peer: Peer,
    ) -> IdleIo<S> {
        IdleIo {
            inner,
            state,
            limit: timing.idle,
            active: false,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + timing.idle)),
            gate: Gate::new(limits, lenient, switching),
            draining: false,
            header_limit: timing.head,
            head_timer: None,
            body_pace: Pace::new(timing.min_body_rate),
            response_pace: Pace::new(timing.min_response_rate),
            peer,
            write_blocked: false,
            replay: None,
        }
    }

    /// Whether hyper may give the socket back now: no request in progress,
    /// nothing of one half-read or half-written, no switch pending, and the
    /// worker crowded and not stopping.
    fn parkable(&self, cx: &mut Context<'_>) -> bool {
        let ready = !self.write_blocked
            && !self.draining
            && self.gate.is_clear()
            && !self.gate.mid_body()
            && !self.gate.finished()
            && !self.gate.awaiting_switch()
            && OPEN.load(Ordering::Relaxed) > CROWDED;
        if !ready {
            return false;
        }
        if self.state.busy.load(Ordering::Relaxed) == 0 {
            return true;
        }
        // Woken when the request still in progress lets go of it.
        self.state.on_idle.register(cx.waker());
        self.state.busy.load(Ordering::Relaxed) == 0
    }

    /// From now on, while the worker stops, a connection idle for
    /// `DRAIN_IDLE` ends.
    fn notice_drain(&mut self) {
        if !self.draining && self.state.draining.load(Ordering::Acquire) {
            self.draining = true;
            self.limit = self.limit.min(DRAIN_IDLE);
            self.active = false;
            self.sleep.as_mut().reset(Instant::now() + self.limit);
        }
    }

    /// Whether the connection has been idle a whole period (the timer is
    /// re-armed, and registered with `cx`, otherwise).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if !self.active {
                return true;
            }
            self.active = false;
            let next = Instant::now() + self.limit;
            self.sleep.as_mut().reset(next);
        }
        false
    }

    /// Hand hyper's unread bytes back when its connection is parked.
    pub fn unread(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.replay = Some(bytes);
        }
    }
}

impl<S: ReadReady> IdleIo<S> {
    /// Parked: wait with the socket alone until the client sends (true:
    /// serve it again), or until the connection is to close (false): idle
    /// for its limit, or for `DRAIN_IDLE` once the worker stops, or at once
    /// when a full worker asks idle connections to make room.
    pub async fn park(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        room: &mut watch::Receiver<u64>,
    ) -> bool {
        if self.replay.is_some() {
            return true;
        }
        loop {
            let draining = self.draining;
            let waited = std::future::poll_fn(|cx| {
                self.notice_drain();
                if self.inner.poll_read_ready(cx).is_ready() {
                    return Poll::Ready(true);
                }
                if self.idle_expired(cx) {
                    return Poll::Ready(false);
                }
                Poll::Pending
            });
            tokio::select! {
                go_on = waited => return go_on,
                _ = stopping(shutdown), if !draining => {
                    self.state.drain();
                    self.notice_drain();
                }
                _ = room.changed() => return false,
            }
        }
    }
}

impl<S> IdleIo<S> {
    /// Start the head timer when a head begins arriving in pieces; stop it
    /// when the head is complete.
    fn track_head(&mut self) {
        let mid = self.gate.mid_head();
        match (&self.head_timer, mid) {
            (None, true) => {
                self.head_timer = Some(Box::pin(tokio::time::sleep(self.header_limit)));
            }
            (Some(_), false) => self.head_timer = None,
            _ => {}
        }
    }

    /// Whether the head in progress is overdue. While a request is being
    /// served the next head's clock does not run out: it restarts.
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = &mut self.head_timer else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.state.busy.load(Ordering::Relaxed) == 0 {
            return true;
        }
        timer.as_mut().reset(Instant::now() + self.header_limit);
        let _ = timer.as_mut().poll(cx);
        false
    }
}

impl<S> IdleIo<S> {
    fn publish(&mut self) {
        if let Some(events) = self.gate.events() {
            for passed in events {
                self.state.publish(passed);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(mut bytes) = this.replay.take() {
            let n = bytes.len().min(buf.remaining());
            buf.put_slice(&bytes.split_to(n));
            this.replay = (!bytes.is_empty()).then_some(bytes);
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.gate.has_ready() {
                this.gate.take_ready(buf);
                return Poll::Ready(Ok(()));
            }
            if this.gate.ends_now() {
                return Poll::Ready(Ok(()));
            }
            if this.gate.finished() {
                // Nothing more passes; hyper closes once it has answered.
                return Poll::Pending;
            }
            if this.gate.awaiting_switch() {
                // The answer is produced on this task: it polls again then.
                match this.state.switch.load(Ordering::Acquire) {
                    SWITCH_UNDECIDED => return Poll::Pending,
                    v => {
                        this.gate.decide(v == SWITCH_YES);
                        this.publish();
                        continue;
                    }
                }
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let read = &buf.filled()[before..];
                    if read.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    this.active = true;
                    this.body_pace.moved(read.len());
                    let passed = if this.gate.is_clear() {
                        this.gate.pass_in_place(read)
                    } else {
                        this.gate.pass_held(read);
                        0
                    };
                    buf.set_filled(before + passed);
                    this.publish();
                    this.track_head();
                    if passed > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if !this.gate.mid_body() {
                        this.body_pace.reset();
                    } else if this.body_pace.stalled(cx) {
                        // A body trickled in to hold a thread: 408, and the
                        // app's read fails, which frees its thread.
                        let rate = this.body_pace.rate();
                        this.gate.refuse_body(Refusal::new(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request body arrived slower than {rate} bytes/s (--min-request-body-rate)"
                            ),
                        ));
                        this.publish();
                        continue;
                    }
                    if this.head_overdue(cx) {
                        // As nginx does (gunicorn sends nothing): 408, then close.
                        this.head_timer = None;
                        this.gate.refuse_head(Refusal::new(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "request head not received within {:?} (--header-timeout)",
                                this.header_limit
                            ),
                        ));
                        this.publish();
                        continue;
                    }
                    this.notice_drain();
                    if this.parkable(cx) {
                        // The connection's task parks it as soon as hyper
                        // returns (see `park`).
                        this.state.park.store(true, Ordering::Relaxed);
                        return Poll::Pending;
                    }
                    // Idle a whole period: report EOF so hyper closes the connection.
                    if this.state.busy.load(Ordering::Relaxed) == 0 && this.idle_expired(cx) {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<S> IdleIo<S> {
    /// After a write: count it, or judge the client's reading if it stalled.
    fn wrote(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.write_blocked = r.is_pending();
        match r {
            Poll::Ready(Ok(n)) => {
                self.active = true;
                self.response_pace.moved(n);
                if self.state.busy.load(Ordering::Relaxed) == 0 {
                    self.response_pace.reset();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.response_pace.stalled(cx) => {
                // A client that does not read would hold the app thread
                // that writes to it: cut it off.
                crate::warning!(
                    "Client {} read its response slower than {} bytes/s (--min-response-rate): connection closed",
                    self.peer.ip_string(),
                    self.response_pace.rate()
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client read its response too slowly",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
