//! The gevent worker class: the hub on the worker's main thread runs each
//! request in its own greenlet (`gevent.py`), fed through the `hub`.

use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use super::event_loop::{self, Served};
use crate::request::Hub;
use crate::wsgi::WsgiApp;

const GLUE: &str = include_str!("gevent.py");

/// Serve until the I/O thread ends the process.
pub fn serve<F>(hub: Arc<Hub>, app: Arc<WsgiApp>, beat: Duration, io: F) -> !
where
    F: FnOnce() -> i32 + Send,
{
    event_loop::serve(hub, Served::Wsgi(app), io, |py, link| {
        let code = CString::new(GLUE).expect("glue source has no NUL");
        let module = PyModule::from_code(py, &code, c"ferricorn_gevent.py", c"ferricorn_gevent")?;
        module.getattr("serve")?.call1((link, beat.as_secs_f64()))?;
        Ok(())
    })
}
