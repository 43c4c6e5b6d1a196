//! The master's decisions, as a state machine: the server's `Phase`, each
//! worker's `State`, and what every event means in every phase. `handle`
//! takes an event and the time and returns the actions to perform; it makes
//! no system call, so every transition is unit-tested without processes.
//! The poll loop (`super::Master`) turns signals, status messages, exits and
//! ticks into events, and performs the actions: fork, kill, notify, exec.

use nix::sys::signal::Signal as Sig;
use std::time::{Duration, Instant};

use super::upgrade::CHECK_TIME_LIMIT;
use crate::proto::{APP_LOAD_ERROR, Kind, Msg, WORKER_BOOT_ERROR};
use crate::sys::Exit;
use crate::{critical, error, info, warning};

/// The longest wait between attempts to boot a replacement worker.
const BOOT_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a worker gets between SIGABRT and SIGKILL after a timeout.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How often STATUS= may change.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first generation boots; READY=1 is not sent yet.
    Starting,
    /// READY=1 was sent; the current generation serves.
    Serving,
    /// HUP (or an upgrade's handover): a new generation boots while the
    /// previous one serves; it retires once the new one is up.
    Reloading,
    /// USR2: the binary on disk checks our configuration (`pid`).
    Upgrading { pid: i32, started: Instant },
    /// Workers were told to stop; the master exits once they are gone.
    Stopping { quick: bool },
    /// The first generation could not boot: stop everything now, exit `code`.
    Halting { code: i32 },
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Reloading => "reloading",
            Phase::Upgrading { .. } => "upgrading",
            Phase::Stopping { .. } => "stopping",
            Phase::Halting { .. } => "halting",
        }
    }
}

/// Where one worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Forked; its app is not imported yet.
    Booting,
    Serving,
    /// Sent TERM (reload, TTOU, stop): killed at the deadline.
    Retiring {
        deadline: Instant,
    },
    /// Silent past `--timeout`: sent ABRT, killed after a grace.
    Aborting {
        since: Instant,
    },
    /// Sent KILL; only its exit is left.
    Killed,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub pid: i32,
    pub generation: u64,
    pub state: State,
    /// It reported its app imported (it may since be retiring).
    pub booted: bool,
    pub last_seen: Instant,
    /// When it was forked (or adopted).
    pub started: Instant,
    pub requests: u64,
    pub in_flight: u32,
    /// When `--max-worker-lifetime` (plus this worker's jitter) is up.
    pub lifetime_end: Option<Instant>,
    /// Memory checks in a row above `--max-worker-memory`.
    pub over_memory: u32,
    /// Marked for replacement: it serves on (not counted towards the
    /// target) until its replacement has booted, then retires.
    pub replacing: Option<Recycle>,
}

/// Why a serving worker is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recycle {
    Memory,
    Lifetime,
    /// An app thread is stuck in a request past `--request-timeout`.
    RequestTimeout,
}

impl Recycle {
    pub fn name(self) -> &'static str {
        match self {
            Recycle::Memory => "memory",
            Recycle::Lifetime => "lifetime",
            Recycle::RequestTimeout => "request_timeout",
        }
    }
}

/// Why workers are replaced, as `/metrics` names them.
pub const RESTART_REASONS: [&str; 7] = [
    "memory",
    "lifetime",
    "timeout",
    "request_timeout",
    "max_requests",
    "crash",
    "boot_failure",
];

/// Checks in a row above `--max-worker-memory` before a worker is replaced:
/// a short spike (a large upload being parsed) is not a leak.
pub const MEMORY_SAMPLES: u32 = 3;

/// A signal the master acts on, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Quit,
    Hup,
    Ttin,
    Ttou,
    Usr1,
    Usr2,
    /// gunicorn's "stop the workers when daemonized": we never daemonize.
    Winch,
}

impl Signal {
    #[cfg(test)]
    pub const ALL: [Signal; 9] = [
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Ttin,
        Signal::Ttou,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Winch,
    ];

