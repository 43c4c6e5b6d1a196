//! The app threads of a sync or gthread worker, and the queue the I/O thread
//! hands them requests through.
//!
//! Only one thread can run Python at a time, so a request is worth handing to
//! another thread only when the thread that holds the GIL is stuck outside
//! Python (a socket, a sleep, a lock). The queue therefore keeps one thread
//! draining it with the GIL, and calls at most one more at a time: that
//! "seeker" waits for the GIL *without* a request in hand. If the drainer
//! blocks, it lets the GIL go and the seeker takes over the queue at once. If
//! the drainer is busy in Python, CPython's switch interval eventually forces
//! the GIL over to the seeker; the seeker notices the long wait and gives the
//! GIL straight back, so a CPU-bound app runs each request to its end on one
//! thread instead of being preempted by every idle thread in turn (that
//! preemption was most of gthread's p99 under Flask). A seeker that got the
//! GIL quickly also gives it back when the one drainer is runnable rather
//! than asleep in the kernel: with other processes on the cores, the GIL
//! sometimes changes hands early while the drainer is still in Python.
//!
//! Waking a sleeping drainer costs both threads a context switch, and the
//! I/O thread is often preempted by the thread it woke. When the app answers
//! faster than the I/O thread reads requests (a hello world), a drainer
//! woken at the first push empties the queue, sleeps, and is woken again by
//! the next push: measured, 0.3 sleeps of app threads and 0.27 preemptions
//! of the I/O thread per request. So while the app is quick, the I/O thread
//! calls the drainer only after its turn over the ready connections (a task
//! queued behind them), and the drainer finds all of that turn's requests
//! waiting. A slow app (Flask) is woken at once: it is the bottleneck, and
//! every microsecond it waits for the I/O thread's turn is lost.

use pyo3::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::request::outbox::Outbox;
use crate::request::{Deadline, Job, Stats};
use crate::sys;
use crate::wsgi::WsgiApp;

/// A seeker that waited this long for the GIL got it by a forced switch
/// (CPython's default switch interval is 5 ms), not because the drainer
/// blocked.
const FORCED_SWITCH: Duration = Duration::from_millis(4);

/// The longest a seeker that gave the GIL back stays out of the way.
const STAND_DOWN: Duration = Duration::from_millis(10);

/// An app that takes less than this per request (wall time over a drain)
/// keeps up with the I/O thread, whose own cost per request is about this
/// on a 2-core machine: its drainer is called after the I/O thread's turn.
const QUICK_APP: Duration = Duration::from_micros(15);

/// Asks for this worker to be replaced.
pub type Replace = Arc<dyn Fn() + Send + Sync>;

pub struct Queue {
    state: Mutex<State>,
    called: Condvar,
    /// Where drainers leave responses while more requests wait (when
    /// `batch`: a sync worker's queue never holds a second request).
    pub outbox: Arc<Outbox>,
    pub batch: bool,
    /// Times an app thread of this pool took the GIL.
    takeovers: AtomicU64,
    /// The last drain took less than `QUICK_APP` per request.
    quick: AtomicBool,
    /// Calls left for the I/O thread to make at the end of its turn.
    deferred_call: tokio::sync::Notify,
    /// `--request-timeout` caught an app thread in a request: replace the
    /// worker (and count it in these stats).
    stuck: OnceLock<(Arc<Stats>, Replace)>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads asleep until called.
    sleeping: u32,
    /// Calls made and not yet taken by a sleeper.
    calls: u32,
    /// Called threads that have not taken a request yet (at most one).
    seeking: u32,
    /// Threads working through the queue (running a request, or between
    /// two), by thread id.
    drainers: Vec<i32>,
    /// Requests the drainers have finished (counts, wraps harmlessly).
    progress: u64,
    /// `progress` when a seeker last gave the GIL back: until a drainer
    /// finishes a request, calling another seeker would only interrupt it again.
    gave_back: Option<u64>,
}

impl State {
    /// Wake a sleeper to seek the GIL, unless one is already on its way.
    fn call(&mut self) -> bool {
        if self.seeking == 0 && self.sleeping > 0 && self.gave_back != Some(self.progress) {
            self.sleeping -= 1;
            self.calls += 1;
            self.seeking += 1;
            true
        } else {
            false
        }
    }
}

