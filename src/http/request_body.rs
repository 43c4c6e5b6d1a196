//! The request body, moved from hyper to an app thread.
//!
//! A task on the I/O thread reads hyper's frames and queues them (the `Bytes`
//! themselves, no copy) in a buffer the app thread drains in one go. Reading
//! frames on the thread that decodes them matters: hyper decodes the next
//! chunk only when the body is polled, so an app thread polling directly
//! would cost two thread wake-ups per chunk (a client sending 7-byte chunks
//! made an 8 MB upload take 20 s). The app thread is woken only when it is
//! waiting; the queue is bounded, and the task stops when the app side is gone.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

/// Above this many queued bytes the reader waits for the app to catch up.
const MAX_QUEUED: usize = 256 * 1024;

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    queued: usize,
    /// `Some` once the body ended: `Ok` at its end, `Err` for a malformed body.
    end: Option<Result<(), String>>,
    /// The app thread sleeps on `ready`.
    waiting: bool,
    /// The app side dropped its handle: stop reading.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
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
    Failed(String),
}

/// Start reading `body` on the current (I/O) runtime.
pub fn spawn(body: Incoming) -> BodyReader {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        ready: Condvar::new(),
        space: tokio::sync::Notify::new(),
    });
    tokio::spawn(pump(body, shared.clone()));
    BodyReader { shared }
}

async fn pump(mut body: Incoming, shared: Arc<Shared>) {
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
            Some(Err(e)) => break Err(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let mut q = lock(&shared.queue);
                q.queued += data.len();
                q.chunks.push_back(data);
                if q.waiting {
                    shared.ready.notify_one();
                }
            }
        }
    };
    let mut q = lock(&shared.queue);
    q.end = Some(end);
    shared.ready.notify_one();
}

fn lock(m: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BodyReader {
    /// Block (the caller has released the GIL) until data or the end arrives;
    /// takes everything queued.
    pub fn recv(&self) -> Received {
        let mut q = lock(&self.shared.queue);
        while q.chunks.is_empty() && q.end.is_none() {
            q.waiting = true;
            q = self.shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.waiting = false;
        if !q.chunks.is_empty() {
            let n = std::mem::take(&mut q.queued);
            let chunks = std::mem::take(&mut q.chunks);
            drop(q);
            self.shared.space.notify_one();
            return Received::Data(chunks, n);
        }
        match q.end.clone() {
            Some(Err(e)) => Received::Failed(e),
            _ => Received::End,
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.space.notify_one();
    }
}