    /// What a caught signal means, if the master acts on it.
    pub fn of(sig: Sig) -> Option<Signal> {
        Some(match sig {
            Sig::SIGTERM => Signal::Term,
            Sig::SIGINT => Signal::Int,
            Sig::SIGQUIT => Signal::Quit,
            Sig::SIGHUP => Signal::Hup,
            Sig::SIGTTIN => Signal::Ttin,
            Sig::SIGTTOU => Signal::Ttou,
            Sig::SIGUSR1 => Signal::Usr1,
            Sig::SIGUSR2 => Signal::Usr2,
            Sig::SIGWINCH => Signal::Winch,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "term",
            Signal::Int => "int",
            Signal::Quit => "quit",
            Signal::Hup => "hup",
            Signal::Ttin => "ttin",
            Signal::Ttou => "ttou",
            Signal::Usr1 => "usr1",
            Signal::Usr2 => "usr2",
            Signal::Winch => "winch",
        }
    }
}

/// The settings the supervision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub workers: u32,
    pub graceful: Duration,
    /// A worker silent this long is aborted (zero: never).
    pub timeout: Duration,
    /// Resident memory above which a worker is replaced (zero: never).
    pub max_memory: u64,
    /// A worker is replaced after this long (zero: never), plus up to
    /// `lifetime_jitter`.
    pub lifetime: Duration,
    pub lifetime_jitter: Duration,
}

#[derive(Debug)]
pub enum Event {
    Signal(Signal),
    /// A status message from a worker.
    Message {
        pid: i32,
        msg: Msg,
    },
    /// A child was reaped.
    Exited {
        pid: i32,
        exit: Exit,
    },
    /// A worker's resident memory, sampled.
    Memory {
        pid: i32,
        bytes: u64,
    },
    /// Time passed: deadlines, timeouts, the worker count, readiness.
    Tick,
    /// Results of actions the loop performed.
    Spawned {
        pid: i32,
    },
    SpawnFailed(String),
    ConfigLoaded(Tuning),
    ConfigRefused(String),
    /// `ferricorn ctl scale N`: this many workers from now on.
    Scale(u32),
    CheckStarted {
        pid: i32,
    },
    /// The check ended: passed, or why not.
    CheckEnded(Result<(), String>),
    UpgradeRefused(String),
    /// `Exec` returned: the new image did not start.
    ExecFailed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fork a worker of the current generation; answer `Spawned` or `SpawnFailed`.
    Spawn,
    Kill {
        pid: i32,
        signal: Sig,
    },
    /// A line for systemd's notify socket.
    Notify(String),
    PingWatchdog,
    /// This worker is gone: release its pipe and its seat.
    Forget {
        pid: i32,
    },
    ReopenLogs,
    /// Close our copies of the listening sockets (stopping).
    CloseListeners,
    /// Read the configuration again and rebind; answer `ConfigLoaded` or `ConfigRefused`.
    LoadConfig,
    /// Run the binary on disk with `--check-config`; answer `CheckStarted` or `UpgradeRefused`.
    StartCheck,
    /// The check passed: hand the workers over and exec. Returning at all
    /// means the exec failed: answer `UpgradeRefused`.
    Exec,
    /// Stop the loop and exit with this code (every worker is gone).
    Exit(i32),
    /// Stop every worker at once and exit with this code.
    Halt(i32),
}

pub struct Supervisor {
    phase: Phase,
    workers: Vec<Record>,
    tuning: Tuning,
    generation: u64,
    requests_done: u64,
    /// A HUP came before the first generation was up: reload once it is.
    reload_pending: bool,
    /// A replacement failed to boot after the first generation did:
    /// failures in a row, and when the next may be started.
    boot_retry: Option<(u32, Instant)>,
    /// Appended to STATUS= until the next successful reload or boot.
    status_note: Option<String>,
    last_status: Option<(Instant, String)>,
    /// Workers replaced, by reason (`RESTART_REASONS`).
    restarts: std::collections::BTreeMap<&'static str, u64>,
    /// Seconds from fork to booted, summed, and how many boots.
    boots: (f64, u64),
    /// When the reload in progress began; reloads that ended, and how the
    /// last one did (for `ferricorn ctl reload`).
    reload_started: Option<Instant>,
    reload_outcomes: u64,
    last_reload: String,
    actions: Vec<Action>,
}