impl Queue {
    fn new(batch: bool) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            called: Condvar::new(),
            outbox: Arc::default(),
            batch,
            takeovers: AtomicU64::new(0),
            quick: AtomicBool::new(false),
            deferred_call: tokio::sync::Notify::new(),
            stuck: OnceLock::new(),
        }
    }

    /// What to do once an app thread is stuck past `--request-timeout` (on
    /// the I/O thread: it must not block).
    pub fn when_stuck(&self, stats: Arc<Stats>, replace: Replace) {
        let _ = self.stuck.set((stats, replace));
    }

    /// A request ran past `--request-timeout` (I/O thread). Still queued,
    /// it is skipped when its turn comes. Running, its thread cannot be
    /// stopped safely from outside (an exception raised into it could
    /// land in any `finally`, a lock held, a C call): the worker is
    /// replaced, and its other requests finish meanwhile.
    pub fn expired(&self, deadline: Arc<Deadline>) {
        let queued = self.lock().jobs.iter().any(|j| {
            j.deadline
                .as_ref()
                .is_some_and(|d| Arc::ptr_eq(d, &deadline))
        });
        if queued {
            deadline.report("it never started: every app thread was busy", None);
            return;
        }
        // At once, on this thread: a sync worker must stop accepting before
        // this request's 504 frees its connection slot.
        let stats = self.stuck.get().map(|(stats, replace)| {
            replace();
            stats.clone()
        });
        // The stacks need the GIL, which the I/O thread must not wait for.
        let spawned = std::thread::Builder::new()
            .name("ferricorn-timeout".into())
            .spawn(move || {
                let stacks = Python::attach(|py| {
                    thread_stacks(py).unwrap_or_else(|e| {
                        format!("(the stacks could not be read: {})", crate::python::traceback_text(py, &e))
                    })
                });
                deadline.report(
                    "an app thread cannot be stopped: replacing the worker once its other requests finish",
                    Some(&stacks),
                );
                // Only now may a draining worker leave without it.
                if let Some(stats) = stats {
                    deadline.mark_stuck(&stats.stuck);
                }
            });
        if let Err(e) = spawned {
            crate::error!("Could not start a thread to report a request timeout: {e}");
        }
    }

    /// I/O thread: queue a request, calling a thread for it if needed.
    pub fn push(&self, job: Job) {
        let mut s = self.lock();
        s.jobs.push_back(job);
        let wake = s.call();
        drop(s);
        if wake {
            if self.quick.load(Ordering::Relaxed) {
                self.deferred_call.notify_one();
            } else {
                self.called.notify_one();
            }
        }
    }

    /// I/O thread task: make the calls `push` deferred. Woken through the
    /// runtime's queue, it runs after the tasks already ready in this turn.
    pub async fn call_deferred(&self) {
        loop {
            self.deferred_call.notified().await;
            // The call may have been taken meanwhile by a thread on its way
            // to sleep; waking another would only wake it for nothing.
            if self.lock().calls > 0 {
                self.called.notify_one();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the
        // state stays consistent at every unlock, so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleep (without the GIL) until called.
    fn sleep(&self) {
        let mut s = self.lock();
        // Work that came while this thread was on its way here called no one
        // if every thread was busy: seek for it now.
        if !s.jobs.is_empty() && s.seeking == 0 {
            s.seeking += 1;
            return;
        }
        s.sleeping += 1;
        self.wait_for_call(s);
    }

    /// After giving the GIL back: stand down until the drainer has finished
    /// a request, or at most `STAND_DOWN` (a drainer that went from Python
    /// into a long block must not keep the queue waiting).
    fn stand_down(&self) {
        let mut s = self.lock();
        s.seeking -= 1;
        s.gave_back = Some(s.progress);
        s.sleeping += 1;
        let until = Instant::now() + STAND_DOWN;
        while s.calls == 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.gave_back = None;
                // Work still waiting: call ourselves (taken below).
                if !s.jobs.is_empty() {
                    s.call();
                }
                break;
            }
            s = self
                .called
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.wait_for_call(s);
    }

    /// Counted among the sleepers: wait for a call and take it.
    fn wait_for_call(&self, mut s: MutexGuard<'_, State>) {
        while s.calls == 0 {
            s = self.called.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.calls -= 1;
    }

    /// The seeker holds the GIL now: take the first request.
    fn take_first(&self, waited: Duration, me: i32) -> First {
        let lone_drainer = match self.lock().drainers[..] {
            [] => None,
            _ if waited >= FORCED_SWITCH => return First::GiveBack,
            // A quick GIL should mean the drainer blocked outside Python. But
            // while other processes hold the cores, the GIL can change hands
            // early while the drainer is still in the app (and runnable, not
            // asleep in a system call): two CPU-bound requests would then
            // take turns. One drainer is the CPU-bound case; several mean
            // the app blocks anyway, and reading each one's state would cost
            // more than it saves.
            [drainer] => Some(drainer),
            _ => None,
        };
        // Read /proc without the queue's lock: the I/O thread pushes
        // requests meanwhile. (The GIL stays held: giving it back or not is
        // what is being decided.)
        if lone_drainer.is_some_and(sys::thread_runnable) {
            return First::GiveBack;
        }
        let mut s = self.lock();
        s.seeking -= 1;
        let Some(job) = s.jobs.pop_front() else {
            return First::Nothing;
        };
        s.drainers.push(me);
        // More waiting: the next seeker stands by in case this request blocks.
        let wake = !s.jobs.is_empty() && s.call();
        drop(s);
        if wake {
            self.called.notify_one();
        }
        First::Job(job)
    }

    /// A drainer between two requests: the next one, or None (and it stops
    /// draining) when the queue is empty.
    fn take_next(&self, me: i32) -> Option<Job> {
        let mut s = self.lock();
        s.progress = s.progress.wrapping_add(1);
        let job = s.jobs.pop_front();
        if job.is_none() {
            s.drainers.retain(|&t| t != me);
        }
        job
    }
}

/// Every Python thread's stack but the caller's, for a request timeout's log line.
fn thread_stacks(py: Python<'_>) -> PyResult<String> {
    const CODE: &std::ffi::CStr = c"
import sys, threading, traceback

def stacks():
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        if ident != me:
            out.append('Thread %s (most recent call last):\\n%s' % (
                names.get(ident, ident), ''.join(traceback.format_stack(frame))))
    return '\\n'.join(out)
";
    let module = PyModule::from_code(py, CODE, c"ferricorn_stacks.py", c"ferricorn_stacks")?;
    module.getattr("stacks")?.call0()?.extract()
}

// Lives for one move out of the queue; boxing the request would cost an
// allocation per request instead.
#[allow(clippy::large_enum_variant)]
enum First {
    Job(Job),
    /// Someone else drained the queue meanwhile.
    Nothing,
    /// The GIL came by a forced switch away from a drainer still busy in
    /// Python: hand it back and keep standing by.
    GiveBack,
}

pub fn start(n: u32, app: Arc<WsgiApp>, batch: bool) -> Arc<Queue> {
    let queue = Arc::new(Queue::new(batch));
    for i in 0..n {
        let queue = queue.clone();
        let app = app.clone();
        std::thread::Builder::new()
            .name(format!("ferricorn-app-{i}"))
            .spawn(move || {
                keep_thread_state();
                let me = sys::thread_id();
                loop {
                    queue.sleep();
                    seek(&queue, &app, me);
                }
            })
            .expect("spawning an app thread");
    }
    queue
}

/// Called: wait for the GIL with empty hands, then drain the queue.
fn seek(queue: &Queue, app: &WsgiApp, me: i32) {
    loop {
        let asked = Instant::now();
        let gave_back = Python::attach(|py| {
            // The GIL changed hands: a drainer holding responses may be
            // stuck in a long request now. Let them go.
            queue.takeovers.fetch_add(1, Ordering::Relaxed);
            queue.outbox.request_flush();
            let mut job = match queue.take_first(asked.elapsed(), me) {
                First::Job(job) => job,
                First::Nothing => return false,
                First::GiveBack => return true,
            };
            let drain = Instant::now();
            let mut drained = 0u32;
            loop {
                drained += 1;
                let before = queue.takeovers.load(Ordering::Relaxed);
                app.handle(py, job, queue.batch.then_some(&queue.outbox));
                // Keep holding only after a request that ran through without
                // giving up the GIL to another app thread: one that blocks
                // (an app doing I/O) would make the next one's wait long too.
                let ran_through = queue.takeovers.load(Ordering::Relaxed) == before;
                match queue.take_next(me) {
                    Some(next) => {
                        if !ran_through {
                            queue.outbox.request_flush();
                        }
                        job = next;
                    }
                    None => {
                        queue.outbox.request_flush();
                        let quick = drain.elapsed() < QUICK_APP * drained;
                        queue.quick.store(quick, Ordering::Relaxed);
                        return false;
                    }
                }
            }
        });
        // Given back: the GIL is the drainer's again (released when this
        // attach ended). Taking it again at once would only win it back
        // before the drainer wakes up.
        if !gave_back {
            return;
        }
        queue.stand_down();
    }
}

/// Give this thread a Python thread state for its whole life. Without one,
/// every `Python::attach` creates a thread state and every release destroys
/// it again: a few microseconds per request, for nothing.
fn keep_thread_state() {
    // SAFETY: the interpreter is initialised before the pool starts. Ensure
    // creates this thread's state and takes the GIL; SaveThread releases the
    // GIL but keeps the state (its gilstate counter stays at 1), so later
    // attaches only swap it in and out. The thread never exits before the
    // process does, so the state is never leaked in a way that matters.
    unsafe {
        pyo3::ffi::PyGILState_Ensure();
        pyo3::ffi::PyEval_SaveThread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn queue_with_one_drainer(tid: i32) -> Queue {
        let queue = Queue::new(true);
        {
            let mut s = queue.lock();
            s.drainers.push(tid);
            s.seeking = 1;
        }
        queue
    }

    /// A thread that stays runnable (spinning) or asleep in the kernel
    /// (parked) until told to end; its id.
    fn drainer(spin: bool) -> (i32, Arc<AtomicU64>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            tx.send(sys::thread_id()).unwrap();
            while flag.load(Ordering::Relaxed) == 0 {
                if !spin {
                    std::thread::park();
                }
            }
        });
        let tid = rx.recv().unwrap();
        // Time to get going (or to sleep).
        std::thread::sleep(Duration::from_millis(50));
        (tid, stop, handle)
    }

    fn end(stop: Arc<AtomicU64>, handle: std::thread::JoinHandle<()>) {
        stop.store(1, Ordering::Relaxed);
        handle.thread().unpark();
        handle.join().unwrap();
    }

    /// What a seeker that waited `waited` for the GIL does while one
    /// drainer spins in user space (`spin`) or sleeps in the kernel.
    fn first_after(waited: Duration, spin: bool) -> First {
        let (tid, stop, handle) = drainer(spin);
        let first = queue_with_one_drainer(tid).take_first(waited, sys::thread_id());
        end(stop, handle);
        first
    }

    #[test]
    fn a_quick_gil_while_the_drainer_is_runnable_is_given_back() {
        let first = first_after(Duration::from_micros(50), true);
        assert!(matches!(first, First::GiveBack));
    }

    #[test]
    fn a_quick_gil_while_the_drainer_sleeps_in_the_kernel_is_taken() {
        // No request waits in this queue, so taking it over finds nothing.
        let first = first_after(Duration::from_micros(50), false);
        assert!(matches!(first, First::Nothing));
    }

    #[test]
    fn a_gil_that_came_by_a_forced_switch_is_given_back() {
        assert!(matches!(first_after(FORCED_SWITCH, false), First::GiveBack));
    }

    /// A request with no connection to count it on.
    struct NoConn;

    impl crate::request::response_body::Occupancy for NoConn {
        fn enter(&self) {}
        fn leave(&self) {}
    }

    fn job() -> Job {
        let (parts, ()) = http::Request::new(()).into_parts();
        let (reply, _) = tokio::sync::oneshot::channel();
        Job {
            parts,
            body: None,
            peer: crate::request::Peer::Unix,
            local: Arc::new(crate::request::Local {
                host: "localhost".into(),
                port: "8000".into(),
            }),
            reply,
            busy: crate::request::BusyGuard::new(Arc::new(NoConn)),
            started: Instant::now(),
            websocket: None,
            deadline: None,
        }
    }

    /// Push one request from a task on an I/O thread while an app thread
    /// sleeps; whether that thread was woken before the task gave the
    /// runtime a turn, and whether it was woken at all after it.
    fn woken_before_and_after_the_turn(quick: bool) -> (bool, bool) {
        let queue = Arc::new(Queue::new(true));
        queue.quick.store(quick, Ordering::Relaxed);
        let woke = Arc::new(AtomicBool::new(false));
        let sleeper = {
            let (queue, woke) = (queue.clone(), woke.clone());
            std::thread::spawn(move || {
                queue.sleep();
                woke.store(true, Ordering::SeqCst);
            })
        };
        while queue.lock().sleeping == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let caller = queue.clone();
        rt.spawn(async move { caller.call_deferred().await });
        let seen = rt.block_on(async {
            queue.push(job());
            // The rest of this turn: other connections read, no yield.
            std::thread::sleep(Duration::from_millis(100));
            let before = woke.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            let until = Instant::now() + Duration::from_secs(5);
            while !woke.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            (before, woke.load(Ordering::SeqCst))
        });
        sleeper.join().unwrap();
        seen
    }

    #[test]
    fn a_quick_apps_thread_is_called_after_the_io_threads_turn() {
        assert_eq!(woken_before_and_after_the_turn(true), (false, true));
    }

    #[test]
    fn a_slow_apps_thread_is_called_at_once() {
        assert_eq!(woken_before_and_after_the_turn(false), (true, true));
    }
}
