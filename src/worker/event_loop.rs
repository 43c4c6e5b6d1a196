//! A Python event loop on the worker's main thread (the gevent hub, or an
//! asyncio loop for asgi) fed by the I/O thread through the request layer's
//! `Hub`. hyper runs on the I/O thread as for the other classes.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use std::sync::{Arc, Mutex};

use crate::asgi::{AsgiApp, Exchange, Socket};
use crate::python::traceback_text;
use crate::request::hub::{Hub, Phase};
use crate::request::{Deadline, Job};
use crate::wsgi::WsgiApp;

pyo3::create_exception!(
    ferricorn,
    RequestTimeout,
    pyo3::exceptions::PyBaseException,
    "The request ran past --request-timeout (thrown into its greenlet). A \
     BaseException, so that an app's `except Exception` does not swallow it."
);

/// One request on its way into a greenlet or task.
#[pyclass(module = "ferricorn")]
pub struct PendingJob {
    job: Mutex<Option<Job>>,
    /// Its deadline's id (0: none), which the loop tracks it under.
    #[pyo3(get)]
    id: u64,
}

impl PendingJob {
    fn new(job: Job) -> PendingJob {
        PendingJob {
            id: job.deadline.as_ref().map_or(0, |d| d.id()),
            job: Mutex::new(Some(job)),
        }
    }

    fn take(&self) -> Option<Job> {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A request past `--request-timeout`, for the loop to stop.
#[pyclass(module = "ferricorn", frozen)]
pub struct Expired(Arc<Deadline>);

#[pymethods]
impl Expired {
    #[getter]
    fn id(&self) -> u64 {
        self.0.id()
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
        self.hub.fileno()
    }

    fn set_park(&self, park: Py<PyAny>) {
        self.hub.set_park(park);
    }

    fn beat(&self) {
        self.hub.beat();
    }

    /// Startup is over: serve (`ok`) or exit as a worker that could not boot.
    fn started(&self, ok: bool) {
        self.hub
            .set_phase(if ok { Phase::Serving } else { Phase::Failed });
    }

    /// Wind-down is over: the I/O thread may end the process.
    fn stopped(&self) {
        self.hub.set_phase(Phase::Stopped);
    }

    /// Everything that arrived since the last call: new requests, woken
    /// tokens, requests past their deadline, and whether to stop.
    #[allow(clippy::type_complexity)]
    fn drain<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyList>,
        Bound<'py, PyList>,
        Bound<'py, PyList>,
        bool,
    )> {
        let inbox = self.hub.take();
        let jobs = PyList::empty(py);
        for job in inbox.jobs {
            jobs.append(Bound::new(py, PendingJob::new(job))?)?;
        }
        let expired = PyList::empty(py);
        for deadline in inbox.expired {
            expired.append(Bound::new(py, Expired(deadline))?)?;
        }
        Ok((jobs, PyList::new(py, inbox.woken)?, expired, inbox.stop))
    }

    /// Send the complete responses held since the last flush (the loop
    /// schedules this when `handle` or `Exchange.finish` asks for it).
    fn flush_held(&self) {
        self.hub.flush();
    }

    /// `--request-timeout` is set: track what runs each request.
    #[getter]
    fn timed(&self) -> bool {
        self.hub.timed
    }

    /// What is thrown into a greenlet past its deadline.
    #[getter]
    fn timeout_error(&self, py: Python<'_>) -> Py<PyAny> {
        py.get_type::<RequestTimeout>().into_any().unbind()
    }

    /// Log a request past its deadline, with where it was (`stack`: None
    /// when it had finished meanwhile), before the loop stops it.
    #[pyo3(signature = (expired, stopping, stack=None))]
    fn timed_out(&self, expired: PyRef<'_, Expired>, stopping: &str, stack: Option<&str>) {
        expired.0.report(stopping, stack);
    }

    /// gevent: a greenlet's whole life, running the WSGI app for one
    /// request. True when the hub should schedule `flush_held` (a complete
    /// response waits for it: see `request::outbox`).
    fn handle(&self, py: Python<'_>, job: PyRef<'_, PendingJob>) -> PyResult<bool> {
        let Served::Wsgi(app) = &self.served else {
            return Err(PyRuntimeError::new_err("not a WSGI worker"));
        };
        let taken = job.take();
        drop(job);
        if let Some(job) = taken {
            app.handle(py, job, Some(&self.hub.outbox));
        }
        Ok(self.hub.flush_wanted())
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
            super::exit(crate::proto::WORKER_BOOT_ERROR);
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
                hub.set_phase(Phase::Failed);
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
