//! The embedded CPython: interpreter start-up in a worker, the virtualenv, app loading.

pub mod hooks;
mod support;
mod venv;

pub use support::{Support, traceback_text};
pub use venv::{bundled_home, check_installation, check_virtualenv};

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// What the interpreter needs to know before it starts.
pub struct Startup<'a> {
    pub virtualenv: Option<&'a Path>,
    pub chdir: &'a Path,
    pub pythonpath: Option<&'a str>,
    pub logconfig: LogConfig<'a>,
}

/// gunicorn's logconfig settings, applied to the app's Python logging
/// before it is imported.
#[derive(Clone, Copy, Default)]
pub struct LogConfig<'a> {
    /// A dictConfig dictionary as JSON text.
    pub dict_json: Option<&'a str>,
    /// A dictConfig JSON file.
    pub json: Option<&'a Path>,
    /// A fileConfig (ini) file.
    pub ini: Option<&'a Path>,
}

/// Start CPython in this process (a worker after fork, or a short-lived child)
/// and leave the GIL released so any thread can attach.
pub fn init(startup: &Startup<'_>) -> Result<(), String> {
    // SAFETY: we own the PyConfig until PyConfig_Clear; every string we hand
    // it is a NUL-terminated C string that outlives the call.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // ferricorn owns the signals; Python must not install its handlers.
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        if let Some(venv) = startup.virtualenv {
            // With program_name inside the venv, CPython finds pyvenv.cfg and
            // makes the venv sys.prefix, so its site-packages import.
            let program: PathBuf = venv.join("bin").join("python");
            let c =
                CString::new(program.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            let status =
                ffi::PyConfig_SetBytesString(&mut config, &mut config.program_name, c.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err("could not set the virtualenv's program name".into());
            }
        }
        if let Some(home) = bundled_home() {
            // The wheel's own standard library, made for the core linked in;
            // the venv (found from program_name) still becomes sys.prefix.
            let c = CString::new(home.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
            let status = ffi::PyConfig_SetBytesString(&mut config, &mut config.home, c.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err("could not set the standard library's directory".into());
            }
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            let msg = if status.err_msg.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(status.err_msg)
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(format!("Python failed to start: {msg}"));
        }
        // Release the GIL taken by initialisation; threads attach as they need it.
        ffi::PyEval_SaveThread();
    }
    Python::attach(|py| -> PyResult<()> {
        let sys = py.import("sys")?;
        let path = sys.getattr("path")?;
        // gunicorn puts the app's directory first, then --pythonpath entries before it.
        path.call_method1("insert", (0, startup.chdir.to_string_lossy().as_ref()))?;
        if let Some(venv) = startup.virtualenv {
            let site = py.import("site")?;
            for dir in venv::base_site_packages(venv) {
                site.call_method1("addsitedir", (dir.to_string_lossy().as_ref(),))?;
            }
        }
        if let Some(pp) = startup.pythonpath {
            for dir in pp.split(',').map(str::trim).filter(|d| !d.is_empty()).rev() {
                path.call_method1("insert", (0, dir))?;
            }
        }
        Ok(())
    })
    .map_err(|e| format!("could not set sys.path: {e}"))
}

/// An imported app and the support module it was loaded with.
pub struct LoadedApp {
    pub app: Py<PyAny>,
    pub support: Support,
}

/// Import the app named by `spec`; the error is the text to log (a traceback).
pub fn load_app(
    py: Python<'_>,
    support: &Support,
    spec: &str,
    logconfig: LogConfig<'_>,
) -> Result<Py<PyAny>, String> {
    if logconfig.dict_json.is_some() || logconfig.json.is_some() || logconfig.ini.is_some() {
        let path = |p: Option<&Path>| p.map(|p| p.display().to_string());
        support
            .attr(py, "apply_logconfig")
            .and_then(|f| {
                f.call1((
                    logconfig.dict_json,
                    path(logconfig.json),
                    path(logconfig.ini),
                ))
            })
            .map_err(|e| {
                format!(
                    "The logging configuration failed:\n{}",
                    traceback_text(py, &e)
                )
            })?;
    }
    route_logging(py, support)?;
    support
        .attr(py, "load_app")
        .and_then(|f| f.call1((spec,)))
        .map(Bound::unbind)
        .map_err(|e| {
            let is_spec_error = support
                .attr(py, "AppImportError")
                .is_ok_and(|cls| e.get_type(py).is(&cls));
            if is_spec_error {
                e.value(py).to_string()
            } else {
                traceback_text(py, &e)
            }
        })
}

/// Python's logging (and, under journald, stdout and stderr) into our error
/// log, unless the app configured its own handlers.
pub fn route_logging(py: Python<'_>, support: &Support) -> Result<(), String> {
    let emit = pyo3::wrap_pyfunction!(emit_log, py).map_err(|e| e.to_string())?;
    support
        .attr(py, "install_logging")
        .and_then(|f| f.call1((&emit,)))
        .map_err(|e| traceback_text(py, &e))?;
    if crate::log::to_journal() {
        support
            .attr(py, "redirect_std")
            .and_then(|f| f.call1((&emit,)))
            .map_err(|e| traceback_text(py, &e))?;
    }
    Ok(())
}

/// `--capture-output`: print() reaches the error log file line by line, not
/// when a block fills (a worker leaves without flushing Python's buffers).
pub fn line_buffered_output(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("line_buffering", true)?;
    for stream in ["stdout", "stderr"] {
        sys.getattr(stream)?
            .call_method("reconfigure", (), Some(&kwargs))?;
    }
    Ok(())
}

/// `-k gevent`: monkey-patch before the app is imported; the error says what to install.
pub fn patch_gevent(py: Python<'_>, support: &Support) -> Result<(), String> {
    let patched = support
        .attr(py, "patch_gevent")
        .and_then(|f| f.call0())
        .and_then(|r| r.is_truthy())
        .map_err(|e| traceback_text(py, &e))?;
    if patched {
        return Ok(());
    }
    let prefix = py
        .import("sys")
        .and_then(|sys| sys.getattr("prefix"))
        .map(|p| p.to_string())
        .unwrap_or_default();
    Err(format!(
        "--worker-class gevent needs the gevent package, which Python in {prefix} cannot \
         import: install it there (`{prefix}/bin/pip install gevent`), point --virtualenv \
         at an environment that has it, or choose another --worker-class"
    ))
}

/// Python's `logging` and `wsgi.errors` land here: the error log, with this worker's pid.
#[pyfunction]
pub fn emit_log(levelno: i64, msg: &str) {
    crate::log::log_line(crate::log::Level::from_python(levelno), msg);
}

/// Forking a process that runs Python (`--preload`): CPython's fork protocol.
pub mod fork {
    use pyo3::ffi;

    /// Held across fork in the parent: the GIL and CPython's pre-fork locks.
    pub struct Prepared(ffi::PyGILState_STATE);

    pub fn prepare() -> Prepared {
        // SAFETY: Python is initialised in this process (preload); taking the
        // GIL and the interpreter's fork locks is what PyOS_BeforeFork expects.
        unsafe {
            let g = ffi::PyGILState_Ensure();
            ffi::PyOS_BeforeFork();
            Prepared(g)
        }
    }

    pub fn parent(p: Prepared) {
        // SAFETY: pairs with prepare() in the same thread.
        unsafe {
            ffi::PyOS_AfterFork_Parent();
            ffi::PyGILState_Release(p.0);
        }
    }

    /// In the child: reset the interpreter's threading state, then let the GIL go
    /// so the worker's app threads can take it.
    pub fn child(p: Prepared) {
        let _ = p;
        // SAFETY: called once, first thing in the forked child, which holds
        // the GIL taken by prepare() in the parent.
        unsafe {
            ffi::PyOS_AfterFork_Child();
            ffi::PyEval_SaveThread();
        }
    }
}

/// `--preload`: start Python in the master and import the app before forking.
pub fn preload(startup: &Startup, app: &str, gevent: bool) -> Result<LoadedApp, String> {
    init(startup)?;
    Python::attach(|py| {
        let support = Support::load(py).map_err(|e| traceback_text(py, &e))?;
        if gevent {
            patch_gevent(py, &support)?;
        }
        let app = load_app(py, &support, app, startup.logconfig)?;
        Ok(LoadedApp { app, support })
    })
}

impl LoadedApp {
    pub fn clone_ref(&self, py: Python<'_>) -> LoadedApp {
        LoadedApp {
            app: self.app.clone_ref(py),
            support: Support {
                module: self.support.module.clone_ref(py),
            },
        }
    }
}
