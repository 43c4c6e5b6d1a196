//! The gevent worker class: the hub runs on the worker's main thread and each
//! request in its own greenlet; hyper runs on an I/O thread as for the other
//! classes. The I/O thread hands requests over and wakes parked greenlets
//! through an inbox and an eventfd the hub watches (`gevent.py`), so the hub
//! never waits on a lock held by Rust code.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};
use std::time::Duration;

use crate::python::traceback_text;
use crate::wsgi::{Job, WsgiApp};

const GLUE: &str = include_str!("gevent.py");

/// What the I/O thread and the hub share.
pub struct Hub {
    wake_fd: OwnedFd,
    /// The eventfd was written since the hub last drained: no need to write again.
    signalled: AtomicBool,
    inbox: Mutex<Inbox>,
    tokens: AtomicU64,
    /// The Python function that parks the current greenlet under a token.
    park: OnceLock<Py<PyAny>>,
    /// Ticks of the hub's heartbeat greenlet.
    beats: AtomicU64,
}

#[derive(Default)]
struct Inbox {
    jobs: Vec<Job>,
    woken: Vec<u64>,
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
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request for a new greenlet (I/O thread).
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

    /// Switch to the hub until `token` is woken (runs in a request's greenlet).
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

/// One request on its way into a greenlet.
#[pyclass(module = "ferricorn")]
pub struct PendingJob(Mutex<Option<Job>>);

/// The hub's handle on the Rust side (`link` in `gevent.py`).
#[pyclass(module = "ferricorn")]
pub struct HubLink {
    hub: Arc<Hub>,
    app: Arc<WsgiApp>,
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

    /// Everything that arrived since the last call: new requests, woken tokens.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        // Read the eventfd, then clear the flag, then take the inbox: a push
        // after the clear writes the eventfd again (another wake-up), and one
        // before it is in what we take. Clearing first could swallow the
        // write of a later push and strand it.
        let mut counter = 0u64;
        // SAFETY: an 8-byte read into a local from our non-blocking eventfd;
        // EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.hub.wake_fd.as_raw_fd(),
                &mut counter as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        self.hub.signalled.store(false, Ordering::SeqCst);
        let inbox = std::mem::take(&mut *self.hub.lock());
        let jobs = PyList::empty(py);
        for job in inbox.jobs {
            jobs.append(Bound::new(py, PendingJob(Mutex::new(Some(job))))?)?;
        }
        Ok((jobs, PyList::new(py, inbox.woken)?))
    }

    /// A greenlet's whole life: run the app for one request.
    fn handle(&self, py: Python<'_>, job: PyRef<'_, PendingJob>) {
        let taken = job.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(job);
        if let Some(job) = taken {
            self.app.handle(py, job);
        }
    }
}

/// Run the hub on this thread and `io` (the worker's I/O loop) on another;
/// the worker exits with `io`'s code, or 1 when the hub fails.
pub fn serve<F>(hub: Arc<Hub>, app: Arc<WsgiApp>, beat: Duration, io: F) -> !
where
    F: FnOnce() -> i32 + Send,
{
    std::thread::scope(|scope| {
        // The I/O thread ends the process itself: the hub never returns.
        let spawned = std::thread::Builder::new()
            .name("ferricorn-io".into())
            .spawn_scoped(scope, || super::exit(io()));
        if let Err(e) = spawned {
            crate::error!("Could not start the I/O thread: {e}");
            super::exit(crate::master::WORKER_BOOT_ERROR);
        }
        let failure = Python::attach(|py| {
            let run = || -> PyResult<()> {
                let code = CString::new(GLUE).expect("glue source has no NUL");
                let module =
                    PyModule::from_code(py, &code, c"ferricorn_gevent.py", c"ferricorn_gevent")?;
                let link = Bound::new(py, HubLink { hub, app })?;
                module.getattr("serve")?.call1((link, beat.as_secs_f64()))?;
                Ok(())
            };
            match run() {
                Ok(()) => "its loop ended".to_string(),
                Err(e) => traceback_text(py, &e),
            }
        });
        crate::error!("The gevent hub stopped: {failure}");
        super::exit(1)
    })
}
