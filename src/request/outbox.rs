//! Finished responses on their way back to the I/O thread, a few at a time.
//!
//! Under a framework like Flask an app thread finishes a response every
//! ~70 µs while more requests wait in its queue. Sent one by one, each
//! response wakes the sleeping I/O thread, and reaches the client alone, so
//! the client's next request wakes it again (measured: 1.5 sleeps of the I/O
//! thread per request). So while its queue is not empty, a drainer holds
//! the responses of requests that ran through without blocking, and the I/O
//! thread sends them together. An event loop (asgi's, or the gevent hub)
//! does the same with the complete responses of one pass of the loop: each
//! wake-up of the I/O thread from the loop's thread also hands the loop's
//! core to it on a busy machine (the woken thread preempts the waker).
//!
//! A held response never waits on the app: it leaves at the first of
//! - the drainer's queue running empty, or the loop's next pass (either
//!   asks for a flush),
//! - `HOLD_MAX` responses held,
//! - another app thread taking the GIL (the drainer blocked or was
//!   preempted, so the request it went on with may be long),
//! - the I/O thread's tick, every `TICK` while requests are in flight
//!   (and, for app threads, `LINGER_TICKS` ticks after the last one): an
//!   app's `close()`, an asgi task that goes on computing after its
//!   response, or a long callback before the loop's flush, delays nothing
//!   by more than that.
//!
//! (Sending them whenever the I/O thread is about to sleep was tried: it
//! sleeps after every request it reads, so that sent them one by one again.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

use crate::request::Finished;

/// Held responses that make a flush worth a wake-up.
const HOLD_MAX: usize = 16;

/// The longest a response waits while the I/O thread sleeps.
const TICK: Duration = Duration::from_millis(1);

/// Ticks with nothing in flight before app threads' tick stops until the
/// next request. Not at once: one client's requests one after another
/// would otherwise restart it for every request. An event loop flushes
/// at the end of each pass, so its tick is only a safety net and stops
/// after one idle tick: an idle worker sleeps until its next request.
pub const LINGER_TICKS: u32 = 100;

#[derive(Default)]
pub struct Outbox {
    held: Mutex<Vec<Finished>>,
    /// `held.len()`, read without the lock.
    count: AtomicUsize,
    /// App threads (or the loop) ask the I/O thread to send what is held.
    flush: Notify,
    /// The I/O thread's first request after an idle spell: start ticking.
    busy: Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Finished>> {
        // Pushes and drains cannot leave the list half-done; carry on after a panic.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// App thread or loop: keep a response until the next flush.
    pub fn hold(&self, done: Finished) {
        let mut held = self.lock();
        held.push(done);
        self.count.store(held.len(), Ordering::Release);
        let full = held.len() >= HOLD_MAX;
        drop(held);
        if full {
            self.flush.notify_one();
        }
    }

    /// Is anything held?
    pub fn has_held(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// App thread or loop: have the I/O thread send what is held, if anything.
    pub fn request_flush(&self) {
        if self.count.load(Ordering::Acquire) > 0 {
            self.flush.notify_one();
        }
    }

    /// I/O thread: send what is held. Called on the I/O thread (its tick, or
    /// just before it parks), the wake-ups stay on that thread: no cross-thread
    /// signal per response.
    pub fn send_held(&self) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut held = self.lock();
        self.count.store(0, Ordering::Release);
        let batch = std::mem::take(&mut *held);
        drop(held);
        for done in batch {
            done.send();
        }
    }

    /// I/O thread: a request went to the app while none was in flight.
    pub fn busy(&self) {
        self.busy.notify_one();
    }

    /// I/O thread task: send held responses when asked, and every `TICK`
    /// while requests are in flight (`in_flight` is the worker's count) and
    /// for `linger` idle ticks after.
    pub async fn run(&self, in_flight: &AtomicU32, linger: u32) {
        let mut idle_ticks = 0;
        loop {
            if idle_ticks > linger {
                // Only the I/O thread starts requests, so none can start
                // between the last check and this wait.
                self.busy.notified().await;
                idle_ticks = 0;
            }
            tokio::select! {
                _ = self.flush.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            self.send_held();
            let idle =
                self.count.load(Ordering::Acquire) == 0 && in_flight.load(Ordering::Relaxed) == 0;
            idle_ticks = if idle { idle_ticks + 1 } else { 0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ResponseBody;
    use http::Response;
    use tokio::sync::oneshot;

    fn finished() -> (Finished, oneshot::Receiver<Response<ResponseBody>>) {
        let (reply, rx) = oneshot::channel();
        let response = Response::new(ResponseBody::empty());
        (Finished { reply, response }, rx)
    }

    #[test]
    fn held_responses_leave_together_when_sent() {
        let outbox = Outbox::default();
        let (a, mut ra) = finished();
        let (b, mut rb) = finished();
        outbox.hold(a);
        outbox.hold(b);
        assert!(ra.try_recv().is_err(), "held, not sent");
        outbox.send_held();
        assert!(ra.try_recv().is_ok() && rb.try_recv().is_ok());
        assert_eq!(outbox.count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_tick_sends_what_waits_while_requests_are_in_flight() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let outbox = std::sync::Arc::new(Outbox::default());
            let in_flight = std::sync::Arc::new(AtomicU32::new(1));
            let (a, ra) = finished();
            outbox.hold(a);
            let (o, f) = (outbox.clone(), in_flight.clone());
            tokio::spawn(async move { o.run(&f, 0).await });
            // Nobody asks for a flush: the tick must send it.
            let got = tokio::time::timeout(Duration::from_millis(500), ra).await;
            assert!(
                matches!(got, Ok(Ok(_))),
                "a held response waited past the tick"
            );
        });
    }
}
