//! The master: a single-threaded poll loop over the signal pipe and the
//! workers' status pipes. It forks, reaps, times out and replaces workers,
//! and never runs Python or an async runtime, so forking stays safe.

mod pidfile;
pub mod signals;
mod spawn;
pub mod upgrade;

pub use pidfile::PidFile;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::{Cli, Config};
use crate::listen::Listener;
use crate::listen::balance::{Board, Seat};
use crate::proto::{APP_LOAD_ERROR, Kind, MSG_LEN, Msg, WORKER_BOOT_ERROR};
use crate::sys::{self, Exit};
use crate::systemd::notify::{self, Notifier};
use crate::systemd::watchdog::Watchdog;
use crate::{critical, error, info, warning};
use signals::SignalPipe;

/// The longest wait between attempts to boot a replacement worker.
const BOOT_RETRY_MAX: Duration = Duration::from_secs(30);

/// How long a worker gets between SIGABRT and SIGKILL after a timeout.
const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How often STATUS= may change.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

struct Worker {
    pid: i32,
    pipe: OwnedFd,
    partial: Vec<u8>,
    generation: u64,
    last_seen: Instant,
    booted: bool,
    requests: u64,
    in_flight: u32,
    /// Sent TERM (retired by HUP, TTOU or shutdown); killed at this deadline.
    retire_deadline: Option<Instant>,
    aborted_at: Option<Instant>,
    /// Its place on the connection board (None: adopted after an upgrade,
    /// or the board is full).
    seat: Option<Seat>,
}

enum Stop {
    Graceful,
    Quick,
}

pub struct Master {
    cli: Cli,
    cfg: Config,
    listeners: Vec<Listener>,
    signals: SignalPipe,
    notifier: Notifier,
    pidfile: Option<PidFile>,
    workers: Vec<Worker>,
    target: u32,
    generation: u64,
    /// A HUP is in progress: the new generation boots before the old retires.
    reloading: bool,
    /// The first generation has booted (READY was sent).
    ready: bool,
    stopping: Option<(Stop, Instant)>,
    halt: Option<i32>,
    requests_done: u64,
    last_status: Option<(Instant, String)>,
    /// `--preload`: the app imported in the master, shared by every fork.
    preloaded: Option<crate::python::LoadedApp>,
    watchdog: Option<Watchdog>,
    /// The last moment a booted worker was alive: the watchdog's notion of "in control".
    last_healthy: Instant,
    /// What to re-execute on USR2, and the check of the new binary in progress.
    image: upgrade::Image,
    check: Option<upgrade::Check>,
    /// Set when this image took over from a previous one (USR2).
    upgraded_from: Option<String>,
    /// Appended to STATUS= until the next successful reload (a refused upgrade).
    status_note: Option<String>,
    /// A replacement worker failed to boot after the first generation did:
    /// failures in a row, and when the next may be started.
    boot_retry: Option<(u32, Instant)>,
    /// Connections per worker, shared with the workers (see `listen::balance`).
    board: Option<Board>,
}

impl Master {
    pub fn new(
        cli: Cli,
        cfg: Config,
        listeners: Vec<Listener>,
        notifier: Notifier,
        preloaded: Option<crate::python::LoadedApp>,
        image: upgrade::Image,
        handover: Option<upgrade::Handover>,
    ) -> anyhow::Result<Master> {
        let signals = SignalPipe::install()?;
        let pidfile = match &cfg.settings.pidfile {
            Some(p) => Some(PidFile::create(p)?),
            None => None,
        };
        let mut master = Master {
            target: cfg.settings.workers,
            cli,
            cfg,
            listeners,
            signals,
            notifier,
            pidfile,
            workers: Vec::new(),
            generation: 1,
            reloading: false,
            ready: false,
            stopping: None,
            halt: None,
            requests_done: 0,
            last_status: None,
            preloaded,
            watchdog: Watchdog::from_env(),
            last_healthy: Instant::now(),
            image,
            check: None,
            upgraded_from: None,
            status_note: None,
            boot_retry: None,
            board: match Board::new() {
                Ok(board) => Some(board),
                Err(e) => {
                    warning!("Connections will not be balanced between workers: {e}");
                    None
                }
            },
        };
        if let Some(h) = handover {
            master.adopt(h);
        }
        Ok(master)
    }

