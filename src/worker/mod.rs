//! A worker's life after fork: title, privileges, Python, the app, then serving.

mod acceptor;
mod asgi;
mod dispatch;
mod event_loop;
mod gevent;
mod http2;
mod pool;
mod reload;
mod reporter;
mod serve;

use reporter::Reporter;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use pyo3::prelude::*;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, WorkerClass};
use crate::listen::Listener;
use crate::listen::balance::Seat;
use crate::privileges;
use crate::proto::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::python::{self, Startup, Support, hooks};
use crate::{error, info};

/// USR1 (reopen the logs: logrotate, `systemctl reload` of a log setup)
/// may come while the worker imports the app, before its runtime handles
/// signals; by default it would kill the worker, and a worker that dies
/// while booting can stop the server. Until then it is only noted.
static REOPEN_ASKED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_reopen(_: libc::c_int) {
    REOPEN_ASKED.store(true, Ordering::Relaxed);
}

fn note_usr1_until_served() {
    let action = SigAction::new(
        SigHandler::Handler(note_reopen),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGUSR1, &action) };
    // The master forked us with USR1 blocked: one that came meanwhile lands now.
    let _ = SigSet::from(Signal::SIGUSR1).thread_unblock();
}

/// Was a USR1 noted while booting? (Asked once the runtime handles it.)
pub(crate) fn reopen_asked_while_booting() -> bool {
    REOPEN_ASKED.swap(false, Ordering::Relaxed)
}

/// Runs in the forked child; never returns.
pub fn run(
    cfg: &Config,
    listeners: &[Listener],
    seat: Option<Seat>,
    pipe: OwnedFd,
    preloaded: Option<&python::LoadedApp>,
) -> ! {
    note_usr1_until_served();
    crate::proctitle::set(&format!("ferricorn: worker [{}]", cfg.proc_name));
    crate::log::mark_worker();
    let _ = crate::sys::set_nonblocking(&pipe, true);
    let booted = match preloaded {
        // The app was imported before fork; privileges and hooks remain
        // (post_fork runs after the import, as under gunicorn's --preload).
        Some(app) => privileges::drop_to(cfg.uid, cfg.gid, cfg.settings.initgroups)
            .map_err(|e| {
                error!("Could not drop privileges: {e}");
                WORKER_BOOT_ERROR
            })
            .and_then(|()| {
                Python::attach(|py| {
                    let app = app.clone_ref(py);
                    boot_hooks(py, cfg, &app.support)?;
                    after_import(py, &app.app)?;
                    Ok(app)
                })
            }),
        None => boot(cfg, true),
    };
    if booted.is_ok() && preloaded.is_some() {
        info!(
            "Worker (pid:{}) loaded {} (preloaded)",
            std::process::id(),
            cfg.settings.app
        );
    }
    let code = match booted {
        Ok(app) => serve::serve(cfg, listeners, seat, Reporter::new(pipe), app),
        Err(code) => code,
    };
    exit(code)
}

/// Make the worker's server hooks and run post_fork (gunicorn: in the
/// child, before the app is imported). A hook that raises stops the
/// worker's boot, as in gunicorn.
fn boot_hooks(py: Python<'_>, cfg: &Config, support: &python::Support) -> Result<(), i32> {
    let s = &cfg.settings;
    let sources = hooks::Sources {
        refs: cfg.hook_refs(),
        config_file: cfg.hooks_file.as_deref(),
        settings_json: serde_json::to_string(s).unwrap_or_else(|_| "{}".into()),
        age: AGE.load(std::sync::atomic::Ordering::Relaxed),
        master_pid: std::os::unix::process::parent_id() as i32,
    };
    let run = || -> PyResult<()> {
        if let Some(h) = hooks::install(py, support, sources)? {
            h.call(py, "post_fork")?;
        }
        Ok(())
    };
    run().map_err(|e| {
        error!(
            "Exception in worker process\n{}",
            python::traceback_text(py, &e)
        );
        WORKER_BOOT_ERROR
    })
}

/// post_worker_init, once the app is imported.
fn after_import(py: Python<'_>, app: &Py<PyAny>) -> Result<(), i32> {
    let Some(h) = hooks::installed() else {
        return Ok(());
    };
    h.post_worker_init(py, app).map_err(|e| {
        error!(
            "Exception in worker process\n{}",
            python::traceback_text(py, &e)
        );
        WORKER_BOOT_ERROR
    })
}

static AGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next worker's place in the order of workers started (set by the
/// process that forks it, which the worker inherits).
pub fn set_age(age: u64) {
    AGE.store(age, std::sync::atomic::Ordering::Relaxed);
}

/// Leave the worker without Python finalisation (app threads may hold the
/// GIL); every line we logged is already written.
pub fn exit(code: i32) -> ! {
    // gunicorn runs worker_exit on every way out of a worker it can see.
    hooks::run_on_the_way_out("worker_exit", HOOK_TIME_ON_EXIT);
    crate::sys::exit_now(code)
}

/// How long a hook may hold up a worker that is leaving.
pub const HOOK_TIME_ON_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything up to an imported app; an Err is the exit code. `hooks`:
/// a worker's server hooks run (not for `--check-config`, as in gunicorn).
pub fn boot(cfg: &Config, hooks: bool) -> Result<python::LoadedApp, i32> {
    let s = &cfg.settings;
    if let Err(e) = privileges::drop_to(cfg.uid, cfg.gid, s.initgroups) {
        error!("Could not drop privileges: {e}");
        return Err(WORKER_BOOT_ERROR);
    }
    if let Err(e) = python::init(&Startup {
        virtualenv: s.virtualenv.as_deref(),
        chdir: &s.chdir,
        pythonpath: s.pythonpath.as_deref(),
        logconfig: cfg.logconfig(),
    }) {
        error!("{e}");
        return Err(WORKER_BOOT_ERROR);
    }
    Python::attach(|py| {
        let support = match Support::load(py) {
            Ok(s) => s,
            Err(e) => {
                error!(
                    "Could not load ferricorn's Python support: {}",
                    python::traceback_text(py, &e)
                );
                return Err(WORKER_BOOT_ERROR);
            }
        };
        if s.capture_output
            && let Err(e) = python::line_buffered_output(py)
        {
            crate::warning!("--capture-output: {}", python::traceback_text(py, &e));
        }
        if cfg.worker_class == WorkerClass::Gevent
            && let Err(e) = python::patch_gevent(py, &support)
        {
            error!("{e}");
            return Err(WORKER_BOOT_ERROR);
        }
        if hooks {
            boot_hooks(py, cfg, &support)?;
        }
        match python::load_app(py, &support, &s.app, cfg.logconfig()) {
            Ok(app) => {
                info!("Worker (pid:{}) loaded {}", std::process::id(), s.app);
                if hooks {
                    after_import(py, &app)?;
                }
                Ok(python::LoadedApp { app, support })
            }
            Err(e) => {
                error!("Exception in worker process\n{e}");
                Err(APP_LOAD_ERROR)
            }
        }
    })
}
