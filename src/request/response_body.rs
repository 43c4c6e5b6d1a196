//! Response bodies handed from an app thread to hyper without copying.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

use super::deadline::Timer;

/// The app failed after its response started: hyper must abort the
/// connection rather than end the body as if it were complete.
#[derive(Debug, thiserror::Error)]
#[error("the application failed while sending the response body")]
pub struct Aborted;

pub type Chunk = Result<Bytes, Aborted>;

enum Kind {
    Full(Option<Bytes>),
    Stream {
        rx: mpsc::Receiver<Chunk>,
        abort: Abort,
    },
}

/// Where a stream stands with an abort from the app.
///
/// hyper drops its write buffer when a body fails, and it polls the body
/// again right after buffering a frame, before flushing. An abort reported as
/// soon as it is seen would so swallow the head and the chunks before it,
/// which the client must get (PEP 3333: the error is re-raised after output
/// began, so the client sees a cut body, not nothing). The body first answers
/// `Pending` once, which lets hyper flush, and reports the abort on the next
/// poll.
enum Abort {
    None,
    /// Seen; hyper still has to flush what it holds.
    Seen,
    /// Hyper has flushed; report it.
    Due,
}

pub struct ResponseBody {
    kind: Kind,
    _busy: Option<BusyGuard>,
    /// `--request-timeout`: a stream still open when it passes is cut.
    timer: Option<Timer>,
}

impl ResponseBody {
    pub fn full(data: Bytes) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
            _busy: None,
            timer: None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub fn stream(rx: mpsc::Receiver<Chunk>) -> ResponseBody {
        ResponseBody {
            kind: Kind::Stream {
                rx,
                abort: Abort::None,
            },
            _busy: None,
            timer: None,
        }
    }

    /// Keep the connection counted as busy until hyper has written (dropped) the body.
    pub fn with_busy(mut self, guard: BusyGuard) -> ResponseBody {
        self._busy = Some(guard);
        self
    }

    /// The request's deadline goes on while the body streams (a complete
    /// body is written without waiting for the app).
    pub fn keep_timer(&mut self, timer: Timer) {
        if matches!(self.kind, Kind::Stream { .. }) {
            self.timer = Some(timer);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        let this = &mut *self;
        if let Some(timer) = &mut this.timer
            && timer.poll_expired(cx, true).is_ready()
        {
            // The head is out: only a cut connection tells the client.
            this.timer = None;
            return Poll::Ready(Some(Err(Aborted)));
        }
        match &mut this.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream {
                abort: Abort::Due, ..
            } => Poll::Ready(Some(Err(Aborted))),
            Kind::Stream {
                abort: abort @ Abort::Seen,
                ..
            } => flush_first(abort, cx),
            Kind::Stream { rx, abort } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(first))) => {
                    Poll::Ready(Some(Ok(Frame::data(coalesce(rx, first, abort)))))
                }
                Poll::Ready(Some(Err(Aborted))) => flush_first(abort, cx),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

/// Answers `Pending` once so that hyper flushes, and wakes itself to report
/// the abort on the next poll.
fn flush_first(
    abort: &mut Abort,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
    *abort = Abort::Due;
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Chunks that are already waiting go out as one frame: an app that yields
/// many small pieces costs one chunk header and one write, not one per piece.
/// Nothing waits for more data, so a stream's latency is unchanged.
fn coalesce(rx: &mut mpsc::Receiver<Chunk>, first: Bytes, abort: &mut Abort) -> Bytes {
    const MAX: usize = 64 * 1024;
    let mut merged: Option<bytes::BytesMut> = None;
    while merged.as_ref().map_or(first.len(), |m| m.len()) < MAX {
        match rx.try_recv() {
            Ok(Ok(next)) => merged
                .get_or_insert_with(|| {
                    let mut m =
                        bytes::BytesMut::with_capacity((first.len() + next.len()).max(4096));
                    m.extend_from_slice(&first);
                    m
                })
                .extend_from_slice(&next),
            Ok(Err(Aborted)) => {
                *abort = Abort::Seen;
                break;
            }
            Err(_) => break,
        }
    }
    merged.map_or(first, |m| m.freeze())
}

/// A connection's count of requests in progress (kept by the I/O side).
pub trait Occupancy: Send + Sync {
    fn enter(&self);
    fn leave(&self);
}

/// Counts a request as in progress on its connection while alive.
pub struct BusyGuard(Arc<dyn Occupancy>);

impl BusyGuard {
    pub fn new(conn: Arc<dyn Occupancy>) -> BusyGuard {
        conn.enter();
        BusyGuard(conn)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;
    use std::task::{Wake, Waker};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn poll(body: &mut ResponseBody, cx: &mut Context<'_>) -> &'static str {
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) => "data",
            Poll::Ready(Some(Err(Aborted))) => "abort",
            Poll::Ready(None) => "end",
            Poll::Pending => "pending",
        }
    }

    #[test]
    fn an_abort_waits_one_poll_so_that_hyper_flushes_what_came_before() {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);

        // Coalesced: the abort is found behind the data in the same poll.
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"partial"))).unwrap();
        tx.try_send(Err(Aborted)).unwrap();
        let mut body = ResponseBody::stream(rx);
        assert_eq!(poll(&mut body, &mut cx), "data");
        assert_eq!(poll(&mut body, &mut cx), "pending");
        assert_eq!(counter.0.load(Ordering::Relaxed), 1, "must wake itself");
        assert_eq!(poll(&mut body, &mut cx), "abort");

        // Received on its own, after data hyper may not have flushed yet.
        let (tx, rx) = mpsc::channel(4);
        let mut body = ResponseBody::stream(rx);
        tx.try_send(Ok(Bytes::from_static(b"partial"))).unwrap();
        assert_eq!(poll(&mut body, &mut cx), "data");
        tx.try_send(Err(Aborted)).unwrap();
        assert_eq!(poll(&mut body, &mut cx), "pending");
        assert_eq!(counter.0.load(Ordering::Relaxed), 2, "must wake itself");
        assert_eq!(poll(&mut body, &mut cx), "abort");
    }
}