    /// After an in-place upgrade: the previous image's workers are our
    /// children and keep serving until the new generation is ready.
    fn adopt(&mut self, h: upgrade::Handover) {
        let now = Instant::now();
        let graceful = Duration::from_secs(self.cfg.settings.graceful_timeout);
        for w in &h.workers {
            // SAFETY: the previous image placed this worker's status pipe at
            // this descriptor for us (the handover protocol); nothing else owns it.
            let pipe = unsafe { OwnedFd::from_raw_fd(w.fd) };
            let _ = sys::set_cloexec(w.fd, true);
            let _ = sys::set_nonblocking(&pipe, true);
            self.requests_done += w.requests;
            self.workers.push(Worker {
                pid: w.pid,
                pipe,
                partial: Vec::new(),
                generation: 0,
                last_seen: now,
                booted: w.booted,
                requests: w.requests,
                in_flight: 0,
                retire_deadline: w.retiring.then_some(now + graceful),
                aborted_at: None,
                seat: None,
            });
        }
        // The new generation boots; the adopted one retires once it is ready.
        self.generation = 1;
        self.reloading = !h.workers.is_empty();
        self.ready = true;
        self.upgraded_from = Some(h.from);
    }

    /// Run until stopped; returns the process exit code.
    pub fn run(mut self) -> i32 {
        crate::proctitle::set(&format!("ferricorn: master [{}]", self.cfg.proc_name));
        info!("Starting ferricorn {}", crate::VERSION);
        for l in &self.listeners {
            info!("Listening at: {} ({})", l.addr, std::process::id());
        }
        info!("Using worker: {}", self.cfg.worker_class.name());
        if let Some(from) = &self.upgraded_from {
            info!(
                "Upgraded in place: ferricorn {from} -> {} (pid {}), {} workers of the previous image serving until the new ones are ready",
                crate::VERSION,
                std::process::id(),
                self.workers.len()
            );
        }
        if let Some(w) = &mut self.watchdog {
            info!("Watchdog: pinging systemd every {:?}", w.interval / 2);
            w.ping_now(&self.notifier);
        }

        // Fork the workers now, as gunicorn does; the loop waits first (up
        // to half a second when nothing happens), which every start and
        // upgrade used to spend before the first fork.
        self.manage_workers();
        self.update_status();
        let code = loop {
            self.wait_for_events();
            for sig in self.signals.drain() {
                self.handle_signal(sig);
            }
            self.reap();
            self.check_timeouts();
            self.watchdog_tick();
            if let Some(code) = self.halt {
                self.stop_now();
                break code;
            }
            if let Some((_, deadline)) = &self.stopping {
                if self.workers.is_empty() {
                    break 0;
                }
                if Instant::now() >= *deadline {
                    for w in &self.workers {
                        warning!("Killing worker (pid:{}) after graceful_timeout", w.pid);
                        sys::kill(w.pid, libc::SIGKILL);
                    }
                }
                continue;
            }
            self.manage_workers();
            self.update_status();
        };
        self.shutdown();
        code
    }

