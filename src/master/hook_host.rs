//! gunicorn's arbiter hooks (`on_starting`, `when_ready`, `pre_fork`,
//! `child_exit`, `nworkers_changed`, `on_reload`, `pre_exec`, `on_exit`)
//! without Python in the master: they run in the hook host, a child of the
//! master that imports the hooks once and keeps them, so a hook's module
//! globals live from one call to the next as they do in gunicorn's arbiter.
//!
//! The master sends each call over a `SOCK_SEQPACKET` pair and waits for its
//! answer, as gunicorn's arbiter waits for its own call, but at most
//! `--graceful-timeout` (as long as a worker has to finish): a hook that
//! hangs is logged and the master goes on (a late answer is recognised by
//! its sequence number and dropped). The hook host
//! ignores the stop signals a terminal or systemd sends to the whole group,
//! so `on_exit` still runs when the master asks; it leaves when the master's
//! end of the socket closes, or with the master (PDEATHSIG).

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use serde_json::{Value, json};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::signals;
use crate::config::Config;
use crate::python::{self, Startup, Support};
use crate::{error, sys};
use pyo3::prelude::*;

/// How long the master waits for the hook host to start and read the hooks.
const START_TIME_LIMIT: Duration = Duration::from_secs(60);
/// The largest message either way (the settings are a few KB).
const MAX_MESSAGE: usize = 256 * 1024;

pub struct HookHost {
    pid: i32,
    sock: OwnedFd,
    seq: u64,
    hooks: Vec<String>,
    /// How long the master waits for one hook before going on without it.
    deadline: Duration,
}

/// What a hook is called with, besides `server`.
pub enum Call {
    Server,
    /// pre_fork: the worker about to be forked.
    Forking {
        age: u64,
    },
    /// child_exit: a worker that was reaped.
    Exited {
        pid: i32,
        age: u64,
    },
    NworkersChanged {
        new: u32,
        old: Option<u32>,
    },
}

impl HookHost {
    /// Fork the hook host and hand it the hooks; None when the
    /// configuration sets no arbiter hook (the host is gone again). The
    /// child closes `close_in_child` (the master's sockets and pipes).
    pub fn start(cfg: &Config, close_in_child: &[i32]) -> anyhow::Result<Option<HookHost>> {
        if cfg.hooks_file.is_none() && cfg.hook_refs().is_empty() {
            return Ok(None);
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let master = std::process::id() as i32;
        // SAFETY: the master is single-threaded and has not started Python;
        // the child only runs our code and Python's initialisation.
        let pid = match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Parent { child } => child.as_raw(),
            nix::unistd::ForkResult::Child => {
                drop(ours);
                for &fd in close_in_child {
                    sys::close_fd(fd);
                }
                serve(cfg, master, theirs)
            }
        };
        drop(theirs);
        let mut host = HookHost {
            pid,
            sock: ours,
            seq: 0,
            hooks: Vec::new(),
            deadline: START_TIME_LIMIT,
        };
        match host.configure(cfg) {
            Ok(()) if host.hooks.is_empty() => {
                host.stop();
                Ok(None)
            }
            Ok(()) => Ok(Some(host)),
            Err(e) => {
                host.stop();
                Err(e)
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The hook host's socket, which a forked worker must not keep.
    pub fn raw_fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// The hooks of `cfg` (again after a reload, which re-runs a `*.py` config).
    pub fn configure(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let refs: serde_json::Map<String, Value> = cfg
            .hook_refs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::from(v)))
            .collect();
        self.send(&json!({
            "op": "configure",
            "refs": refs,
            "config_file": cfg.hooks_file,
            "settings": cfg.settings,
        }))?;
        let reply = self
            .receive(START_TIME_LIMIT, |_| true)?
            .ok_or_else(|| anyhow::anyhow!("no answer within {START_TIME_LIMIT:?}"))?;
        if let Some(e) = reply.get("error").and_then(Value::as_str) {
            anyhow::bail!("{e}");
        }
        self.hooks = serde_json::from_value(reply["hooks"].clone())?;
        self.deadline = Duration::from_secs(cfg.settings.graceful_timeout.max(1));
        Ok(())
    }

    /// Run `hook` and wait for it (at most `--graceful-timeout`). Err carries what to
    /// log: the hook's traceback, or that it did not answer.
    pub fn call(&mut self, hook: &str, call: Call, num_workers: u32) -> Result<(), String> {
        if !self.hooks.iter().any(|h| h == hook) {
            return Ok(());
        }
        self.seq += 1;
        let seq = self.seq;
        let mut msg = json!({"op": "call", "seq": seq, "hook": hook, "num_workers": num_workers});
        match call {
            Call::Server => {}
            Call::Forking { age } => msg["age"] = age.into(),
            Call::Exited { pid, age } => {
                msg["pid"] = pid.into();
                msg["age"] = age.into();
            }
            Call::NworkersChanged { new, old } => {
                msg["new"] = new.into();
                msg["old"] = old.into();
            }
        }
        self.send(&msg)
            .map_err(|e| format!("the hook host is gone: {e:#}"))?;
        match self.receive(self.deadline, |r| r["seq"].as_u64() == Some(seq)) {
            Ok(Some(reply)) => match reply["error"].as_str() {
                Some(tb) => Err(format!("Exception in {hook} hook\n{tb}")),
                None => Ok(()),
            },
            Ok(None) => Err(format!(
                "The {hook} hook did not finish in {} s (--graceful-timeout): going on without it",
                self.deadline.as_secs()
            )),
            Err(e) => Err(format!("the hook host is gone: {e:#}")),
        }
    }

    /// Run `hook` and log what went wrong; the caller goes on either way.
    pub fn run(&mut self, hook: &str, call: Call, num_workers: u32) {
        if let Err(e) = self.call(hook, call, num_workers) {
            error!("{e}");
        }
    }

    /// A worker was forked after pre_fork: it joins `server.WORKERS`.
    pub fn forked(&mut self, age: u64, pid: i32) {
        if self.hooks.is_empty() {
            return;
        }
        let _ = self.send(&json!({"op": "forked", "age": age, "pid": pid}));
    }

    /// End the hook host (after on_exit, or before an exec).
    pub fn stop(self) {
        drop(self.sock);
        // It leaves when its socket closes; a hook still running has until
        // the deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(self.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
                // Reaped now, or already.
                _ => return,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sys::kill(self.pid, Signal::SIGKILL);
        let _ = sys::wait_pid(self.pid);
    }

    /// It exited and was reaped already.
    pub fn forget(self) {}

    fn send(&self, msg: &Value) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(msg)?;
        send(self.sock.as_raw_fd(), &bytes, MsgFlags::empty())?;
        Ok(())
    }