/// A worker handed over by the previous image (USR2).
pub struct Adopted {
    pub pid: i32,
    pub booted: bool,
    pub requests: u64,
    pub retiring: bool,
}

impl Supervisor {
    pub fn new(tuning: Tuning) -> Supervisor {
        Supervisor {
            phase: Phase::Starting,
            workers: Vec::new(),
            tuning,
            generation: 1,
            requests_done: 0,
            reload_pending: false,
            boot_retry: None,
            status_note: None,
            last_status: None,
            restarts: Default::default(),
            boots: (0.0, 0),
            reload_started: None,
            reload_outcomes: 0,
            last_reload: String::new(),
            actions: Vec::new(),
        }
    }

    /// After an in-place upgrade: the previous image's workers keep serving
    /// (generation 0) until ours are up; then READY=1 ends the reload that
    /// the previous image announced.
    pub fn adopt(&mut self, workers: &[Adopted], now: Instant) {
        for w in workers {
            self.requests_done += w.requests;
            let state = match (w.retiring, w.booted) {
                (true, _) => State::Retiring {
                    deadline: now + self.tuning.graceful,
                },
                (false, true) => State::Serving,
                (false, false) => State::Booting,
            };
            self.workers.push(Record {
                pid: w.pid,
                generation: 0,
                state,
                booted: w.booted,
                last_seen: now,
                started: now,
                requests: w.requests,
                in_flight: 0,
                lifetime_end: None,
                over_memory: 0,
                replacing: None,
            });
        }
        self.phase = Phase::Reloading;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn workers(&self) -> &[Record] {
        &self.workers
    }

    pub fn target(&self) -> u32 {
        self.tuning.workers
    }

    pub fn requests_done(&self) -> u64 {
        self.requests_done
    }

    /// Reloads that ended (completed, failed or refused), and how the last did.
    pub fn reloads(&self) -> (u64, &str) {
        (self.reload_outcomes, &self.last_reload)
    }

    /// Workers serving in the current generation, not marked for replacement.
    pub fn serving(&self) -> u32 {
        self.current()
            .iter()
            .filter(|&&i| self.workers[i].state == State::Serving)
            .count() as u32
    }

    pub fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// `/livez`: the master runs and some worker is alive (booting counts).
    pub fn live(&self) -> bool {
        !matches!(self.phase, Phase::Halting { .. })
            && self.workers.iter().any(|w| {
                matches!(
                    w.state,
                    State::Booting | State::Serving | State::Retiring { .. }
                )
            })
    }

    /// `/readyz`: a worker serves and the server is not stopping, so a load
    /// balancer sends traffic here; 503 from the moment a stop begins.
    pub fn ready(&self) -> bool {
        !matches!(self.phase, Phase::Stopping { .. } | Phase::Halting { .. })
            && self.workers.iter().any(|w| w.state == State::Serving)
    }

    /// Some worker is alive and able to serve (the watchdog's "in control").
    /// Before READY, a worker still importing the app counts: a slow import
    /// is `TimeoutStartSec=`'s business, not the watchdog's.
    pub fn healthy(&self) -> bool {
        let starting = self.phase == Phase::Starting;
        self.workers
            .iter()
            .any(|w| (w.booted || starting) && !matches!(w.state, State::Aborting { .. }))
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Signal(sig) => self.signal(sig, now),
            Event::Message { pid, msg } => self.message(pid, msg, now),
            Event::Exited { pid, exit } => self.exited(pid, exit, now),
            Event::Tick => self.tick(now),
            Event::Spawned { pid } => {
                info!("Booting worker with pid: {pid}");
                let lifetime_end = (!self.tuning.lifetime.is_zero())
                    .then(|| now + self.tuning.lifetime + jitter(pid, self.tuning.lifetime_jitter));
                self.workers.push(Record {
                    pid,
                    generation: self.generation,
                    state: State::Booting,
                    booted: false,
                    last_seen: now,
                    started: now,
                    requests: 0,
                    in_flight: 0,
                    lifetime_end,
                    over_memory: 0,
                    replacing: None,
                });
            }
            Event::Memory { pid, bytes } => self.memory(pid, bytes),
            Event::SpawnFailed(e) => {
                error!("Could not start a worker: {e}");
                self.halt(WORKER_BOOT_ERROR);
            }
            Event::ConfigLoaded(tuning) => self.reloaded(tuning, now),
            Event::Scale(n) => {
                self.tuning.workers = n.max(1);
                info!("Number of workers: {}", self.tuning.workers);
            }
            Event::ConfigRefused(e) => {
                self.reload_ended(format!("reload refused: {e}"));
                error!("Reload refused, keeping the running configuration: {e}");
            }
            Event::CheckStarted { pid } => {
                self.phase = Phase::Upgrading { pid, started: now };
            }
            Event::CheckEnded(result) => self.checked(result, now),
            Event::UpgradeRefused(why) => self.upgrade_refused(&why, now),
            Event::ExecFailed(why) => {
                self.upgrade_refused(&why, now);
                // Ends the RELOADING=1 sent before the exec.
                self.act(Action::Notify("READY=1".into()));
            }
        }
        std::mem::take(&mut self.actions)
    }