    fn wait_for_events(&mut self) {
        let mut fds = Vec::with_capacity(self.workers.len() + 1);
        fds.push(libc::pollfd {
            fd: self.signals.fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for w in &self.workers {
            fds.push(libc::pollfd {
                fd: w.pipe.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let mut budget = Duration::from_millis(if self.stopping.is_some() { 100 } else { 500 });
        if let Some(w) = &self.watchdog {
            budget = budget.min(w.poll_budget());
        }
        let timeout_ms = budget.as_millis().max(1) as libc::c_int;
        // SAFETY: poll on a vector of pollfds we own, sized correctly.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n <= 0 {
            return;
        }
        for (i, pfd) in fds.iter().enumerate().skip(1) {
            if pfd.revents != 0 {
                self.read_worker(i - 1);
            }
        }
    }

    fn read_worker(&mut self, idx: usize) {
        let now = Instant::now();
        let w = &mut self.workers[idx];
        let mut buf = [0u8; MSG_LEN * 32];
        loop {
            // SAFETY: read into a local buffer from the worker's non-blocking pipe.
            let n = unsafe {
                libc::read(
                    w.pipe.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            w.partial.extend_from_slice(&buf[..n as usize]);
        }
        let whole = w.partial.len() / MSG_LEN * MSG_LEN;
        let mut newly_booted = false;
        for chunk in w.partial[..whole].chunks(MSG_LEN) {
            let Some(msg) = Msg::decode(chunk) else {
                continue;
            };
            w.last_seen = now;
            w.in_flight = msg.in_flight;
            if msg.requests > w.requests {
                self.requests_done += msg.requests - w.requests;
                w.requests = msg.requests;
            }
            if msg.kind == Kind::Booted && !w.booted {
                w.booted = true;
                newly_booted = true;
            }
        }
        w.partial.drain(..whole);
        if newly_booted {
            crate::debug!("Worker (pid:{}) booted", w.pid);
            if let Some((failures, _)) = self.boot_retry.take() {
                info!("A worker booted again after {failures} failed boot(s)");
                self.status_note = None;
            }
        }
    }

    fn handle_signal(&mut self, sig: libc::c_int) {
        if sig == libc::SIGCHLD {
            return;
        }
        info!("Handling signal: {}", signals::name(sig));
        // Once stopping, only a faster stop or reopening logs still means
        // something: a reload or an upgrade would fork workers the stop
        // then kills, and tell systemd RELOADING=1 after STOPPING=1.
        if self.stopping.is_some()
            && matches!(
                sig,
                libc::SIGHUP | libc::SIGUSR2 | libc::SIGTTIN | libc::SIGTTOU
            )
        {
            info!("Ignoring {}: stopping", signals::name(sig));
            return;
        }
        match sig {
            libc::SIGTERM => self.begin_stop(Stop::Graceful),
            libc::SIGINT | libc::SIGQUIT => self.begin_stop(Stop::Quick),
            libc::SIGHUP => self.reload(),
            libc::SIGTTIN => {
                self.target += 1;
                info!("Number of workers: {}", self.target);
            }
            libc::SIGTTOU => {
                if self.target > 1 {
                    self.target -= 1;
                }
                info!("Number of workers: {}", self.target);
            }
            libc::SIGUSR1 => {
                crate::log::reopen();
                for w in &self.workers {
                    sys::kill(w.pid, libc::SIGUSR1);
                }
            }
            libc::SIGUSR2 => self.begin_upgrade(),
            _ => {}
        }
    }

    fn begin_stop(&mut self, how: Stop) {
        if self.stopping.is_some() {
            if matches!(how, Stop::Quick) {
                for w in &self.workers {
                    sys::kill(w.pid, libc::SIGQUIT);
                }
            }
            return;
        }
        self.notifier.send("STOPPING=1");
        // Close our copies of the listeners: workers close theirs as they stop
        // accepting, so once they are gone nothing accepts connections we
        // could not serve. (A systemd-owned socket stays open in systemd.)
        crate::listen::cleanup(&self.listeners);
        self.listeners.clear();
        let graceful = Duration::from_secs(self.cfg.settings.graceful_timeout);
        let sig = match how {
            Stop::Graceful => libc::SIGTERM,
            Stop::Quick => libc::SIGQUIT,
        };
        for w in &self.workers {
            sys::kill(w.pid, sig);
        }
        if matches!(how, Stop::Graceful) {
            self.notifier.send(&format!(
                "EXTEND_TIMEOUT_USEC={}",
                (graceful + Duration::from_secs(5)).as_micros()
            ));
        }
        self.stopping = Some((how, Instant::now() + graceful));
    }

    fn reload(&mut self) {
        let cfg = match crate::config::load(&self.cli) {
            Ok(cfg) => cfg,
            Err(e) => {
                error!("Reload refused, keeping the running configuration: {e}");
                return;
            }
        };
        self.notifier.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            notify::monotonic_usec()
        ));
        if cfg.binds != self.cfg.binds && !self.listeners.is_empty() {
            match crate::listen::rebind(&mut self.listeners, &cfg.binds, cfg.settings.backlog) {
                Ok(dropped) => {
                    for l in &self.listeners {
                        info!("Listening at: {} ({})", l.addr, std::process::id());
                    }
                    for l in &dropped {
                        info!("No longer listening at: {}", l.addr);
                    }
                    // The old workers keep their copies until they retire.
                    crate::listen::cleanup(&dropped);
                }
                Err(e) => {
                    error!("Reload refused, keeping the running configuration: {e}");
                    self.notifier.send("READY=1");
                    return;
                }
            }
        }
        crate::log::set_level(cfg.log_level);
        self.target = cfg.settings.workers;
        self.cfg = cfg;
        self.generation += 1;
        self.reloading = true;
        // A fixed deploy is tried at once, not after the retry's wait.
        self.boot_retry = None;
        info!("Reloading: starting {} new workers", self.target);
    }

    /// USR2, step 1: check the binary now on disk with our configuration.
    fn begin_upgrade(&mut self) {
        if self.check.is_some() || self.reloading || self.stopping.is_some() {
            warning!("USR2 ignored: an upgrade or reload is already in progress");
            return;
        }
        match upgrade::Check::start(&self.image) {
            Ok(check) => {
                info!(
                    "Upgrade: checking {} --check-config (pid {})",
                    self.image.exe.display(),
                    check.pid
                );
                self.check = Some(check);
            }
            Err(e) => {
                self.upgrade_refused(&format!("cannot run {}: {e}", self.image.exe.display()))
            }
        }
    }

    fn upgrade_refused(&mut self, why: &str) {
        error!("Upgrade refused, the running workers keep serving: {why}");
        self.status_note = Some(format!("upgrade refused: {why}"));
        // Show it now rather than at the next rate-limited update.
        self.last_status = None;
    }

    /// USR2, step 2: the check passed; hand everything over and exec.
    fn finish_upgrade(&mut self, exit: Exit) {
        let Some(mut check) = self.check.take() else {
            return;
        };
        if exit != Exit::Code(0) {
            let how = match exit {
                Exit::Code(c) => format!("exit code {c}"),
                Exit::Signal(libc::SIGKILL)
                    if check.started.elapsed() >= upgrade::CHECK_TIME_LIMIT =>
                {
                    format!("no answer within {:?}", upgrade::CHECK_TIME_LIMIT)
                }
                Exit::Signal(s) => sys::signal_name(s).to_string(),
            };
            let tail = check.output_tail();
            self.upgrade_refused(&format!(
                "{} --check-config failed ({how}): {tail}",
                self.image.exe.display()
            ));
            return;
        }
        self.notifier.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            notify::monotonic_usec()
        ));
        info!("Upgrade: executing {} in place", self.image.exe.display());
        let listeners: Vec<(i32, String)> = self
            .listeners
            .iter()
            .map(|l| {
                (
                    l.fd.as_raw_fd(),
                    l.name.clone().unwrap_or_else(|| "unknown".into()),
                )
            })
            .collect();
        let workers: Vec<(upgrade::HandedWorker, i32)> = self
            .workers
            .iter()
            .map(|w| {
                (
                    upgrade::HandedWorker {
                        pid: w.pid,
                        fd: -1,
                        booted: w.booted,
                        requests: w.requests,
                        retiring: w.retire_deadline.is_some(),
                    },
                    w.pipe.as_raw_fd(),
                )
            })
            .collect();
        let mut env: Vec<(&str, String)> = Vec::new();
        if let Some(sock) = self.notifier.socket_env() {
            env.push(("NOTIFY_SOCKET", sock.to_string()));
        }
        if let Some(w) = &self.watchdog {
            env.push(("WATCHDOG_USEC", w.interval.as_micros().to_string()));
            env.push(("WATCHDOG_PID", std::process::id().to_string()));
        }
        if let Some(p) = self.pidfile.take() {
            // The new image writes it again; the PID is the same.
            std::mem::forget(p);
        }
        let err = upgrade::exec(&self.image, &listeners, workers, &env);
        self.upgrade_refused(&format!("exec {} failed: {err}", self.image.exe.display()));
        self.notifier.send("READY=1");
    }

    fn reap(&mut self) {
        while let Some((pid, exit)) = sys::try_reap() {
            if self.check.as_ref().is_some_and(|c| c.pid == pid) {
                self.finish_upgrade(exit);
                continue;
            }
            let Some(idx) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.remove(idx);
            if let Some(seat) = w.seat {
                seat.release();
            }
            let expected = w.retire_deadline.is_some() || self.stopping.is_some();
            match exit {
                // Retired, stopping, or recycled after max_requests.
                Exit::Code(0) => info!("Worker exiting (pid: {pid})"),
                Exit::Code(code) => error!("Worker (pid:{pid}) exited with code {code}"),
                Exit::Signal(libc::SIGKILL) => {
                    error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                Exit::Signal(sig) => {
                    error!("Worker (pid:{pid}) was sent {}!", sys::signal_name(sig))
                }
            }
            if !w.booted && !expected && w.aborted_at.is_none() {
                self.boot_failed(&w, exit);
            }
        }
    }

    /// A worker died before it booted: never respawn in a loop.
    fn boot_failed(&mut self, w: &Worker, exit: Exit) {
        let code = match exit {
            Exit::Code(APP_LOAD_ERROR) => APP_LOAD_ERROR,
            _ => WORKER_BOOT_ERROR,
        };
        let old_generation_serving = self
            .workers
            .iter()
            .any(|o| o.generation < w.generation && o.booted && o.retire_deadline.is_none());
        if self.reloading && old_generation_serving {
            error!(
                "Reload failed: the new workers could not start (exit {code}); the running workers keep serving"
            );
            self.abort_reload();
            return;
        }
        let reason = if code == APP_LOAD_ERROR {
            "App failed to load."
        } else {
            "Worker failed to boot."
        };
        if self.ready {
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
            self.boot_retry = Some((failures, Instant::now() + delay));
            self.status_note = Some(format!(
                "a new worker failed to boot {failures} time(s) (exit {code}), retrying"
            ));
            return;
        }
        error!("Shutting down: Master");
        error!("Reason: {reason}");
        self.halt = Some(code);
    }

    fn abort_reload(&mut self) {
        let now = Instant::now();
        let graceful = Duration::from_secs(self.cfg.settings.graceful_timeout);
        let current = self.generation;
        for w in self.workers.iter_mut().filter(|w| w.generation == current) {
            sys::kill(w.pid, libc::SIGTERM);
            w.retire_deadline = Some(now + graceful);
        }
        // The previous generation becomes current again.
        self.generation = self
            .workers
            .iter()
            .filter(|w| w.retire_deadline.is_none())
            .map(|w| w.generation)
            .max()
            .unwrap_or(current);
        self.reloading = false;
        self.notifier
            .send("READY=1\nSTATUS=reload failed; previous workers serving");
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        if let Some(c) = &self.check
            && now.duration_since(c.started) > upgrade::CHECK_TIME_LIMIT
        {
            sys::kill(c.pid, libc::SIGKILL);
        }
        let timeout = self.cfg.settings.timeout;
        for w in &mut self.workers {
            if let Some(at) = w.aborted_at {
                if now.duration_since(at) >= ABORT_GRACE {
                    sys::kill(w.pid, libc::SIGKILL);
                }
                continue;
            }
            if let Some(deadline) = w.retire_deadline
                && now >= deadline
            {
                sys::kill(w.pid, libc::SIGKILL);
                continue;
            }
            if timeout > 0 && now.duration_since(w.last_seen) > Duration::from_secs(timeout) {
                critical!("WORKER TIMEOUT (pid:{})", w.pid);
                sys::kill(w.pid, libc::SIGABRT);
                w.aborted_at = Some(now);
            }
        }
    }

    fn manage_workers(&mut self) {
        let now = Instant::now();
        let graceful = Duration::from_secs(self.cfg.settings.graceful_timeout);
        let current: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                let w = &self.workers[i];
                w.generation == self.generation
                    && w.retire_deadline.is_none()
                    && w.aborted_at.is_none()
            })
            .collect();
        let have = current.len() as u32;
        if have > self.target {
            // Retire the oldest first, as gunicorn does for TTOU.
            for &i in current.iter().take((have - self.target) as usize) {
                let w = &mut self.workers[i];
                sys::kill(w.pid, libc::SIGTERM);
                w.retire_deadline = Some(now + graceful);
            }
        }
        let waiting = self.boot_retry.is_some_and(|(_, next)| now < next);
        for _ in (have..self.target).take_while(|_| !waiting) {
            if let Err(e) = self.spawn_worker() {
                error!("Could not start a worker: {e:#}");
                self.halt = Some(WORKER_BOOT_ERROR);
                return;
            }
        }

        let all_booted = self
            .workers
            .iter()
            .filter(|w| w.generation == self.generation && w.retire_deadline.is_none())
            .filter(|w| w.booted)
            .count() as u32
            >= self.target;
        if all_booted && self.reloading {
            for w in self
                .workers
                .iter_mut()
                .filter(|w| w.generation < self.generation && w.retire_deadline.is_none())
            {
                sys::kill(w.pid, libc::SIGTERM);
                w.retire_deadline = Some(now + graceful);
            }
            self.reloading = false;
            self.status_note = None;
            info!(
                "Reload complete: {} workers of generation {}",
                self.target, self.generation
            );
            self.notifier.send("READY=1");
        }
        if all_booted && !self.ready {
            self.ready = true;
            self.notifier.send("READY=1");
            info!("Ready: {} workers accepting", self.target);
            if let Some(w) = &mut self.watchdog {
                w.ping_now(&self.notifier);
            }
        }
    }

    /// Ping only while the loop runs and some booted worker is alive: if every
    /// worker keeps dying for longer than the interval, systemd should restart us.
    fn watchdog_tick(&mut self) {
        let Some(w) = &mut self.watchdog else { return };
        let now = Instant::now();
        // Before READY, a worker still importing the app counts: a slow import
        // is `TimeoutStartSec=`'s business, not the watchdog's.
        let ready = self.ready;
        if self
            .workers
            .iter()
            .any(|w| (w.booted || !ready) && w.aborted_at.is_none())
        {
            self.last_healthy = now;
        }
        if now.duration_since(self.last_healthy) < w.interval {
            w.tick(&self.notifier);
        }
    }

    fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let close_in_child: Vec<i32> = self
            .workers
            .iter()
            .map(|w| w.pipe.as_raw_fd())
            .chain(self.signals.fds())
            .collect();
        let seat = self.board.and_then(|b| b.claim());
        let (pid, pipe) = spawn::fork_worker(
            &self.cfg,
            &self.listeners,
            seat,
            &close_in_child,
            self.preloaded.as_ref(),
        )
        .inspect_err(|_| {
            if let Some(seat) = seat {
                seat.release();
            }
        })?;
        info!("Booting worker with pid: {pid}");
        self.workers.push(Worker {
            pid,
            pipe,
            partial: Vec::new(),
            generation: self.generation,
            last_seen: Instant::now(),
            booted: false,
            requests: 0,
            in_flight: 0,
            retire_deadline: None,
            aborted_at: None,
            seat,
        });
        Ok(())
    }

