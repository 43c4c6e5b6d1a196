//! The socket under hyper: closes connections that sit idle between requests
//! (`--keep-alive`) and lets the framing scanner see request heads first.
//!
//! hyper has no idle timeout of its own for HTTP/1, so the socket is wrapped:
//! while no request is in progress on the connection, a read that stays
//! pending past the idle limit ends as EOF and hyper closes the connection.

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
}

impl<S> IdleIo<S> {
    pub fn new(inner: S, state: Arc<ConnState>, limit: Duration, max_headers: usize) -> IdleIo<S> {
        IdleIo {
            inner,
            state,
            limit,
            active: false,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            scanner: Some(FramingScanner::new(max_headers)),
        }
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
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
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
