//! A Python event loop on the worker's main thread (the gevent hub, or an
//! asyncio loop for asgi) fed by the I/O thread. hyper runs on the I/O thread
//! as for the other classes; it hands requests over and wakes parked
//! greenlets or tasks through an inbox and an eventfd the loop watches, so
//! the loop never waits on a lock held by Rust code and the I/O thread never
//! takes the GIL.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};
use tokio::sync::watch;

use crate::asgi::{AsgiApp, Exchange, Socket};
use crate::python::traceback_text;
use crate::wsgi::{Job, WsgiApp};

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
    wake_fd: OwnedFd,
    /// The eventfd was written since the loop last drained: no need to write again.
    signalled: AtomicBool,
    inbox: Mutex<Inbox>,
    tokens: AtomicU64,
    /// gevent: the Python function that parks the current greenlet under a token.
    park: OnceLock<Py<PyAny>>,
    /// Ticks of the loop's heartbeat.
    beats: AtomicU64,
    phase: watch::Sender<Phase>,
}

#[derive(Default)]
struct Inbox {
    jobs: Vec<Job>,
    woken: Vec<u64>,
    stop: bool,
}

impl Hub {
    pub fn new() -> std::io::Result<Arc<Hub>> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Hub {
            // SAFETY: fd is fresh and owned by nothing else.
            wake_fd: unsafe { OwnedFd::from_raw_fd(fd) },
            signalled: AtomicBool::new(false),
            inbox: Mutex::new(Inbox::default()),
            tokens: AtomicU64::new(1),
            park: OnceLock::new(),
            beats: AtomicU64::new(0),
            phase: watch::Sender::new(Phase::Starting),
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

    fn wake(&self, token: u64) {
        self.lock().woken.push(token);
        self.signal();
    }

    fn signal(&self) {
        if !self.signalled.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: an 8-byte write from a local to our eventfd. It cannot
            // fail short of the counter overflowing, which drain() prevents.
            unsafe {
                libc::write(
                    self.wake_fd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
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
    fn take(&self) -> Inbox {
        // Read the eventfd, then clear the flag, then take the inbox: a push
        // after the clear writes the eventfd again (another wake-up), and one
        // before it is in what we take. Clearing first could swallow the
        // write of a later push and strand it.
        let mut counter = 0u64;
        // SAFETY: an 8-byte read into a local from our non-blocking eventfd;
        // EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                &mut counter as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        self.signalled.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.lock())
    }

    fn phase(&self) -> Phase {
        *self.phase.borrow()
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

/// One request on its way into a greenlet or task.
#[pyclass(module = "ferricorn")]
pub struct PendingJob(Mutex<Option<Job>>);

impl PendingJob {
    fn take(&self) -> Option<Job> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What the loop serves.
pub enum Served {
    Wsgi(Arc<WsgiApp>),
    Asgi(Arc<AsgiApp>),
}

/// The loop's handle on the Rust side (`link` in `gevent.py` and `asgi.py`).
#[pyclass(module = "ferricorn")]
pub struct HubLink {
    hub: Arc<Hub>,
    served: Served,
}

#[pymethods]
impl HubLink {
    fn fileno(&self) -> i32 {
        self.hub.wake_fd.as_raw_fd()
    }

    fn set_park(&self, park: Py<PyAny>) {
        let _ = self.hub.park.set(park);
    }

    fn beat(&self) {
        self.hub.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Startup is over: serve (`ok`) or exit as a worker that could not boot.
    fn started(&self, ok: bool) {
        self.hub
            .phase
            .send_replace(if ok { Phase::Serving } else { Phase::Failed });
    }

    /// Wind-down is over: the I/O thread may end the process.
    fn stopped(&self) {
        self.hub.phase.send_replace(Phase::Stopped);
    }

    /// Everything that arrived since the last call: new requests, woken
    /// tokens, and whether to stop.
    #[allow(clippy::type_complexity)]
    fn drain<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, bool)> {
        let inbox = self.hub.take();
        let jobs = PyList::empty(py);
        for job in inbox.jobs {
            jobs.append(Bound::new(py, PendingJob(Mutex::new(Some(job))))?)?;
        }
        Ok((jobs, PyList::new(py, inbox.woken)?, inbox.stop))
    }

    /// gevent: a greenlet's whole life, running the WSGI app for one request.
    fn handle(&self, py: Python<'_>, job: PyRef<'_, PendingJob>) -> PyResult<()> {
        let Served::Wsgi(app) = &self.served else {
            return Err(PyRuntimeError::new_err("not a WSGI worker"));
        };
        let taken = job.take();
        drop(job);
        if let Some(job) = taken {
            // The hub's loop is the I/O thread's peer already: nothing to batch.
            app.handle(py, job, false);
        }
        Ok(())
    }

    /// asgi: what a task runs the app on for one request: an `Exchange`
    /// (http) or a `Socket` (websocket), with the same methods.
    fn exchange<'py>(
        &self,
        py: Python<'py>,
        job: PyRef<'_, PendingJob>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Served::Asgi(app) = &self.served else {
            return Err(PyRuntimeError::new_err("not an ASGI worker"));
        };
        let mut job = job
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("request already taken"))?;
        match job.websocket.take() {
            Some(side) => Ok(Bound::new(
                py,
                Socket::new(app.clone(), self.hub.clone(), job, side),
            )?
            .into_any()),
            None => {
                Ok(Bound::new(py, Exchange::new(app.clone(), self.hub.clone(), job))?.into_any())
            }
        }
    }
}

/// Run the loop on this thread (`run_loop`, given the link) and `io` (the
/// worker's I/O loop) on another. The I/O thread ends the process with its
/// code; if the loop returns first, the worker exits 3 when startup never
/// finished and 1 otherwise.
pub fn serve<F, L>(hub: Arc<Hub>, served: Served, io: F, run_loop: L) -> !
where
    F: FnOnce() -> i32 + Send,
    L: FnOnce(Python<'_>, Bound<'_, HubLink>) -> PyResult<()>,
{
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("ferricorn-io".into())
            .spawn_scoped(scope, || super::exit(io()));
        if let Err(e) = spawned {
            crate::error!("Could not start the I/O thread: {e}");
            super::exit(crate::master::WORKER_BOOT_ERROR);
        }
        let outcome = Python::attach(|py| {
            let link = Bound::new(
                py,
                HubLink {
                    hub: hub.clone(),
                    served,
                },
            )?;
            run_loop(py, link)
        })
        .map_err(|e| Python::attach(|py| traceback_text(py, &e)));
        match (hub.phase(), outcome) {
            (Phase::Starting | Phase::Failed, outcome) => {
                if let Err(e) = outcome {
                    crate::error!("{e}");
                }
                hub.phase.send_replace(Phase::Failed);
                // Let the I/O thread see it and exit first, with the boot error.
                loop {
                    std::thread::park();
                }
            }
            (_, Err(e)) => {
                crate::error!("The worker's event loop failed: {e}");
                super::exit(1)
            }
            (_, Ok(())) => {
                crate::error!("The worker's event loop ended");
                super::exit(1)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Duration;
    use std::time::Instant;

    /// Wait until the eventfd is readable; false after a second of silence.
    fn readable(hub: &Hub) -> bool {
        let mut pfd = libc::pollfd {
            fd: hub.wake_fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd that lives across the call.
        unsafe { libc::poll(&mut pfd, 1, 1000) > 0 }
    }

    /// The I/O thread wakes tokens as fast as it can while the loop drains:
    /// every token must arrive, and no wake-up may be lost (a lost one shows
    /// as a second of silence with tokens still in the inbox).
    #[test]
    fn no_wake_up_is_lost_between_the_threads() {
        const N: u64 = 200_000;
        let hub = Hub::new().unwrap();
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
