//! gunicorn's server hooks that run in a worker (`post_fork`,
//! `post_worker_init`, `pre_request`, `post_request`, `worker_int`,
//! `worker_abort`, `worker_exit`), with gunicorn's arguments: the objects
//! they are given live in `ferricorn_support.py` (`Hooks`).

use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::Path;
use std::sync::OnceLock;

use super::Support;

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// This worker's hooks.
pub struct Hooks {
    obj: Py<PyAny>,
    /// pre_request or post_request is set: requests carry a `req` object.
    pub per_request: bool,
    /// worker_abort is set: ABRT (--timeout) runs it before the worker leaves.
    pub has_abort: bool,
}

/// Where the hooks come from.
pub struct Sources<'a> {
    /// TOML's `hook = "module:function"` references, by hook name.
    pub refs: Vec<(&'static str, &'a str)>,
    /// A gunicorn `*.py` config, run again in the worker for its functions.
    pub config_file: Option<&'a Path>,
    /// The settings (JSON) for `server.cfg` and `worker.cfg`.
    pub settings_json: String,
    /// This worker's place in the order of workers started.
    pub age: u64,
    pub master_pid: i32,
}

/// Make this worker's hooks (once, before the app is imported), if any is set.
pub fn install(
    py: Python<'_>,
    support: &Support,
    from: Sources<'_>,
) -> PyResult<Option<&'static Hooks>> {
    if from.refs.is_empty() && from.config_file.is_none() {
        return Ok(None);
    }
    let refs = PyDict::new(py);
    for (name, r) in &from.refs {
        refs.set_item(name, r)?;
    }
    let settings = py
        .import("json")?
        .call_method1("loads", (from.settings_json,))?;
    let obj = support.attr(py, "Hooks")?.call1((
        refs,
        from.config_file.map(|p| p.display().to_string()),
        settings,
        from.age,
        from.master_pid,
    ))?;
    let has = |name: &str| -> PyResult<bool> { obj.call_method1("has", (name,))?.extract() };
    let any = WORKER_HOOKS
        .iter()
        .map(|h| has(h))
        .collect::<PyResult<Vec<bool>>>()?
        .into_iter()
        .any(|b| b);
    if !any {
        return Ok(None);
    }
    let hooks = Hooks {
        per_request: has("pre_request")? || has("post_request")?,
        has_abort: has("worker_abort")?,
        obj: obj.unbind(),
    };
    Ok(Some(HOOKS.get_or_init(|| hooks)))
}

/// The hooks `install` made, if any.
pub fn installed() -> Option<&'static Hooks> {
    HOOKS.get()
}

/// The hooks gunicorn runs in a worker; the others are its arbiter's.
pub const WORKER_HOOKS: [&str; 7] = [
    "post_fork",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_int",
    "worker_abort",
    "worker_exit",
];

impl Hooks {
    /// Run hook `method` of the support object (`post_fork`, `worker_exit`, …).
    pub fn call(&self, py: Python<'_>, method: &str) -> PyResult<()> {
        self.obj.call_method0(py, method).map(drop)
    }

    pub fn post_worker_init(&self, py: Python<'_>, app: &Py<PyAny>) -> PyResult<()> {
        self.obj
            .call_method1(py, "post_worker_init", (app.clone_ref(py),))
            .map(drop)
    }

    pub fn pre_request(&self, py: Python<'_>, req: &Bound<'_, PyAny>) -> PyResult<()> {
        self.obj.call_method1(py, "pre_request", (req,)).map(drop)
    }

    pub fn post_request(
        &self,
        py: Python<'_>,
        req: &Bound<'_, PyAny>,
        environ: &Bound<'_, PyAny>,
        resp: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.obj
            .call_method1(py, "post_request", (req, environ, resp))
            .map(drop)
    }

    /// gunicorn's `req` for a request.
    #[allow(clippy::too_many_arguments)]
    pub fn request<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        uri: &str,
        path: &str,
        query: &str,
        version: (u8, u8),
        headers: Vec<(String, String)>,
        remote_addr: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.obj.bind(py).call_method1(
            "request",
            (
                method,
                uri,
                path,
                query,
                version,
                headers,
                remote_addr,
                "http",
            ),
        )
    }

    /// gunicorn's `resp` for a response: "200 OK", its headers, bytes sent.
    pub fn response<'py>(
        &self,
        py: Python<'py>,
        status: String,
        headers: Vec<(String, String)>,
        sent: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.obj
            .bind(py)
            .call_method1("response", (status, headers, sent))
    }
}

/// Run `method` of the installed hooks for a worker that is leaving,
/// logging what it raised; waits for the GIL at most `within`, since the
/// app may hold it (a stuck request) and the worker must leave anyway.
pub fn run_on_the_way_out(method: &'static str, within: std::time::Duration) {
    let Some(hooks) = installed() else { return };
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("ferricorn-hook".into())
        .spawn(move || {
            Python::attach(|py| {
                if let Err(e) = hooks.call(py, method) {
                    crate::error!(
                        "Exception in {method} hook\n{}",
                        super::traceback_text(py, &e)
                    );
                }
            });
            let _ = tx.send(());
        });
    if spawned.is_ok() && rx.recv_timeout(within).is_err() {
        crate::warning!(
            "The {method} hook did not finish in {} s: leaving without it",
            within.as_secs()
        );
    }
}
