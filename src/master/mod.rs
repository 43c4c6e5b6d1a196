//! The master: a single-threaded poll loop over the signal pipe and the
//! workers' status pipes. Its decisions are `supervisor`'s state machine;
//! this loop turns what happens into events and performs the actions: it
//! forks, signals, notifies systemd and execs. It never runs Python or an
//! async runtime, so forking stays safe.

mod control;
mod exposition;
mod health;
pub mod hook_host;
mod pidfile;
pub mod preload;
pub mod signals;
mod spawn;
pub mod supervisor;
pub mod upgrade;

pub use pidfile::PidFile;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::config::{Cli, Config};
use crate::listen::Listener;
use crate::listen::balance::{Board, Seat};
use crate::proto::{MSG_LEN, Msg};
use crate::sys::{self, Exit};
use crate::systemd::notify::Notifier;
use crate::systemd::watchdog::Watchdog;
use crate::{error, info, warning};
use nix::sys::signal::Signal;
use signals::SignalPipe;
use supervisor::{Action, Adopted, Event, Supervisor, Tuning};

/// gunicorn's arbiter reports its worker count about this often.
const STATSD_INTERVAL: Duration = Duration::from_secs(1);
/// How often workers' memory is sampled for `--max-worker-memory`.
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// A worker's end of things the loop holds: its status pipe and its seat.
struct Pipe {
    pid: i32,
    fd: OwnedFd,
    partial: Vec<u8>,
    /// Its `worker.age`: its place in the order workers were started.
    age: u64,
    /// Its place on the connection board (None: adopted after an upgrade,
    /// or the board is full).
    seat: Option<Seat>,
}

pub struct Master {
    cli: Cli,
    cfg: Config,
    listeners: Vec<Listener>,
    signals: SignalPipe,
    notifier: Notifier,
    pidfile: Option<PidFile>,
    sup: Supervisor,
    pipes: Vec<Pipe>,
    /// `--preload`: the process holding the imported app, which forks the workers.
    preloader: Option<preload::Preloader>,
    watchdog: Option<Watchdog>,
    /// The last moment a booted worker was alive: the watchdog's notion of "in control".
    last_healthy: Instant,
    /// What to re-execute on USR2, and the check of the new binary in progress.
    image: upgrade::Image,
    check: Option<upgrade::Check>,
    /// Set when this image took over from a previous one (USR2).
    upgraded_from: Option<String>,
    /// Connections per worker, shared with the workers (see `listen::balance`).
    board: Option<Board>,
    /// When the workers' memory was last sampled (`--max-worker-memory`).
    sampled_at: Instant,
    /// `--statsd-host`: the socket, for the address and prefix it was made for.
    statsd: Option<(std::net::SocketAddr, String, crate::statsd::Statsd)>,
    statsd_at: Instant,
    /// Workers started so far (their `worker.age` for hooks).
    ages: u64,
    /// `--health-bind`: `/livez` and `/readyz`, answered here.
    health: Option<health::Responder>,
    /// `--metrics-bind`: `/metrics`, answered here.
    metrics: Option<health::Responder>,
    /// Request counts of workers that have exited.
    retired: crate::metrics::Totals,
    /// For `ferricorn_start_time_seconds`.
    started: std::time::SystemTime,
    /// `--control-socket`: `ferricorn ctl`'s commands.
    control: Option<control::Control>,
    /// The arbiter's server hooks, run in a Python child (`hook_host`).
    hooks: Option<hook_host::HookHost>,
}

fn tuning(cfg: &Config) -> Tuning {
    Tuning {
        workers: cfg.settings.workers,
        graceful: Duration::from_secs(cfg.settings.graceful_timeout),
        timeout: Duration::from_secs(cfg.settings.timeout),
        max_memory: cfg.settings.max_worker_memory << 20,
        lifetime: Duration::from_secs(cfg.settings.max_worker_lifetime),
        lifetime_jitter: Duration::from_secs(cfg.settings.max_worker_lifetime_jitter),
    }
}

