//! A worker's life after fork: title, privileges, Python, the app, then serving.

mod acceptor;
mod asgi;
mod dispatch;
mod event_loop;
mod gevent;
mod outbox;
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
use crate::python::{self, Startup, Support};
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
        // The app was imported in the master before fork; only privileges remain.
        Some(app) => privileges::drop_to(cfg.uid, cfg.gid, cfg.settings.initgroups)
            .map(|()| Python::attach(|py| app.clone_ref(py)))
            .map_err(|e| {
                error!("Could not drop privileges: {e}");
                WORKER_BOOT_ERROR
            }),
        None => boot(cfg),
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

/// Leave the worker without Python finalisation (app threads may hold the
/// GIL); every line we logged is already written.
pub fn exit(code: i32) -> ! {
    crate::sys::exit_now(code)
}

/// Everything up to an imported app; an Err is the exit code.
pub fn boot(cfg: &Config) -> Result<python::LoadedApp, i32> {
    let s = &cfg.settings;
    if let Err(e) = privileges::drop_to(cfg.uid, cfg.gid, s.initgroups) {
        error!("Could not drop privileges: {e}");
        return Err(WORKER_BOOT_ERROR);
    }
    if let Err(e) = python::init(&Startup {
        virtualenv: s.virtualenv.as_deref(),
        chdir: &s.chdir,
        pythonpath: s.pythonpath.as_deref(),
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
        if cfg.worker_class == WorkerClass::Gevent
            && let Err(e) = python::patch_gevent(py, &support)
        {
            error!("{e}");
            return Err(WORKER_BOOT_ERROR);
        }
        match python::load_app(py, &support, &s.app) {
            Ok(app) => {
                info!("Worker (pid:{}) loaded {}", std::process::id(), s.app);
                Ok(python::LoadedApp { app, support })
            }
            Err(e) => {
                error!("Exception in worker process\n{e}");
                Err(APP_LOAD_ERROR)
            }
        }
    })
}
