//! `--request-timeout`: a request's deadline, shared by the I/O side, which
//! answers the client when it passes (504 before the response head, a cut
//! connection after it), and the app side, which stops the request in the
//! way its worker class allows (see `Dispatch::expired`).
//!
//! Nothing here exists when the setting is off: a request without a
//! deadline carries `None` and costs no timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

use super::Dispatch;

const RUNNING: u8 = 0;
const BEFORE_HEAD: u8 = 1;
const AFTER_HEAD: u8 = 2;

static IDS: AtomicU64 = AtomicU64::new(1);

/// One request's deadline.
pub struct Deadline {
    id: u64,
    /// "GET /path", for the log line.
    what: String,
    limit: Duration,
    state: AtomicU8,
    /// An app thread runs it past the deadline and cannot be stopped.
    stuck: AtomicBool,
}

impl Deadline {
    pub fn new(what: String, limit: Duration) -> Arc<Deadline> {
        Arc::new(Deadline {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            what,
            limit,
            state: AtomicU8::new(RUNNING),
            stuck: AtomicBool::new(false),
        })
    }

    /// Names the request between the I/O side and the event loop.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// It passed: the client was answered (or cut off) by the I/O side.
    pub fn expired(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    /// The I/O side answered 504 itself: the app's response never went out.
    pub fn answered_504(&self) -> bool {
        self.state.load(Ordering::Acquire) == BEFORE_HEAD
    }

    /// The one log line of a request that ran past its deadline: what it
    /// was, what the client got, how it is stopped, and where it was stuck.
    pub fn report(&self, stopping: &str, stack: Option<&str>) {
        let answered = if self.answered_504() {
            "answered 504"
        } else {
            "its response was cut off"
        };
        let stack = stack.map_or_else(String::new, |s| format!("\n{}", s.trim_end()));
        crate::error!(
            "Request timeout: {} (pid:{}) ran past --request-timeout ({} s), {answered}; {stopping}{stack}",
            self.what,
            std::process::id(),
            self.limit.as_secs_f64(),
        );
    }

    /// An app thread is stuck in it: counted in `stuck` until it returns.
    pub fn mark_stuck(&self, stuck: &AtomicU32) {
        // Counted before the mark, so that `take_stuck` never uncounts first.
        stuck.fetch_add(1, Ordering::AcqRel);
        self.stuck.store(true, Ordering::Release);
    }

    /// It returned after all: uncount it (app side, once it is over).
    pub fn take_stuck(&self, stuck: &AtomicU32) {
        if self.stuck.swap(false, Ordering::AcqRel) {
            stuck.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn expire(&self, state: u8) -> bool {
        self.state
            .compare_exchange(RUNNING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The I/O side's clock for one request: it moves from the wait for the
/// response head into the response body when the head comes first.
pub struct Timer {
    sleep: Pin<Box<Sleep>>,
    deadline: Arc<Deadline>,
    dispatch: Arc<dyn Dispatch>,
}

impl Timer {
    pub fn new(started: Instant, deadline: Arc<Deadline>, dispatch: Arc<dyn Dispatch>) -> Timer {
        let at = tokio::time::Instant::from_std(started + deadline.limit);
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            deadline,
            dispatch,
        }
    }

    /// Ready once the deadline passed; the app side is told then, once.
    /// `head_sent` says which answer the client gets (504, or a cut).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, head_sent: bool) -> Poll<()> {
        if self.deadline.expired() {
            return Poll::Ready(());
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self
            .deadline
            .expire(if head_sent { AFTER_HEAD } else { BEFORE_HEAD })
        {
            self.dispatch.expired(self.deadline.clone());
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Job;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Told(Mutex<Vec<u64>>);

    impl Dispatch for Told {
        fn send(&self, _: Job) {}
        fn expired(&self, deadline: Arc<Deadline>) {
            self.0.lock().unwrap().push(deadline.id());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_app_side_is_told_once_and_learns_which_answer_went_out() {
        let told = Arc::new(Told::default());
        let deadline = Deadline::new("GET /slow".into(), Duration::from_secs(2));
        let mut timer = Timer::new(Instant::now(), deadline.clone(), told.clone());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(timer.poll_expired(&mut cx, false).is_pending());
        assert!(!deadline.expired());
        tokio::time::advance(Duration::from_secs(3)).await;
        // The clock of a paused runtime moved; std's did not, so the
        // deadline is the tokio one.
        assert!(timer.poll_expired(&mut cx, false).is_ready());
        assert!(timer.poll_expired(&mut cx, true).is_ready());
        assert!(deadline.expired() && deadline.answered_504());
        assert_eq!(*told.0.lock().unwrap(), vec![deadline.id()]);
    }
}