    fn update_status(&mut self) {
        if !self.notifier.enabled() {
            return;
        }
        let booted = self
            .workers
            .iter()
            .filter(|w| w.booted && w.retire_deadline.is_none())
            .count();
        let in_flight: u32 = self.workers.iter().map(|w| w.in_flight).sum();
        let mut status = format!(
            "{booted}/{} workers ready, {} requests served, {in_flight} in flight",
            self.target, self.requests_done
        );
        if let Some(note) = &self.status_note {
            status.push_str("; ");
            status.push_str(note);
        }
        let now = Instant::now();
        let due = match &self.last_status {
            Some((at, last)) => *last != status && now.duration_since(*at) >= STATUS_INTERVAL,
            None => true,
        };
        if due {
            self.notifier.send(&format!("STATUS={status}"));
            self.last_status = Some((now, status));
        }
    }

    /// Halting after a boot failure: stop whatever else is running, quickly.
    fn stop_now(&mut self) {
        for w in &self.workers {
            sys::kill(w.pid, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.workers.is_empty() && Instant::now() < deadline {
            while let Some((pid, _)) = sys::try_reap() {
                self.workers.retain(|w| w.pid != pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for w in &self.workers {
            sys::kill(w.pid, libc::SIGKILL);
        }
    }

    fn shutdown(&mut self) {
        crate::listen::cleanup(&self.listeners);
        if let Some(p) = self.pidfile.take() {
            p.remove();
        }
        info!("Shutting down: Master");
    }
}