    /// The first answer `wanted` accepts within `within` (None: none came).
    fn receive(
        &self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            let timeout =
                PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let n = recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            if n == 0 {
                anyhow::bail!("it exited");
            }
            let reply: Value = serde_json::from_slice(&buf[..n])?;
            if wanted(&reply) {
                return Ok(Some(reply));
            }
        }
    }
}

/// The hook host's life: start Python, then answer the master's messages
/// until its end of the socket closes.
fn serve(cfg: &Config, master: i32, sock: OwnedFd) -> ! {
    signals::reset_in_child();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGWINCH,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) };
    }
    // The stop signals are ignored, so the master's death must kill.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid().as_raw() != master {
        sys::exit_now(0);
    }
    crate::proctitle::set(&format!("ferricorn: hook host [{}]", cfg.proc_name));
    let reply = |text: &str| {
        let _ = send(sock.as_raw_fd(), text.as_bytes(), MsgFlags::empty());
    };
    let s = &cfg.settings;
    let startup = Startup {
        virtualenv: s.virtualenv.as_deref(),
        chdir: &s.chdir,
        pythonpath: s.pythonpath.as_deref(),
        logconfig: cfg.logconfig(),
    };
    let host = python::init(&startup).and_then(|()| {
        Python::attach(|py| {
            let made = || -> PyResult<Py<PyAny>> {
                let support = Support::load(py)?;
                python::route_logging(py, &support)
                    .map_err(pyo3::exceptions::PyRuntimeError::new_err)?;
                Ok(support.attr(py, "ArbiterHooks")?.call1((master,))?.unbind())
            };
            made().map_err(|e| python::traceback_text(py, &e))
        })
    });
    let host = match host {
        Ok(h) => h,
        Err(e) => {
            reply(&json!({ "error": e }).to_string());
            sys::exit_now(1);
        }
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => sys::exit_now(0),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => sys::exit_now(0),
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let answer = Python::attach(|py| {
            host.call_method1(py, "handle", (text.as_ref(),))
                .and_then(|r| r.extract::<Option<String>>(py))
                .map_err(|e| python::traceback_text(py, &e))
        });
        match answer {
            Ok(Some(a)) => reply(&a),
            Ok(None) => {}
            Err(e) => reply(&json!({ "error": e, "seq": seq_of(&text) }).to_string()),
        }
    }
}

fn seq_of(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .map(|m| m["seq"].clone())
        .unwrap_or(Value::Null)
}