    fn act(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn kill(&mut self, pid: i32, signal: Sig) {
        self.act(Action::Kill { pid, signal });
    }

    fn signal(&mut self, sig: Signal, now: Instant) {
        info!("Handling signal: {}", sig.name());
        match (self.phase, sig) {
            (Phase::Halting { .. }, _) | (_, Signal::Winch) => {}
            (_, Signal::Usr1) => {
                self.act(Action::ReopenLogs);
                let pids: Vec<i32> = self.workers.iter().map(|w| w.pid).collect();
                for pid in pids {
                    self.kill(pid, Sig::SIGUSR1);
                }
            }
            // Once stopping, only a faster stop still means something: a
            // reload or an upgrade would fork workers the stop then kills,
            // and tell systemd RELOADING=1 after STOPPING=1.
            (Phase::Stopping { .. }, Signal::Term) => {}
            (Phase::Stopping { quick, .. }, Signal::Int | Signal::Quit) => {
                let pids: Vec<i32> = self.workers.iter().map(|w| w.pid).collect();
                for pid in pids {
                    self.kill(pid, Sig::SIGQUIT);
                }
                let _ = quick;
                self.phase = Phase::Stopping { quick: true };
            }
            (Phase::Stopping { .. }, Signal::Hup) => {
                info!("Ignoring HUP: stopping");
                self.reload_ended("reload refused: the server is stopping".into());
            }
            (Phase::Stopping { .. }, _) => info!("Ignoring {}: stopping", sig.name()),
            (_, Signal::Term) => self.begin_stop(false, now),
            (_, Signal::Int | Signal::Quit) => self.begin_stop(true, now),
            (Phase::Starting, Signal::Hup) => {
                info!("Reload deferred until the first workers are ready");
                self.reload_pending = true;
            }
            (Phase::Upgrading { .. }, Signal::Hup) => {
                warning!("HUP ignored: an upgrade is in progress");
                // `ferricorn ctl reload` waits for an outcome: this is it.
                self.reload_ended("reload refused: an upgrade is in progress".into());
            }
            (_, Signal::Hup) => self.act(Action::LoadConfig),
            (Phase::Serving, Signal::Usr2) => self.act(Action::StartCheck),
            (Phase::Starting, Signal::Usr2) => {
                warning!("USR2 ignored: the first workers are not ready yet");
            }
            (_, Signal::Usr2) => {
                warning!("USR2 ignored: an upgrade or reload is already in progress");
            }
            (_, Signal::Ttin) => {
                self.tuning.workers += 1;
                info!("Number of workers: {}", self.tuning.workers);
            }
            (_, Signal::Ttou) => {
                if self.tuning.workers > 1 {
                    self.tuning.workers -= 1;
                }
                info!("Number of workers: {}", self.tuning.workers);
            }
        }
    }

    fn begin_stop(&mut self, quick: bool, now: Instant) {
        self.act(Action::Notify("STOPPING=1".into()));
        // Our copies of the listeners close: workers close theirs as they
        // stop accepting, so once they are gone nothing accepts connections
        // we could not serve. (A systemd-owned socket stays open in systemd.)
        self.act(Action::CloseListeners);
        if let Phase::Upgrading { pid, .. } = self.phase {
            self.kill(pid, Sig::SIGKILL);
        }
        let sig = if quick { Sig::SIGQUIT } else { Sig::SIGTERM };
        let deadline = now + self.tuning.graceful;
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            if w.state != State::Killed {
                w.state = State::Retiring { deadline };
            }
            let pid = w.pid;
            self.kill(pid, sig);
        }
        if !quick {
            self.act(Action::Notify(format!(
                "EXTEND_TIMEOUT_USEC={}",
                (self.tuning.graceful + Duration::from_secs(5)).as_micros()
            )));
        }
        self.phase = Phase::Stopping { quick };
    }

