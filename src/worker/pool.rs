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
