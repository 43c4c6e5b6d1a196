//! The app's end of a request body: a bounded queue of the body's chunks
//! (the `Bytes` themselves, no copy) that the I/O thread fills
//! (`crate::http::request_body`) and an app thread drains in one go. The app
//! side is woken only when it is waiting (through its waker: a thread or a
//! parked greenlet); more than one reader may wait on one body.

use bytes::Bytes;
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

/// The I/O thread's end.
pub struct BodyFeed {
    shared: Arc<Shared>,
}

/// A body's two ends.
pub fn channel() -> (BodyFeed, BodyReader) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        space: tokio::sync::Notify::new(),
    });
    (
        BodyFeed {
            shared: shared.clone(),
        },
        BodyReader { shared },
    )
}

impl BodyFeed {
    /// Wait while the app has plenty queued (backpressure); false once the
    /// app side is gone and reading should stop.
    pub async fn room(&self) -> bool {
        loop {
            let notified = self.shared.space.notified();
            {
                let q = lock(&self.shared.queue);
                if q.closed {
                    return false;
                }
                if q.queued < MAX_QUEUED {
                    return true;
                }
            }
            notified.await;
        }
    }

    pub fn push(&self, data: Bytes) {
        let waiters = {
            let mut q = lock(&self.shared.queue);
            q.queued += data.len();
            q.chunks.push_back(data);
            std::mem::take(&mut q.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The body is over: whole (`Ok`) or not.
    pub fn end(self, end: Result<(), BodyError>) {
        let waiters = {
            let mut q = lock(&self.shared.queue);
            q.end = Some(end);
            std::mem::take(&mut q.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }
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
