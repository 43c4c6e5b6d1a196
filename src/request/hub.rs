//! What the I/O thread and a Python event loop on the worker's main thread
//! (the gevent hub, or an asyncio loop for asgi) share. The I/O thread hands
//! requests over and wakes parked greenlets or tasks through an inbox and an
//! eventfd the loop watches, so the loop never waits on a lock held by Rust
//! code and the I/O thread never takes the GIL. The loop itself lives with
//! the worker (`worker::event_loop`).

use nix::sys::eventfd::{EfdFlags, EventFd};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};
use tokio::sync::watch;

use super::outbox::Outbox;
use super::{Deadline, Job};

/// Where the loop is in its life, as the I/O thread sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Setting up (asgi: lifespan startup): do not accept yet.
    Starting,
    Serving,
    /// Startup failed: the worker exits as one that could not boot.
    Failed,
    /// Asked to stop (asgi: lifespan shutdown runs).
    Stopping,
    Stopped,
}

/// What the I/O thread and the loop share.
pub struct Hub {
    wake_fd: EventFd,
    /// The eventfd was written since the loop last drained: no need to write again.
    signalled: AtomicBool,
    inbox: Mutex<Inbox>,
    tokens: AtomicU64,
    /// gevent: the Python function that parks the current greenlet under a token.
    park: OnceLock<Py<PyAny>>,
    /// Ticks of the loop's heartbeat.
    beats: AtomicU64,
    phase: watch::Sender<Phase>,
    /// `--request-timeout` is set: the loop keeps track of what runs each request.
    pub timed: bool,
    /// Complete responses held until the loop's next pass (asgi, gevent).
    pub outbox: Arc<Outbox>,
    /// The loop has a flush of the outbox scheduled.
    flush_pending: AtomicBool,
}

/// What arrived for the loop since it last looked.
#[derive(Default)]
pub struct Inbox {
    pub jobs: Vec<Job>,
    pub woken: Vec<u64>,
    /// Requests past `--request-timeout`, to stop.
    pub expired: Vec<Arc<Deadline>>,
    pub stop: bool,
}

impl Hub {
    pub fn new(timed: bool) -> std::io::Result<Arc<Hub>> {
        let wake_fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Arc::new(Hub {
            wake_fd,
            signalled: AtomicBool::new(false),
            inbox: Mutex::new(Inbox::default()),
            tokens: AtomicU64::new(1),
            park: OnceLock::new(),
            beats: AtomicU64::new(0),
            phase: watch::Sender::new(Phase::Starting),
            timed,
            outbox: Arc::default(),
            flush_pending: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request for a new greenlet or task (I/O thread).
    pub fn submit(&self, job: Job) {
        self.lock().jobs.push(job);
        self.signal();
    }

    /// A request ran past `--request-timeout` (I/O thread).
    pub fn expire(&self, deadline: Arc<Deadline>) {
        self.lock().expired.push(deadline);
        self.signal();
    }

    fn wake(&self, token: u64) {
        self.lock().woken.push(token);
        self.signal();
    }

    fn signal(&self) {
        if !self.signalled.swap(true, Ordering::SeqCst) {
            // Cannot fail short of the counter overflowing, which take() prevents.
            let _ = self.wake_fd.write(1);
        }
    }

    /// Loop: should it schedule a flush for what is held (none is pending)?
    pub fn flush_wanted(&self) -> bool {
        self.outbox.has_held() && !self.flush_pending.swap(true, Ordering::AcqRel)
    }

    /// Loop: the scheduled flush.
    pub fn flush(&self) {
        self.flush_pending.store(false, Ordering::Release);
        self.outbox.request_flush();
    }

    pub fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    pub fn waker(self: &Arc<Self>, token: u64) -> Waker {
        Waker::from(Arc::new(TokenWaker {
            hub: self.clone(),
            token,
        }))
    }

    /// gevent: switch to the hub until `token` is woken (runs in a request's greenlet).
    pub fn park(&self, py: Python<'_>, token: u64) -> PyResult<()> {
        let park = self
            .park
            .get()
            .ok_or_else(|| PyRuntimeError::new_err("the gevent hub is not running"))?;
        park.call1(py, (token,))?;
        Ok(())
    }

    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// The loop's phase once it is no longer `Starting` (I/O thread).
    pub async fn started(&self) -> Phase {
        let mut rx = self.phase.subscribe();
        rx.wait_for(|p| *p != Phase::Starting)
            .await
            .map(|p| *p)
            .unwrap_or(Phase::Failed)
    }

    /// Ask the loop to wind down (asgi: lifespan shutdown) and wait until it has.
    pub async fn stop(&self) {
        let mut rx = self.phase.subscribe();
        if *rx.borrow() == Phase::Serving {
            self.phase.send_replace(Phase::Stopping);
            self.lock().stop = true;
            self.signal();
        }
        let _ = rx
            .wait_for(|p| matches!(p, Phase::Stopped | Phase::Failed))
            .await;
    }

    /// What arrived since the last call (the loop's side, after a wake-up).
    pub fn take(&self) -> Inbox {
        // Read the eventfd, then clear the flag, then take the inbox: a push
        // after the clear writes the eventfd again (another wake-up), and one
        // before it is in what we take. Clearing first could swallow the
        // write of a later push and strand it.
        // EAGAIN (nothing to read) is fine.
        let _ = self.wake_fd.read();
        self.signalled.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.lock())
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// The loop moved on in its life (the loop's side).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// The descriptor the loop watches for wake-ups.
    pub fn fileno(&self) -> i32 {
        self.wake_fd.as_raw_fd()
    }

    /// gevent: how to park a greenlet, given by the loop once it runs.
    pub fn set_park(&self, park: Py<PyAny>) {
        let _ = self.park.set(park);
    }

    /// One tick of the loop's heartbeat.
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }
}

struct TokenWaker {
    hub: Arc<Hub>,
    token: u64,
}

impl Wake for TokenWaker {
    fn wake(self: Arc<Self>) {
        self.hub.wake(self.token);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.hub.wake(self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;
    use std::time::Instant;

    /// Wait until the eventfd is readable; false after a second of silence.
    fn readable(hub: &Hub) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(hub.wake_fd.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(1000u16)).is_ok_and(|n| n > 0)
    }

    /// The I/O thread wakes tokens as fast as it can while the loop drains:
    /// every token must arrive, and no wake-up may be lost (a lost one shows
    /// as a second of silence with tokens still in the inbox).
    #[test]
    fn no_wake_up_is_lost_between_the_threads() {
        const N: u64 = 200_000;
        let hub = Hub::new(false).unwrap();
        let producer = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for t in 0..N {
                    hub.wake(t);
                }
            })
        };
        let t0 = Instant::now();
        let mut seen = 0u64;
        while seen < N {
            assert!(
                readable(&hub),
                "wake-up lost: {seen} of {N} tokens seen, {} waiting",
                hub.lock().woken.len()
            );
            seen += hub.take().woken.len() as u64;
            assert!(t0.elapsed() < Duration::from_secs(60));
        }
        producer.join().unwrap();
        assert_eq!(seen, N);
    }
}
