//! The request body, moved from hyper to an app thread.
//!
//! A task on the I/O thread reads hyper's frames and queues them (the `Bytes`
//! themselves, no copy) in a buffer the app thread drains in one go. Reading
//! frames on the thread that decodes them matters: hyper decodes the next
//! chunk only when the body is polled, so an app thread polling directly
//! would cost two thread wake-ups per chunk (a client sending 7-byte chunks
//! made an 8 MB upload take 20 s). The app thread is woken only when it is
//! waiting (through its waker: a thread or a parked greenlet); the queue is
//! bounded, and the task stops when the app side is gone.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::idle::ConnState;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Above this many queued bytes the reader waits for the app to catch up.
const MAX_QUEUED: usize = 256 * 1024;

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    queued: usize,
    /// `Some` once the body ended: `Ok` at its end, `Err` for a malformed body.
    end: Option<Result<(), BodyError>>,
    /// Wake the app side waiting for data (more than one reader may wait
    /// on one body: two threads reading one `wsgi.input`).
    waiters: Vec<Waker>,
    /// The app side dropped its handle: stop reading.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    space: tokio::sync::Notify,
}

/// The app thread's end.
pub struct BodyReader {
    shared: Arc<Shared>,
}

/// What one wait produced.
pub enum Received {
    Data(VecDeque<Bytes>, usize),
    End,
    Failed(BodyError),
}

/// Why a request body could not be read whole, and the status its request gets.
#[derive(Clone, Debug)]
pub struct BodyError {
    pub message: String,
    pub status: u16,
}

/// Start reading `body` on the current (I/O) runtime.
/// `cut_is_end`: a body cut short by the end of the stream ends there (no error).
pub fn spawn(body: Incoming, conn: Arc<ConnState>, cut_is_end: bool) -> BodyReader {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        space: tokio::sync::Notify::new(),
    });
    tokio::spawn(pump(body, shared.clone(), conn, cut_is_end));
    BodyReader { shared }
}

async fn pump(mut body: Incoming, shared: Arc<Shared>, conn: Arc<ConnState>, cut_is_end: bool) {
    let end = loop {
        // Backpressure: wait while the app has plenty queued.
        loop {
            let notified = shared.space.notified();
            {
                let q = lock(&shared.queue);
                if q.closed {
                    return;
                }
                if q.queued < MAX_QUEUED {
                    break;
                }
            }
            notified.await;
        }
        match body.frame().await {
            None => break Ok(()),
            // A body the framing authority cut short says why; hyper only saw it end.
            Some(Err(e)) => match conn.body_refusal() {
                Some(r) => {
                    break Err(BodyError {
                        message: r.reason.to_string(),
                        status: r.status.as_u16(),
                    });
                }
                None if cut_is_end && cut_short(&e) => {
                    crate::warning!(
                        "Request body ended before its Content-Length: the client closed its side"
                    );
                    break Ok(());
                }
                None => {
                    break Err(BodyError {
                        message: e.to_string(),
                        status: 400,
                    });
                }
            },
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let waiters = {
                    let mut q = lock(&shared.queue);
                    q.queued += data.len();
                    q.chunks.push_back(data);
                    std::mem::take(&mut q.waiters)
                };
                waiters.into_iter().for_each(Waker::wake);
            }
        }
    };
    let waiters = {
        let mut q = lock(&shared.queue);
        q.end = Some(end);
        std::mem::take(&mut q.waiters)
    };
    waiters.into_iter().for_each(Waker::wake);
}

/// The stream ended in the middle of the body.
fn cut_short(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BodyReader {
    /// Data or the end of the body, once there is some; takes everything queued.
    pub async fn recv(&self) -> Received {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut q = lock(&self.shared.queue);
        if !q.chunks.is_empty() {
            let n = std::mem::take(&mut q.queued);
            let chunks = std::mem::take(&mut q.chunks);
            q.waiters.retain(|w| !w.will_wake(cx.waker()));
            drop(q);
            self.shared.space.notify_one();
            return Poll::Ready(Received::Data(chunks, n));
        }
        match &q.end {
            Some(Err(e)) => Poll::Ready(Received::Failed(e.clone())),
            Some(Ok(())) => Poll::Ready(Received::End),
            None => {
                if !q.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    q.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.space.notify_one();
    }
}
