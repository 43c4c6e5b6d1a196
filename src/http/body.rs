//! Response bodies handed from an app thread to hyper without copying.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

use super::idle::ConnState;

/// The app failed after its response started: hyper must abort the
/// connection rather than end the body as if it were complete.
#[derive(Debug, thiserror::Error)]
#[error("the application failed while sending the response body")]
pub struct Aborted;

pub type Chunk = Result<Bytes, Aborted>;

enum Kind {
    Full(Option<Bytes>),
    /// `aborted`: an abort was found while coalescing; it is reported next.
    Stream {
        rx: mpsc::Receiver<Chunk>,
        aborted: bool,
    },
}

pub struct ResponseBody {
    kind: Kind,
    _busy: Option<BusyGuard>,
}

impl ResponseBody {
    pub fn full(data: Bytes) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
            _busy: None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub fn stream(rx: mpsc::Receiver<Chunk>) -> ResponseBody {
        ResponseBody {
            kind: Kind::Stream { rx, aborted: false },
            _busy: None,
        }
    }

    /// Keep the connection counted as busy until hyper has written (dropped) the body.
    pub fn with_busy(mut self, guard: BusyGuard) -> ResponseBody {
        self._busy = Some(guard);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match &mut self.kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream { aborted: true, .. } => Poll::Ready(Some(Err(Aborted))),
            Kind::Stream { rx, aborted } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(first))) => {
                    Poll::Ready(Some(Ok(Frame::data(coalesce(rx, first, aborted)))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
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

/// Chunks that are already waiting go out as one frame: an app that yields
/// many small pieces costs one chunk header and one write, not one per piece.
/// Nothing waits for more data, so a stream's latency is unchanged.
fn coalesce(rx: &mut mpsc::Receiver<Chunk>, first: Bytes, aborted: &mut bool) -> Bytes {
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
                *aborted = true;
                break;
            }
            Err(_) => break,
        }
    }
    merged.map_or(first, |m| m.freeze())
}

/// Counts a request as in progress on its connection while alive.
pub struct BusyGuard(Arc<ConnState>);

impl BusyGuard {
    pub fn new(conn: Arc<ConnState>) -> BusyGuard {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        BusyGuard(conn)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}
