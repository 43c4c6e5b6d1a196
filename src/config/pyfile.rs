//! gunicorn `*.py` config files, read by a short-lived embedded interpreter in a
//! child process, so the master itself never starts Python.

use std::io::Read;

use std::path::Path;

use super::SETTING_NAMES;
use crate::python::{self, Startup, Support};
use pyo3::prelude::*;

pub fn read(
    path: &Path,
    virtualenv: Option<&Path>,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let path = path.canonicalize().map_err(|e| format!("{e}"))?;
    let (rd, wr) = crate::sys::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the master is single-threaded here (no runtime, no Python), so
    // the child may run arbitrary code; it leaves only through _exit.
    let pid = match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Ok(nix::unistd::ForkResult::Child) => 0,
    };
    if pid == 0 {
        drop(rd);
        let out = child(&path, virtualenv);
        let (code, text) = match out {
            Ok(json) => (0, json),
            Err(e) => (1, e),
        };
        let mut f = std::fs::File::from(wr);
        let _ = std::io::Write::write_all(&mut f, text.as_bytes());
        crate::sys::exit_now(code);
    }
    drop(wr);
    let mut text = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut text);
    let status = crate::sys::wait_pid(pid);
    if status != Some(0) {
        return Err(text
            .trim()
            .lines()
            .last()
            .unwrap_or("could not run it")
            .to_string());
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    // Every hook but ssl_context (a Python SSLContext) runs: worker hooks in the workers, the
    // arbiter's in the hook host (master::hook_host).
    if value
        .get("hooks")
        .and_then(|h| h.as_array())
        .is_some_and(|h| h.iter().any(|h| h == "ssl_context"))
    {
        crate::warning!(
            "{}: ssl_context builds a Python SSLContext, which ferricorn's TLS (rustls) cannot use, so it will not run: set certfile, keyfile, ca_certs, cert_reqs and ciphers instead",
            path.display()
        );
    }
    Ok(value
        .get("settings")
        .and_then(|s| s.as_object())
        .cloned()
        .unwrap_or_default())
}

fn child(path: &Path, virtualenv: Option<&Path>) -> Result<String, String> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    python::init(&Startup {
        virtualenv,
        chdir: dir,
        pythonpath: None,
        logconfig: Default::default(),
    })?;
    Python::attach(|py| {
        let run = || -> PyResult<String> {
            let support = Support::load(py)?;
            support
                .attr(py, "read_gunicorn_config")?
                .call1((path.to_string_lossy().as_ref(), names()))?
                .extract()
        };
        run().map_err(|e| python::traceback_text(py, &e))
    })
}

/// The names a gunicorn config may set that we read: every setting,
/// gunicorn's other name for the app, and gunicorn's settings we skip or
/// refuse (so that the file's reader can say so).
fn names() -> Vec<&'static str> {
    SETTING_NAMES
        .iter()
        .copied()
        .chain(["wsgi_app"])
        .chain(super::gunicorn_only::SKIPPED.iter().map(|(n, _)| *n))
        .collect()
}
