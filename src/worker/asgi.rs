//! The asgi worker class: an asyncio (or uvloop) loop on the worker's main
//! thread runs one task per request (`asgi.py`), fed through the `hub`.

use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Served};
use crate::asgi::AsgiApp;
use crate::config::{AsgiLifespan, AsgiLoop};
use crate::request::Hub;

const GLUE: &str = include_str!("asgi.py");

pub struct LoopOptions {
    /// How often the loop proves it runs.
    pub beat: Duration,
    pub event_loop: AsgiLoop,
    pub lifespan: AsgiLifespan,
}

/// Serve until the I/O thread ends the process.
pub fn serve<F>(hub: Arc<Hub>, app: Arc<AsgiApp>, opts: LoopOptions, io: F) -> !
where
    F: FnOnce() -> i32 + Send,
{
    let callable = Python::attach(|py| app.app.clone_ref(py));
    event_loop::serve(hub, Served::Asgi(app), io, move |py, link| {
        let code = CString::new(GLUE).expect("glue source has no NUL");
        let module = PyModule::from_code(py, &code, c"ferricorn_asgi.py", c"ferricorn_asgi")?;
        let log = pyo3::wrap_pyfunction!(crate::python::emit_log, py)?;
        let event_loop = match opts.event_loop {
            AsgiLoop::Auto => "auto",
            AsgiLoop::Asyncio => "asyncio",
            AsgiLoop::Uvloop => "uvloop",
        };
        let lifespan = match opts.lifespan {
            AsgiLifespan::Auto => "auto",
            AsgiLifespan::On => "on",
            AsgiLifespan::Off => "off",
        };
        module.getattr("serve")?.call1((
            link,
            callable,
            opts.beat.as_secs_f64(),
            event_loop,
            lifespan,
            log,
        ))?;
        Ok(())
    })
}