impl Master {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cli: Cli,
        cfg: Config,
        listeners: Vec<Listener>,
        notifier: Notifier,
        preloader: Option<preload::Preloader>,
        board: Option<Board>,
        image: upgrade::Image,
        handover: Option<upgrade::Handover>,
        hooks: Option<hook_host::HookHost>,
    ) -> anyhow::Result<Master> {
        let signals = SignalPipe::install()?;
        let pidfile = match &cfg.settings.pidfile {
            Some(p) => Some(PidFile::create(p)?),
            None => None,
        };
        let mut master = Master {
            sup: Supervisor::new(tuning(&cfg)),
            cli,
            cfg,
            listeners,
            signals,
            notifier,
            pidfile,
            pipes: Vec::new(),
            preloader,
            watchdog: Watchdog::from_env(),
            last_healthy: Instant::now(),
            image,
            check: None,
            upgraded_from: None,
            board,
            sampled_at: Instant::now(),
            statsd: None,
            statsd_at: Instant::now(),
            ages: 0,
            health: None,
            metrics: None,
            retired: Default::default(),
            started: std::time::SystemTime::now(),
            control: None,
            hooks,
        };
        if let Some(path) = &master.cfg.settings.control_socket {
            master.control = Some(control::Control::bind(path).map_err(|e| {
                anyhow::anyhow!(
                    "setting `control_socket`: cannot listen at {}: {e}",
                    path.display()
                )
            })?);
        }
        if let Some(addr) = &master.cfg.health {
            master.health = Some(health::Responder::bind(addr)?);
        }
        if let Some(addr) = &master.cfg.metrics {
            master.metrics = Some(health::Responder::bind(addr)?);
        }
        if master.preloader.is_some() {
            // Workers forked by the preloader are orphaned at once; they
            // must become our children, not init's.
            nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
                anyhow::anyhow!(
                    "cannot supervise the preloader's workers: prctl(PR_SET_CHILD_SUBREAPER): {e}"
                )
            })?;
        }
        if let Some(h) = handover {
            master.adopt(h);
        }
        Ok(master)
    }

    /// After an in-place upgrade: the previous image's workers are our
    /// children and keep serving until the new generation is ready.
    fn adopt(&mut self, h: upgrade::Handover) {
        let mut adopted = Vec::new();
        for w in &h.workers {
            // SAFETY: the previous image placed this worker's status pipe at
            // this descriptor for us (the handover protocol); nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(w.fd) };
            let _ = sys::set_cloexec(w.fd, true);
            let _ = sys::set_nonblocking(&fd, true);
            self.pipes.push(Pipe {
                pid: w.pid,
                fd,
                partial: Vec::new(),
                age: w.age,
                seat: None,
            });
            if let Some(h) = &mut self.hooks {
                h.forked(w.age, w.pid);
            }
            adopted.push(Adopted {
                pid: w.pid,
                booted: w.booted,
                requests: w.requests,
                retiring: w.retiring,
            });
        }
        self.sup.adopt(&adopted, Instant::now());
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
        if let Some(h) = &self.health {
            info!("Health checks at: {}/livez and /readyz", h.addr());
        }
        if let Some(m) = &self.metrics {
            info!("Metrics at: {}/metrics", m.addr());
        }
        if let Some(c) = &self.control {
            info!("Control socket: {}", c.path().display());
        }
        if let Some(p) = &self.preloader {
            info!(
                "Preloaded {} in the preloader (pid:{}), which forks the workers",
                self.cfg.settings.app,
                p.pid()
            );
        }
        if let Some(from) = &self.upgraded_from {
            info!(
                "Upgraded in place: ferricorn {from} -> {} (pid {}), {} workers of the previous image serving until the new ones are ready",
                crate::VERSION,
                std::process::id(),
                self.pipes.len()
            );
        }
        if let Some(w) = &mut self.watchdog {
            info!("Watchdog: pinging systemd every {:?}", w.interval / 2);
            w.ping_now(&self.notifier);
        }

        // gunicorn: once the listeners are bound, before the first fork.
        self.run_hook("when_ready", hook_host::Call::Server);
        // Fork the workers now, as gunicorn does; the loop waits first (up
        // to half a second when nothing happens), which every start and
        // upgrade used to spend before the first fork.
        if let Some(code) = self.feed(Event::Tick) {
            return self.finish(code);
        }
        let code = loop {
            if let Some(code) = self.step() {
                break code;
            }
        };
        self.finish(code)
    }

    /// One turn of the loop: wait, then turn what happened into events.
    fn step(&mut self) -> Option<i32> {
        let mut events = self.wait_for_events();
        events.extend(
            self.signals
                .drain()
                .into_iter()
                .filter_map(supervisor::Signal::of)
                .map(Event::Signal),
        );
        while let Some((pid, exit)) = sys::try_reap() {
            events.push(self.exited(pid, exit));
        }
        if let Some(c) = &self.check
            && c.started.elapsed() > upgrade::CHECK_TIME_LIMIT
        {
            sys::kill(c.pid, Signal::SIGKILL);
        }
        self.sample_memory(&mut events);
        self.report_statsd();
        events.push(Event::Tick);
        for event in events {
            if let Some(code) = self.feed(event) {
                return Some(code);
            }
        }
        if let Some(c) = &mut self.control {
            c.answer_waiting(&self.sup);
        }
        self.watchdog_tick();
        None
    }

    /// Hand `event` to the supervisor and perform what it decides, with
    /// the events those actions produce; Some(code) ends the loop.
    fn feed(&mut self, event: Event) -> Option<i32> {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            // A reload reports its own (gunicorn: even when unchanged).
            let scaled = !matches!(event, Event::ConfigLoaded(_));
            let before = self.sup.target();
            let actions = self.sup.handle(event, Instant::now());
            if scaled && self.sup.target() != before {
                self.nworkers_changed(self.sup.target(), before);
            }
            for action in actions {
                match self.perform(action) {
                    Performed::Done => {}
                    Performed::Then(e) => queue.push_back(e),
                    Performed::End(code) => return Some(code),
                }
            }
        }
        None
    }

    fn perform(&mut self, action: Action) -> Performed {
        match action {
            Action::Spawn => match self.spawn_worker() {
                Ok(pid) => return Performed::Then(Event::Spawned { pid }),
                Err(e) => return Performed::Then(Event::SpawnFailed(format!("{e:#}"))),
            },
            Action::Kill { pid, signal } => {
                sys::kill(pid, signal);
            }
            Action::Notify(line) => self.notifier.send(&line),
            Action::PingWatchdog => {
                if let Some(w) = &mut self.watchdog {
                    w.ping_now(&self.notifier);
                }
            }
            Action::Forget { pid } => {
                if let Some(i) = self.pipes.iter().position(|p| p.pid == pid) {
                    let p = self.pipes.remove(i);
                    if let Some(seat) = p.seat {
                        // Its counts stay in the totals; the slot starts over.
                        if let Some(slot) = crate::metrics::slot(seat.index()) {
                            slot.add_to(&mut self.retired);
                            slot.clear();
                        }
                        seat.release();
                    }
                }
            }
            Action::ReopenLogs => crate::log::reopen(),
            Action::CloseListeners => {
                crate::listen::cleanup(&self.listeners);
                self.listeners.clear();
            }
            Action::LoadConfig => return Performed::Then(self.reload()),
            Action::StartCheck => match upgrade::Check::start(&self.image) {
                Ok(check) => {
                    info!(
                        "Upgrade: checking {} --check-config (pid {})",
                        self.image.exe.display(),
                        check.pid
                    );
                    let pid = check.pid;
                    self.check = Some(check);
                    return Performed::Then(Event::CheckStarted { pid });
                }
                Err(e) => {
                    return Performed::Then(Event::UpgradeRefused(format!(
                        "cannot run {}: {e}",
                        self.image.exe.display()
                    )));
                }
            },
            Action::Exec => {
                let err = self.exec();
                self.restart_preloader();
                self.restart_hook_host();
                return Performed::Then(Event::ExecFailed(format!(
                    "exec {} failed: {err}",
                    self.image.exe.display()
                )));
            }
            Action::Exit(code) => return Performed::End(code),
            Action::Halt(code) => {
                self.stop_now();
                return Performed::End(code);
            }
        }
        Performed::Done
    }

    fn wait_for_events(&mut self) -> Vec<Event> {
        let mut budget = Duration::from_millis(if self.sup.is_stopping() { 100 } else { 500 });
        if let Some(w) = &self.watchdog {
            budget = budget.min(w.poll_budget());
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = std::iter::once(self.signals.read_end())
                .chain(self.pipes.iter().map(|p| p.fd.as_fd()))
                .chain(self.health.iter().flat_map(|h| h.fds()))
                .chain(self.metrics.iter().flat_map(|m| m.fds()))
                .chain(self.control.iter().flat_map(|c| c.fds()))
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let timeout =
                PollTimeout::try_from(budget.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(n) if n > 0 => fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                _ => return Vec::new(),
            }
        };
        let mut events = Vec::new();
        let workers = self.pipes.len();
        for (i, _) in ready
            .iter()
            .enumerate()
            .skip(1)
            .take(workers)
            .filter(|(_, r)| **r)
        {
            self.read_worker(i - 1, &mut events);
        }
        let mut at = 1 + workers;
        if let Some(h) = &mut self.health {
            let verdict = health::Verdict {
                live: self.sup.live(),
                ready: self.sup.ready(),
            };
            let n = h.fds().count();
            h.serve(&ready[at..at + n], |path| health::health(path, verdict));
            at += n;
        }
        if let Some(m) = &mut self.metrics {
            let n = m.fds().count();
            let (sup, retired, pipes) = (&self.sup, &self.retired, &self.pipes);
            let (class, listeners) = (self.cfg.worker_class.name(), &self.listeners);
            let started = self.started;
            m.serve(&ready[at..at + n], |path| match path {
                "/metrics" => health::Reply {
                    status: "200 OK",
                    content_type: "text/plain; version=0.0.4",
                    body: exposition::render(
                        sup,
                        exposition::Sources {
                            retired,
                            seats: pipes.iter().filter_map(|p| p.seat).map(|s| s.index()),
                            class,
                            listeners,
                            started,
                        },
                    ),
                },
                _ => health::Reply::text("404 Not Found", "try /metrics\n"),
            });
            at += n;
        }
        if let Some(c) = &mut self.control {
            events.extend(c.serve(&ready[at..], &self.sup));
        }
        events
    }

    fn read_worker(&mut self, idx: usize, events: &mut Vec<Event>) {
        let p = &mut self.pipes[idx];
        let mut buf = [0u8; MSG_LEN * 32];
        while let Ok(n @ 1..) = nix::unistd::read(&p.fd, &mut buf) {
            p.partial.extend_from_slice(&buf[..n]);
        }
        let whole = p.partial.len() / MSG_LEN * MSG_LEN;
        for chunk in p.partial[..whole].chunks(MSG_LEN) {
            if let Some(msg) = Msg::decode(chunk) {
                events.push(Event::Message { pid: p.pid, msg });
            }
        }
        p.partial.drain(..whole);
    }

    /// Once a second with `--statsd-host`: gunicorn's `gunicorn.workers` gauge.
    fn report_statsd(&mut self) {
        let Some(to) = self.cfg.statsd else {
            self.statsd = None;
            return;
        };
        if self.statsd_at.elapsed() < STATSD_INTERVAL {
            return;
        }
        self.statsd_at = Instant::now();
        let prefix = &self.cfg.settings.statsd_prefix;
        // Made again after a reload changed where or what it sends.
        if !matches!(&self.statsd, Some((a, p, _)) if *a == to && p == prefix) {
            match crate::statsd::Statsd::connect(to, prefix) {
                Ok(s) => self.statsd = Some((to, prefix.clone(), s)),
                Err(e) => {
                    warning!("Could not open a socket to statsd at {to}: {e}");
                    return;
                }
            }
        }
        if let Some((_, _, s)) = &self.statsd {
            s.workers(self.sup.workers().len());
        }
    }

    /// Once a second with `--max-worker-memory`: each worker's memory as
    /// the OOM killer counts it.
    fn sample_memory(&mut self, events: &mut Vec<Event>) {
        if self.cfg.settings.max_worker_memory == 0
            || self.sampled_at.elapsed() < MEMORY_SAMPLE_INTERVAL
        {
            return;
        }
        self.sampled_at = Instant::now();
        for p in &self.pipes {
            if let Some(bytes) = sys::oom_weight_bytes(p.pid) {
                events.push(Event::Memory { pid: p.pid, bytes });
            }
        }
    }

    /// Run an arbiter hook in the hook host, if one is set; log what went wrong.
    fn run_hook(&mut self, hook: &str, call: hook_host::Call) {
        let num_workers = self.sup.target();
        if let Some(h) = &mut self.hooks {
            h.run(hook, call, num_workers);
        }
    }

    fn nworkers_changed(&mut self, new: u32, old: u32) {
        self.run_hook(
            "nworkers_changed",
            hook_host::Call::NworkersChanged {
                new,
                old: Some(old),
            },
        );
    }

    /// A hook host again (it died, an exec failed, or a reload set the first
    /// arbiter hook); no hook runs for its start.
    fn restart_hook_host(&mut self) {
        if self.hooks.is_some() {
            return;
        }
        // Nor may it keep a listening socket: once the master closes its
        // own on stop, connections must be refused, not queued.
        let close: Vec<i32> = self
            .masters_fds()
            .into_iter()
            .chain(self.listeners.iter().map(|l| l.fd.as_raw_fd()))
            .collect();
        match hook_host::HookHost::start(&self.cfg, &close) {
            Ok(h) => self.hooks = h,
            Err(e) => error!("Server hooks will not run: {e:#}"),
        }
    }

    /// `--preload`: a preloader again after it died (or was stopped for an
    /// exec that failed), importing the app anew.
    fn restart_preloader(&mut self) {
        if !self.cfg.settings.preload_app || self.preloader.is_some() {
            return;
        }
        match preload::Preloader::start(&self.cfg, self.board) {
            Ok(Ok(p)) => {
                info!(
                    "Preloaded {} again (pid:{})",
                    self.cfg.settings.app,
                    p.pid()
                );
                self.preloader = Some(p);
            }
            Ok(Err(e)) => error!("Exception while preloading the app\n{e}"),
            Err(e) => error!("Could not start the preloader: {e:#}"),
        }
    }

    /// A reaped child as an event: the upgrade check's end, or a worker's.
    fn exited(&mut self, pid: i32, exit: Exit) -> Event {
        if self.hooks.as_ref().is_some_and(|h| h.pid() == pid) {
            error!("The hook host (pid:{pid}) exited ({exit:?}); starting another");
            if let Some(h) = self.hooks.take() {
                h.forget();
            }
            self.restart_hook_host();
            return Event::Tick;
        }
        if let Some(age) = self.pipes.iter().find(|p| p.pid == pid).map(|p| p.age) {
            self.run_hook("child_exit", hook_host::Call::Exited { pid, age });
        }
        if self.preloader.as_ref().is_some_and(|p| p.pid() == pid) {
            error!("The preloader (pid:{pid}) exited ({exit:?}); starting another");
            if let Some(p) = self.preloader.take() {
                p.forget();
            }
            self.restart_preloader();
        }
        let Some(mut check) = self.check.take_if(|c| c.pid == pid) else {
            return Event::Exited { pid, exit };
        };
        if exit == Exit::Code(0) {
            return Event::CheckEnded(Ok(()));
        }
        let how = match exit {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(Signal::SIGKILL)
                if check.started.elapsed() >= upgrade::CHECK_TIME_LIMIT =>
            {
                format!("no answer within {:?}", upgrade::CHECK_TIME_LIMIT)
            }
            Exit::Signal(s) => s.as_str().to_string(),
        };
        let tail = check.output_tail();
        Event::CheckEnded(Err(format!(
            "{} --check-config failed ({how}): {tail}",
            self.image.exe.display()
        )))
    }

    /// HUP: the configuration read again, and the listeners rebound to it.
    fn reload(&mut self) -> Event {
        let cfg = match crate::config::load(&self.cli) {
            Ok(cfg) => cfg,
            Err(e) => return Event::ConfigRefused(e.to_string()),
        };
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
                Err(e) => return Event::ConfigRefused(e.to_string()),
            }
        }
        crate::log::set_level(cfg.log_level);
        let t = tuning(&cfg);
        self.cfg = cfg;
        // The hooks as the file now defines them.
        match &mut self.hooks {
            Some(h) => {
                if let Err(e) = h.configure(&self.cfg) {
                    error!("Server hooks: keeping the previous ones: {e:#}");
                }
            }
            None => self.restart_hook_host(),
        }
        self.nworkers_changed(t.workers, self.sup.target());
        self.run_hook("on_reload", hook_host::Call::Server);
        Event::ConfigLoaded(t)
    }

    /// USR2, once the check passed: hand everything over and exec. Returns
    /// only if the exec failed.
    fn exec(&mut self) -> std::io::Error {
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
            .sup
            .workers()
            .iter()
            .filter_map(|w| {
                let pipe = self.pipes.iter().find(|p| p.pid == w.pid)?;
                Some((
                    upgrade::HandedWorker {
                        pid: w.pid,
                        fd: -1,
                        booted: w.booted,
                        requests: w.requests,
                        retiring: matches!(w.state, supervisor::State::Retiring { .. }),
                        age: pipe.age,
                    },
                    pipe.fd.as_raw_fd(),
                ))
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
        // The new image imports the app in a preloader of its own, and
        // starts its own hook host.
        if let Some(p) = self.preloader.take() {
            p.stop();
        }
        self.run_hook("pre_exec", hook_host::Call::Server);
        if let Some(h) = self.hooks.take() {
            h.stop();
        }
        upgrade::exec(&self.image, &listeners, workers, &env)
    }

    /// Ping only while the loop runs and some booted worker is alive: if every
    /// worker keeps dying for longer than the interval, systemd should restart us.
    fn watchdog_tick(&mut self) {
        let Some(w) = &mut self.watchdog else { return };
        let now = Instant::now();
        if self.sup.healthy() {
            self.last_healthy = now;
        }
        if now.duration_since(self.last_healthy) < w.interval {
            w.tick(&self.notifier);
        }
    }

    /// The master's own descriptors, which a forked child must close.
    fn masters_fds(&self) -> Vec<i32> {
        self.pipes
            .iter()
            .map(|p| p.fd.as_raw_fd())
            .chain(self.signals.fds())
            .chain(self.health.iter().flat_map(|h| h.raw_fds()))
            .chain(self.metrics.iter().flat_map(|m| m.raw_fds()))
            .chain(self.control.iter().flat_map(|c| c.raw_fds()))
            .chain(self.hooks.iter().map(|h| h.raw_fd()))
            .collect()
    }

    fn spawn_worker(&mut self) -> anyhow::Result<i32> {
        let close_in_child = self.masters_fds();
        // gunicorn's worker.age: the worker's place in the order started.
        self.ages += 1;
        let age = self.ages;
        self.run_hook("pre_fork", hook_host::Call::Forking { age });
        let seat = self.board.and_then(|b| b.claim());
        crate::worker::set_age(age);
        let spawned = match &self.preloader {
            Some(p) => p.spawn(&self.cfg, &self.listeners, seat, age),
            None => spawn::fork_worker(&self.cfg, &self.listeners, seat, &close_in_child),
        };
        let (pid, fd) = spawned.inspect_err(|_| {
            if let Some(seat) = seat {
                seat.release();
            }
        })?;
        self.pipes.push(Pipe {
            pid,
            fd,
            partial: Vec::new(),
            age,
            seat,
        });
        if let Some(h) = &mut self.hooks {
            h.forked(age, pid);
        }
        Ok(pid)
    }

    /// Halting after a boot failure: stop whatever else is running, quickly.
    fn stop_now(&mut self) {
        for p in &self.pipes {
            sys::kill(p.pid, Signal::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.pipes.is_empty() && Instant::now() < deadline {
            while let Some((pid, _)) = sys::try_reap() {
                self.pipes.retain(|p| p.pid != pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &self.pipes {
            sys::kill(p.pid, Signal::SIGKILL);
        }
    }

    fn finish(&mut self, code: i32) -> i32 {
        if let Some(p) = self.preloader.take() {
            p.stop();
        }
        crate::listen::cleanup(&self.listeners);
        if let Some(h) = &self.health {
            h.cleanup();
        }
        if let Some(m) = &self.metrics {
            m.cleanup();
        }
        if let Some(c) = &self.control {
            c.cleanup();
        }
        if let Some(p) = self.pidfile.take() {
            p.remove();
        }
        info!("Shutting down: Master");
        // gunicorn: last, once the workers are gone and the pidfile removed.
        self.run_hook("on_exit", hook_host::Call::Server);
        if let Some(h) = self.hooks.take() {
            h.stop();
        }
        code
    }
}

/// What performing an action led to.
enum Performed {
    Done,
    /// Its outcome, for the supervisor.
    Then(Event),
    /// The loop ends with this exit code.
    End(i32),
}