    fn reload_ended(&mut self, outcome: String) {
        self.reload_outcomes += 1;
        self.last_reload = outcome;
        self.reload_started = None;
    }

    fn reloaded(&mut self, tuning: Tuning, now: Instant) {
        self.act(Action::Notify(format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::systemd::notify::monotonic_usec()
        )));
        self.tuning = tuning;
        self.generation += 1;
        self.phase = Phase::Reloading;
        self.reload_started.get_or_insert(now);
        // A fixed deploy is tried at once, not after the retry's wait.
        self.boot_retry = None;
        info!("Reloading: starting {} new workers", tuning.workers);
    }

    fn upgrade_refused(&mut self, why: &str, now: Instant) {
        error!("Upgrade refused, the running workers keep serving: {why}");
        self.status_note = Some(format!("upgrade refused: {why}"));
        // Show it now rather than at the next rate-limited update.
        self.last_status = None;
        if let Phase::Upgrading { .. } = self.phase {
            self.phase = Phase::Serving;
        }
        self.update_status(now);
    }

    fn message(&mut self, pid: i32, msg: Msg, now: Instant) {
        let winding_down = matches!(self.phase, Phase::Stopping { .. } | Phase::Halting { .. });
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        w.last_seen = now;
        w.in_flight = msg.in_flight;
        if msg.requests > w.requests {
            self.requests_done += msg.requests - w.requests;
            w.requests = msg.requests;
        }
        if msg.kind == Kind::Booted && !w.booted {
            w.booted = true;
            self.boots.0 += now.duration_since(w.started).as_secs_f64();
            self.boots.1 += 1;
            if w.state == State::Booting {
                w.state = State::Serving;
            }
            crate::debug!("Worker (pid:{pid}) booted");
            if let Some((failures, _)) = self.boot_retry.take() {
                info!("A worker booted again after {failures} failed boot(s)");
                self.status_note = None;
            }
        }
        if msg.kind == Kind::Reload {
            // Each worker of a generation sees the change: the first asks.
            let current = w.generation == self.generation;
            if current && self.phase == Phase::Serving {
                info!("Reloading: worker (pid:{pid}) saw the app's code change");
                self.act(Action::LoadConfig);
            }
            return;
        }
        if msg.kind == Kind::Replace
            && w.state == State::Serving
            && w.replacing.is_none()
            && !winding_down
        {
            // The worker logged which request and where; a replacement
            // boots first unless the server is on its way down anyway.
            info!("Worker (pid:{pid}) has an app thread stuck past request_timeout: replacing it");
            w.replacing = Some(Recycle::RequestTimeout);
            self.count_restart(Recycle::RequestTimeout.name());
        }
    }

    fn exited(&mut self, pid: i32, exit: Exit, now: Instant) {
        let Some(idx) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let w = self.workers.remove(idx);
        self.act(Action::Forget { pid });
        match exit {
            // Retired, stopping, or recycled after max_requests.
            Exit::Code(0) => info!("Worker exiting (pid: {pid})"),
            Exit::Code(code) => error!("Worker (pid:{pid}) exited with code {code}"),
            Exit::Signal(Sig::SIGKILL) => {
                error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
            }
            Exit::Signal(sig) => {
                error!("Worker (pid:{pid}) was sent {}!", sig.as_str())
            }
        }
        let expected = matches!(self.phase, Phase::Stopping { .. } | Phase::Halting { .. });
        match w.state {
            _ if expected => {}
            State::Booting => {
                self.count_restart("boot_failure");
                self.boot_failed(&w, exit, now);
            }
            // Counted when it was marked (a sync worker stuck past
            // --request-timeout drains itself without waiting).
            State::Serving if w.replacing.is_some() && exit == Exit::Code(0) => {}
            // A serving worker leaves on its own otherwise only after --max-requests.
            State::Serving if exit == Exit::Code(0) => self.count_restart("max_requests"),
            State::Serving => self.count_restart("crash"),
            _ => {}
        }
    }

    /// The new image's `--check-config` ended (USR2).
    fn checked(&mut self, result: Result<(), String>, now: Instant) {
        if !matches!(self.phase, Phase::Upgrading { .. }) {
            // Stopped meanwhile: the check was killed, nothing to do.
            return;
        }
        match result {
            Ok(()) => {
                self.act(Action::Notify(format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    crate::systemd::notify::monotonic_usec()
                )));
                self.act(Action::Exec);
            }
            Err(why) => self.upgrade_refused(&why, now),
        }
    }

    /// A worker died before it booted: never respawn in a loop.
    fn boot_failed(&mut self, w: &Record, exit: Exit, now: Instant) {
        let code = match exit {
            Exit::Code(APP_LOAD_ERROR) => APP_LOAD_ERROR,
            _ => WORKER_BOOT_ERROR,
        };
        let previous_serving = self
            .workers
            .iter()
            .any(|o| o.generation < w.generation && o.state == State::Serving);
        if self.phase == Phase::Reloading && previous_serving {
            error!(
                "Reload failed: the new workers could not start (exit {code}); the running workers keep serving"
            );
            self.abort_reload(now);
            return;
        }
        let reason = if code == APP_LOAD_ERROR {
            "App failed to load."
        } else {
            "Worker failed to boot."
        };
        if self.phase != Phase::Starting {
            // A replacement (after a crash, max-requests, TTIN) cannot boot,
            // say while a database is down or a file of a deploy is broken:
            // the workers that run keep serving, and it is tried again, less
            // and less often. Only a first boot that fails stops the server.
            let failures = self.boot_retry.map_or(1, |(n, _)| n + 1);
            let delay = Duration::from_secs(1u64 << (failures - 1).min(5)).min(BOOT_RETRY_MAX);
            let serving = self.workers.iter().filter(|o| o.booted).count();
            error!(
                "{reason} Worker (pid:{}) exited with code {code}; {serving} worker(s) keep serving; trying again in {} s",
                w.pid,
                delay.as_secs()
            );
            self.boot_retry = Some((failures, now + delay));
            self.status_note = Some(format!(
                "a new worker failed to boot {failures} time(s) (exit {code}), retrying"
            ));
            return;
        }
        error!("Shutting down: Master");
        error!("Reason: {reason}");
        self.halt(code);
    }

    fn halt(&mut self, code: i32) {
        self.phase = Phase::Halting { code };
        self.act(Action::Halt(code));
    }

    fn retire(&mut self, idx: usize, now: Instant) {
        let deadline = now + self.tuning.graceful;
        let w = &mut self.workers[idx];
        w.state = State::Retiring { deadline };
        let pid = w.pid;
        self.kill(pid, Sig::SIGTERM);
    }

    fn abort_reload(&mut self, now: Instant) {
        let current = self.generation;
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            if w.generation == current && !matches!(w.state, State::Retiring { .. }) {
                self.retire(i, now);
            }
        }
        // The previous generation becomes current again.
        self.generation = self
            .workers
            .iter()
            .filter(|w| matches!(w.state, State::Serving | State::Booting))
            .map(|w| w.generation)
            .max()
            .unwrap_or(current);
        self.phase = Phase::Serving;
        self.reload_ended(
            "reload failed: the new workers could not start; the previous ones serve".into(),
        );
        self.act(Action::Notify(
            "READY=1\nSTATUS=reload failed; previous workers serving".into(),
        ));
    }

    fn tick(&mut self, now: Instant) {
        self.deadlines(now);
        match self.phase {
            Phase::Halting { .. } => {}
            Phase::Stopping { .. } => {
                if self.workers.is_empty() {
                    self.act(Action::Exit(0));
                }
            }
            _ => {
                self.manage(now);
                self.update_status(now);
            }
        }
    }

    /// Timeouts and deadlines, in every phase.
    fn deadlines(&mut self, now: Instant) {
        if let Phase::Upgrading { pid, started } = self.phase
            && now.duration_since(started) > CHECK_TIME_LIMIT
        {
            self.kill(pid, Sig::SIGKILL);
        }
        let timeout = self.tuning.timeout;
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            let pid = w.pid;
            match w.state {
                State::Killed => {}
                State::Aborting { since } => {
                    if now.duration_since(since) >= ABORT_GRACE {
                        w.state = State::Killed;
                        self.kill(pid, Sig::SIGKILL);
                    }
                }
                State::Retiring { deadline } => {
                    if now >= deadline {
                        warning!("Killing worker (pid:{pid}) after graceful_timeout");
                        w.state = State::Killed;
                        self.kill(pid, Sig::SIGKILL);
                    }
                }
                State::Booting | State::Serving => {
                    if !timeout.is_zero() && now.duration_since(w.last_seen) > timeout {
                        critical!("WORKER TIMEOUT (pid:{pid})");
                        w.state = State::Aborting { since: now };
                        self.kill(pid, Sig::SIGABRT);
                        self.count_restart("timeout");
                    }
                }
            }
        }
    }

    /// Workers of the current generation, oldest first.
    fn current(&self) -> Vec<usize> {
        (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.generation == self.generation
                    && matches!(w.state, State::Booting | State::Serving)
                    && w.replacing.is_none()
            })
            .collect()
    }

    /// A memory sample: three in a row over the limit mark the worker.
    fn memory(&mut self, pid: i32, bytes: u64) {
        let limit = self.tuning.max_memory;
        let serving = self.phase == Phase::Serving;
        let Some(w) = self.workers.iter_mut().find(|w| w.pid == pid) else {
            return;
        };
        if limit == 0 || w.state != State::Serving || w.replacing.is_some() {
            return;
        }
        w.over_memory = if bytes > limit { w.over_memory + 1 } else { 0 };
        if w.over_memory >= MEMORY_SAMPLES && serving {
            warning!(
                "Worker (pid:{pid}) uses {} MB, over max_worker_memory ({} MB) {MEMORY_SAMPLES} times in a row: replacing it",
                bytes >> 20,
                limit >> 20
            );
            w.replacing = Some(Recycle::Memory);
            *self.restarts.entry(Recycle::Memory.name()).or_default() += 1;
        }
    }

    /// `--max-worker-lifetime`: one worker at a time, so that the pool
    /// never loses more than one worker's capacity to replacements.
    fn lifetimes(&mut self, now: Instant) {
        if self.phase != Phase::Serving || self.workers.iter().any(|w| w.replacing.is_some()) {
            return;
        }
        let lifetime = self.tuning.lifetime.as_secs();
        let due = self
            .workers
            .iter_mut()
            .find(|w| w.state == State::Serving && w.lifetime_end.is_some_and(|end| now >= end));
        if let Some(w) = due {
            info!(
                "Worker (pid:{}) reached max_worker_lifetime ({lifetime} s): replacing it",
                w.pid
            );
            w.replacing = Some(Recycle::Lifetime);
            *self.restarts.entry(Recycle::Lifetime.name()).or_default() += 1;
        }
    }

    /// Workers replaced so far, by reason.
    #[cfg(test)]
    pub fn recycled(&self, why: Recycle) -> u64 {
        self.restarts.get(why.name()).copied().unwrap_or(0)
    }

    /// Worker boots so far: their total seconds from fork to booted, and their number.
    pub fn boot_seconds(&self) -> (f64, u64) {
        self.boots
    }

    /// Every reason a worker is replaced, with how often it happened.
    pub fn restarts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RESTART_REASONS
            .iter()
            .map(|&r| (r, self.restarts.get(r).copied().unwrap_or(0)))
    }

    fn count_restart(&mut self, reason: &'static str) {
        *self.restarts.entry(reason).or_default() += 1;
    }

    fn manage(&mut self, now: Instant) {
        self.lifetimes(now);
        let current = self.current();
        let have = current.len() as u32;
        let target = self.tuning.workers;
        if have > target {
            // Retire the oldest first, as gunicorn does for TTOU.
            for &i in current.iter().take((have - target) as usize) {
                self.retire(i, now);
            }
        }
        let waiting = self.boot_retry.is_some_and(|(_, next)| now < next);
        if !waiting {
            for _ in have..target {
                self.act(Action::Spawn);
            }
        }
        if self.serving() < target {
            return;
        }
        // Replacements are up: the workers they replace retire.
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            if w.replacing.is_some() && w.state == State::Serving {
                self.retire(i, now);
            }
        }
        match self.phase {
            Phase::Reloading => {
                for i in 0..self.workers.len() {
                    let w = &self.workers[i];
                    if w.generation < self.generation && !matches!(w.state, State::Retiring { .. })
                    {
                        self.retire(i, now);
                    }
                }
                self.phase = Phase::Serving;
                self.status_note = None;
                info!(
                    "Reload complete: {target} workers of generation {}",
                    self.generation
                );
                let took = self
                    .reload_started
                    .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
                self.reload_ended(format!(
                    "reloaded: {target} new workers ready in {took:.1} s"
                ));
                self.act(Action::Notify("READY=1".into()));
            }
            Phase::Starting => {
                self.phase = Phase::Serving;
                self.act(Action::Notify("READY=1".into()));
                info!("Ready: {target} workers accepting");
                self.act(Action::PingWatchdog);
                if std::mem::take(&mut self.reload_pending) {
                    self.act(Action::LoadConfig);
                }
            }
            _ => {}
        }
    }

    fn update_status(&mut self, now: Instant) {
        let booted = self
            .workers
            .iter()
            .filter(|w| w.booted && !matches!(w.state, State::Retiring { .. }))
            .count();
        let in_flight: u32 = self.workers.iter().map(|w| w.in_flight).sum();
        let mut status = format!(
            "{booted}/{} workers ready, {} requests served, {in_flight} in flight",
            self.tuning.workers, self.requests_done
        );
        if let Some(note) = &self.status_note {
            status.push_str("; ");
            status.push_str(note);
        }
        let due = match &self.last_status {
            Some((at, last)) => *last != status && now.duration_since(*at) >= STATUS_INTERVAL,
            None => true,
        };
        if due {
            self.act(Action::Notify(format!("STATUS={status}")));
            self.last_status = Some((now, status));
        }
    }
}

/// This worker's share of the lifetime jitter: spread by pid, the same
/// for a pid every time (the supervisor has no randomness of its own).
fn jitter(pid: i32, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let spread = (pid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    Duration::from_millis(spread % (max.as_millis() as u64 + 1))
}

#[cfg(test)]
mod tests;
