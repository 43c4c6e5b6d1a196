//! The app threads: each takes requests from the I/O thread and runs the app
//! with the GIL, draining whatever queued up before letting the GIL go.

use pyo3::prelude::*;
use std::sync::Arc;

use crate::wsgi::{Job, WsgiApp};

pub fn start(n: u32, jobs: crossbeam_channel::Receiver<Job>, app: Arc<WsgiApp>) {
    for i in 0..n {
        let jobs = jobs.clone();
        let app = app.clone();
        std::thread::Builder::new()
            .name(format!("ferricorn-app-{i}"))
            .spawn(move || {
                keep_thread_state();
                while let Ok(job) = jobs.recv() {
                    Python::attach(|py| {
                        app.handle(py, job);
                        while let Ok(job) = jobs.try_recv() {
                            app.handle(py, job);
                        }
                    });
                }
            })
            .expect("spawning an app thread");
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
