//! The socket under hyper: closes connections that sit idle between requests
//! (`--keep-alive`), cuts off a client whose request head takes longer than
//! `--header-timeout` to arrive, and lets the framing scanner see request
//! heads first.
//!
//! hyper has no idle timeout of its own for HTTP/1, so the socket is wrapped:
//! while no request is in progress on the connection, a read that stays
//! pending past the idle limit ends as EOF and hyper closes the connection.
//! hyper's own header read timeout is not used: it runs from the moment hyper
//! waits for a head, so it also cut idle keep-alive connections short, and it
//! reads the clock and allocates and registers a timer for every request.
//! Here a head timer is armed only when a head arrives split across reads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::{FramingScanner, Violation};

/// Shared by a connection's socket wrapper and the requests on it.
#[derive(Default)]
pub struct ConnState {
    pub busy: AtomicU32,
    /// Requests seen by the service so far (the next one's index).
    pub requests: AtomicU32,
    /// The first refused request head: (index + 1) << 8 | violation code.
    refused: AtomicU64,
    /// The connection became a WebSocket: its bytes are no HTTP heads.
    pub upgraded: AtomicBool,
}

impl ConnState {
    /// Whether the request with this index must be refused, and why.
    pub fn refusal(&self, index: u32) -> Option<Violation> {
        let r = self.refused.load(Ordering::Acquire);
        if r != 0 && (r >> 8) as u32 == index + 1 {
            Violation::from_code((r & 0xff) as u8)
        } else {
            None
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
    scanner: Option<FramingScanner>,
    header_limit: Duration,
    /// Runs while a request head is partly received.
    head_timer: Option<Pin<Box<Sleep>>>,
}

/// The read error that ends a connection whose request head took longer
/// than `--header-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request head not received within {0:?} (--header-timeout)")]
pub struct HeadTimeout(Duration);

impl<S> IdleIo<S> {
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        limit: Duration,
        header_limit: Duration,
        max_headers: usize,
    ) -> IdleIo<S> {
        IdleIo {
            inner,
            state,
            limit,
            active: false,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            scanner: Some(FramingScanner::new(max_headers)),
            header_limit,
            head_timer: None,
        }
    }

    /// Start the head timer when a head begins arriving in pieces; stop it
    /// when the head is complete.
    fn track_head(&mut self) {
        let mid = self.scanner.as_ref().is_some_and(FramingScanner::mid_head);
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

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.active = true;
                    if this.scanner.is_some() && this.state.upgraded.load(Ordering::Relaxed) {
                        this.scanner = None;
                    }
                    if let Some(scanner) = &mut this.scanner
                        && let Some((index, why)) = scanner.feed(&buf.filled()[before..])
                    {
                        let code = (u64::from(index) + 1) << 8 | why as u64;
                        this.state.refused.store(code, Ordering::Release);
                        this.scanner = None;
                    }
                    this.track_head();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.head_overdue(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        HeadTimeout(this.header_limit),
                    )));
                }
                if this.state.busy.load(Ordering::Relaxed) == 0 {
                    while this.sleep.as_mut().poll(cx).is_ready() {
                        if !this.active {
                            // Idle a whole period: report EOF so hyper closes the connection.
                            return Poll::Ready(Ok(()));
                        }
                        this.active = false;
                        let next = Instant::now() + this.limit;
                        this.sleep.as_mut().reset(next);
                    }
                }
                Poll::Pending
            }
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
        if matches!(r, Poll::Ready(Ok(_))) {
            self.active = true;
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(_))) {
            self.active = true;
        }
        r
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
