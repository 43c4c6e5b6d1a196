//! The supervisor without processes: events in, actions out.

use super::*;

const TERM: Sig = Sig::SIGTERM;
const QUIT: Sig = Sig::SIGQUIT;
const KILL: Sig = Sig::SIGKILL;

/// A clock the tests move by hand.
struct Clock(Instant);

impl Clock {
    fn at(&self, secs: f64) -> Instant {
        self.0 + Duration::from_secs_f64(secs)
    }
}

fn tuning(workers: u32) -> Tuning {
    Tuning {
        workers,
        graceful: Duration::from_secs(30),
        timeout: Duration::from_secs(30),
        max_memory: 0,
        lifetime: Duration::ZERO,
        lifetime_jitter: Duration::ZERO,
    }
}

fn msg(kind: Kind, requests: u64) -> Msg {
    Msg {
        kind,
        in_flight: 0,
        requests,
    }
}

/// A supervisor and the time, with the actions of each step kept readable.
struct Sim {
    sup: Supervisor,
    clock: Clock,
    now: f64,
}

/// Actions as compared in the tests: STATUS lines are left out (they are
/// rate-limited by time), and a notification keeps only its first line.
fn plain(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::Notify(n) if n.starts_with("STATUS=")))
        .map(|a| match a {
            Action::Notify(n) => Action::Notify(n.lines().next().unwrap_or("").to_string()),
            a => a,
        })
        .collect()
}

fn kill(pid: i32, signal: Sig) -> Action {
    Action::Kill { pid, signal }
}

fn notify(line: &str) -> Action {
    Action::Notify(line.into())
}

impl Sim {
    fn new(workers: u32) -> Sim {
        Sim {
            sup: Supervisor::new(tuning(workers)),
            clock: Clock(Instant::now()),
            now: 0.0,
        }
    }

    fn at(&mut self, secs: f64) -> &mut Sim {
        self.now = secs;
        self
    }

    fn raw(&mut self, e: Event) -> Vec<Action> {
        self.sup.handle(e, self.clock.at(self.now))
    }

    fn on(&mut self, e: Event) -> Vec<Action> {
        plain(self.raw(e))
    }

    fn tick(&mut self) -> Vec<Action> {
        self.on(Event::Tick)
    }

    fn signal(&mut self, s: Signal) -> Vec<Action> {
        self.on(Event::Signal(s))
    }

    fn booted(&mut self, pid: i32) -> Vec<Action> {
        self.on(Event::Message {
            pid,
            msg: msg(Kind::Booted, 0),
        })
    }

    fn exit(&mut self, pid: i32, exit: Exit) -> Vec<Action> {
        self.on(Event::Exited { pid, exit })
    }

    /// Every `Spawn` in `actions` answered with the next of `pids`.
    fn spawned(&mut self, actions: &[Action], pids: &[i32]) {
        let spawns = actions.iter().filter(|a| **a == Action::Spawn).count();
        assert_eq!(spawns, pids.len(), "spawns in {actions:?}");
        for &pid in pids {
            assert!(self.on(Event::Spawned { pid }).is_empty());
        }
    }

    fn pids(&self) -> Vec<i32> {
        self.sup.workers().iter().map(|w| w.pid).collect()
    }

    fn state(&self, pid: i32) -> State {
        self.sup
            .workers()
            .iter()
            .find(|w| w.pid == pid)
            .unwrap_or_else(|| panic!("no worker {pid}"))
            .state
    }
}

/// Two workers forked, not booted yet.
fn starting() -> Sim {
    let mut s = Sim::new(2);
    let a = s.tick();
    assert_eq!(a, [Action::Spawn, Action::Spawn]);
    s.spawned(&a, &[101, 102]);
    assert_eq!(s.sup.phase(), Phase::Starting);
    s
}

/// Both workers booted, READY=1 sent.
fn serving() -> Sim {
    let mut s = starting();
    s.booted(101);
    s.booted(102);
    assert_eq!(
        s.tick(),
        [notify("READY=1"), Action::PingWatchdog],
        "ready once every worker booted"
    );
    assert_eq!(s.sup.phase(), Phase::Serving);
    s
}

/// HUP: generation 2 forked (201, 202), generation 1 still serving.
fn reloading() -> Sim {
    let mut s = serving();
    assert_eq!(s.signal(Signal::Hup), [Action::LoadConfig]);
    assert_eq!(
        s.on(Event::ConfigLoaded(tuning(2))),
        [notify("RELOADING=1")]
    );
    assert_eq!(s.sup.phase(), Phase::Reloading);
    let a = s.tick();
    s.spawned(&a, &[201, 202]);
    s
}

/// USR2: the check (pid 900) runs.
fn upgrading() -> Sim {
    let mut s = serving();
    assert_eq!(s.signal(Signal::Usr2), [Action::StartCheck]);
    assert!(s.on(Event::CheckStarted { pid: 900 }).is_empty());
    assert!(matches!(s.sup.phase(), Phase::Upgrading { pid: 900, .. }));
    s
}

fn stopping() -> Sim {
    let mut s = serving();
    s.signal(Signal::Term);
    assert!(s.sup.is_stopping());
    s
}

/// Worker 101 could not import the app on the first boot.
fn halting() -> Sim {
    let mut s = starting();
    assert_eq!(
        s.exit(101, Exit::Code(APP_LOAD_ERROR)),
        [Action::Forget { pid: 101 }, Action::Halt(APP_LOAD_ERROR)]
    );
    s
}

#[derive(Clone, Copy, Debug)]
enum Named {
    Starting,
    Serving,
    Reloading,
    Upgrading,
    Stopping,
    Halting,
}

const PHASES: [Named; 6] = [
    Named::Starting,
    Named::Serving,
    Named::Reloading,
    Named::Upgrading,
    Named::Stopping,
    Named::Halting,
];

fn make(p: Named) -> Sim {
    match p {
        Named::Starting => starting(),
        Named::Serving => serving(),
        Named::Reloading => reloading(),
        Named::Upgrading => upgrading(),
        Named::Stopping => stopping(),
        Named::Halting => halting(),
    }
}

/// What a signal must do in a phase: its actions, and the phase after.
fn expected(p: Named, sig: Signal, pids: &[i32]) -> (Vec<Action>, &'static str) {
    let to_all = |signal| pids.iter().map(|&p| kill(p, signal)).collect::<Vec<_>>();
    let stop = |quick: bool| {
        let mut a = vec![notify("STOPPING=1"), Action::CloseListeners];
        if matches!(p, Named::Upgrading) {
            a.push(kill(900, KILL));
        }
        a.extend(to_all(if quick { QUIT } else { TERM }));
        if !quick {
            a.push(notify("EXTEND_TIMEOUT_USEC=35000000"));
        }
        a
    };
    let same = match p {
        Named::Starting => "starting",
        Named::Serving => "serving",
        Named::Reloading => "reloading",
        Named::Upgrading => "upgrading",
        Named::Stopping => "stopping",
        Named::Halting => "halting",
    };
    use Named as N;
    use Signal as S;
    match (p, sig) {
        (N::Halting, _) | (_, S::Winch) => (vec![], same),
        (_, S::Usr1) => {
            let mut a = vec![Action::ReopenLogs];
            a.extend(to_all(Sig::SIGUSR1));
            (a, same)
        }
        (N::Stopping, S::Int | S::Quit) => (to_all(QUIT), "stopping quickly"),
        (N::Stopping, _) => (vec![], same),
        (_, S::Term) => (stop(false), "stopping"),
        (_, S::Int | S::Quit) => (stop(true), "stopping quickly"),
        (N::Serving | N::Reloading, S::Hup) => (vec![Action::LoadConfig], same),
        (N::Serving, S::Usr2) => (vec![Action::StartCheck], same),
        (_, S::Hup | S::Usr2 | S::Ttin | S::Ttou) => (vec![], same),
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Serving => "serving",
        Phase::Reloading => "reloading",
        Phase::Upgrading { .. } => "upgrading",
        Phase::Stopping { quick: false, .. } => "stopping",
        Phase::Stopping { quick: true, .. } => "stopping quickly",
        Phase::Halting { .. } => "halting",
    }
}

#[test]
fn every_signal_in_every_phase() {
    for p in PHASES {
        for sig in Signal::ALL {
            let mut s = make(p);
            let pids = s.pids();
            let target = s.sup.target();
            let got = s.signal(sig);
            let (want, phase) = expected(p, sig, &pids);
            assert_eq!(got, want, "{sig:?} while {p:?}");
            assert_eq!(phase_name(s.sup.phase()), phase, "{sig:?} while {p:?}");
            let changes_count = !matches!(p, Named::Stopping | Named::Halting);
            let want_target = match sig {
                Signal::Ttin if changes_count => target + 1,
                Signal::Ttou if changes_count => target - 1,
                _ => target,
            };
            assert_eq!(s.sup.target(), want_target, "{sig:?} while {p:?}");
        }
    }
}

#[test]
fn a_hup_before_ready_reloads_once_the_first_workers_are_up() {
    let mut s = starting();
    assert!(s.signal(Signal::Hup).is_empty());
    s.booted(101);
    s.booted(102);
    assert_eq!(
        s.tick(),
        [notify("READY=1"), Action::PingWatchdog, Action::LoadConfig]
    );
    // Only once.
    assert!(s.tick().is_empty());
}

#[test]
fn a_reload_retires_the_old_generation_once_the_new_one_is_up() {
    let mut s = reloading();
    s.booted(201);
    assert!(s.tick().is_empty(), "one of two is not enough");
    s.booted(202);
    assert_eq!(
        s.tick(),
        [kill(101, TERM), kill(102, TERM), notify("READY=1")]
    );
    assert_eq!(s.sup.phase(), Phase::Serving);
    assert!(matches!(s.state(101), State::Retiring { .. }));
    // Retired workers exit: nothing is replaced, nothing failed.
    assert_eq!(s.exit(101, Exit::Code(0)), [Action::Forget { pid: 101 }]);
    assert_eq!(s.exit(102, Exit::Code(0)), [Action::Forget { pid: 102 }]);
    assert!(s.tick().is_empty());
    assert_eq!(s.pids(), [201, 202]);
}

#[test]
fn a_reload_whose_workers_cannot_boot_keeps_the_old_generation() {
    let mut s = reloading();
    s.booted(201);
    assert_eq!(
        s.exit(202, Exit::Code(APP_LOAD_ERROR)),
        [
            Action::Forget { pid: 202 },
            kill(201, TERM),
            notify("READY=1")
        ]
    );
    assert_eq!(s.sup.phase(), Phase::Serving);
    // Generation 1 is current again: complete, nothing to fork.
    assert!(s.tick().is_empty());
    assert_eq!(s.state(101), State::Serving);
}

#[test]
fn a_first_boot_that_fails_halts_with_gunicorns_codes() {
    for (exit, code) in [
        (Exit::Code(APP_LOAD_ERROR), APP_LOAD_ERROR),
        (Exit::Code(WORKER_BOOT_ERROR), WORKER_BOOT_ERROR),
        (Exit::Code(1), WORKER_BOOT_ERROR),
        (Exit::Signal(Sig::SIGSEGV), WORKER_BOOT_ERROR),
    ] {
        let mut s = starting();
        assert_eq!(
            s.exit(102, exit),
            [Action::Forget { pid: 102 }, Action::Halt(code)]
        );
        assert_eq!(s.sup.phase(), Phase::Halting { code });
        // Nothing more happens: the loop stops everything.
        assert!(s.tick().is_empty());
        assert!(s.exit(101, Exit::Code(0)) == [Action::Forget { pid: 101 }]);
    }
}

#[test]
fn a_replacement_that_cannot_boot_is_retried_less_and_less_often() {
    let mut s = serving();
    // A serving worker crashes: replaced at the next tick.
    assert_eq!(s.exit(101, Exit::Code(1)), [Action::Forget { pid: 101 }]);
    let a = s.tick();
    s.spawned(&a, &[103]);
    // Its replacement cannot boot: no halt, a retry after 1 s, then 2 s.
    assert_eq!(s.exit(103, Exit::Code(3)), [Action::Forget { pid: 103 }]);
    assert!(s.at(0.5).tick().is_empty(), "retried too soon");
    let a = s.at(1.0).tick();
    s.spawned(&a, &[104]);
    assert_eq!(s.exit(104, Exit::Code(3)), [Action::Forget { pid: 104 }]);
    // STATUS says so until one boots.
    let status = |a: &[Action]| {
        a.iter()
            .find_map(|a| match a {
                Action::Notify(n) if n.starts_with("STATUS=") => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let a = s.at(2.5).raw(Event::Tick);
    assert!(status(&a).contains("failed to boot 2 time(s)"), "{a:?}");
    assert!(plain(a).is_empty(), "the second wait is 2 s");
    let a = s.at(3.0).tick();
    s.spawned(&a, &[105]);
    assert_eq!(s.sup.phase(), Phase::Serving);
    s.booted(105);
    let a = s.at(20.0).raw(Event::Tick);
    assert!(status(&a).starts_with("STATUS=2/2 workers ready"), "{a:?}");
    assert!(!status(&a).contains("failed"), "{a:?}");
}

#[test]
fn a_silent_worker_is_aborted_then_killed_and_replaced() {
    let mut s = serving();
    s.on(Event::Message {
        pid: 102,
        msg: msg(Kind::Heartbeat, 5),
    });
    s.at(20.0).on(Event::Message {
        pid: 102,
        msg: msg(Kind::Heartbeat, 7),
    });
    // Its replacement is forked at once.
    let a = s.at(31.0).tick();
    assert_eq!(a, [kill(101, Sig::SIGABRT), Action::Spawn]);
    s.spawned(&a, &[103]);
    assert!(matches!(s.state(101), State::Aborting { .. }));
    assert!(s.at(32.0).tick().is_empty());
    assert_eq!(s.at(33.0).tick(), [kill(101, KILL)]);
    assert!(s.at(34.0).tick().is_empty(), "killed once");
    assert_eq!(
        s.exit(101, Exit::Signal(KILL)),
        [Action::Forget { pid: 101 }]
    );
    assert!(s.tick().is_empty());
    assert_eq!(s.sup.phase(), Phase::Serving);
}

#[test]
fn a_worker_that_times_out_while_booting_is_not_a_boot_failure() {
    let mut s = starting();
    s.booted(102);
    s.at(20.0).on(Event::Message {
        pid: 102,
        msg: msg(Kind::Heartbeat, 0),
    });
    let a = s.at(31.0).tick();
    assert_eq!(a, [kill(101, Sig::SIGABRT), Action::Spawn]);
    s.spawned(&a, &[103]);
    assert_eq!(
        s.exit(101, Exit::Signal(Sig::SIGABRT)),
        [Action::Forget { pid: 101 }],
        "no halt"
    );
    assert_eq!(s.sup.phase(), Phase::Starting);
}

#[test]
fn a_graceful_stop_kills_what_is_left_at_the_deadline_once() {
    let mut s = stopping();
    assert!(s.at(10.0).tick().is_empty());
    assert_eq!(s.exit(101, Exit::Code(0)), [Action::Forget { pid: 101 }]);
    assert_eq!(s.at(30.0).tick(), [kill(102, KILL)]);
    assert!(s.at(30.1).tick().is_empty());
    assert_eq!(
        s.exit(102, Exit::Signal(KILL)),
        [Action::Forget { pid: 102 }]
    );
    assert_eq!(s.tick(), [Action::Exit(0)]);
}

#[test]
fn a_worker_that_dies_unbooted_while_stopping_is_no_boot_failure() {
    let mut s = starting();
    s.signal(Signal::Term);
    assert_eq!(s.exit(101, Exit::Code(3)), [Action::Forget { pid: 101 }]);
    assert_eq!(s.exit(102, Exit::Code(0)), [Action::Forget { pid: 102 }]);
    assert_eq!(s.tick(), [Action::Exit(0)]);
}

#[test]
fn a_passed_check_hands_over_and_a_failed_exec_serves_on() {
    let mut s = upgrading();
    assert_eq!(
        s.on(Event::CheckEnded(Ok(()))),
        [notify("RELOADING=1"), Action::Exec]
    );
    let a = s.on(Event::ExecFailed("exec failed: ENOENT".into()));
    assert_eq!(a, [notify("READY=1")]);
    assert_eq!(s.sup.phase(), Phase::Serving);
    // A new USR2 may try again.
    assert_eq!(s.signal(Signal::Usr2), [Action::StartCheck]);
}

#[test]
fn a_failed_check_is_refused_and_shown_in_status() {
    let mut s = upgrading();
    let a = s.raw(Event::CheckEnded(Err("exit code 2: bad setting".into())));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Notify(n) if n.contains("upgrade refused: exit code 2"))),
        "{a:?}"
    );
    assert_eq!(s.sup.phase(), Phase::Serving);
    assert!(!a.contains(&Action::Exec));
}

#[test]
fn a_check_without_answer_is_killed_after_its_time_limit() {
    let mut s = upgrading();
    // The workers keep reporting meanwhile.
    for t in [20.0, 40.0, 59.0] {
        for pid in [101, 102] {
            s.at(t).on(Event::Message {
                pid,
                msg: msg(Kind::Heartbeat, 0),
            });
        }
    }
    assert!(s.at(59.0).tick().is_empty());
    assert_eq!(s.at(61.0).tick(), [kill(900, KILL)]);
}

#[test]
fn adopted_workers_serve_until_the_new_image_has_its_own() {
    let mut s = Sim::new(2);
    let adopted = [101, 102].map(|pid| Adopted {
        pid,
        booted: true,
        requests: 10,
        retiring: false,
    });
    s.sup.adopt(&adopted, s.clock.at(0.0));
    assert_eq!(s.sup.phase(), Phase::Reloading);
    let a = s.tick();
    s.spawned(&a, &[201, 202]);
    s.booted(201);
    s.booted(202);
    assert_eq!(
        s.tick(),
        [kill(101, TERM), kill(102, TERM), notify("READY=1")],
        "READY=1 ends the reload the previous image announced"
    );
}

#[test]
fn ttou_retires_the_oldest_and_ttin_forks_one_more() {
    let mut s = serving();
    s.signal(Signal::Ttou);
    assert_eq!(s.tick(), [kill(101, TERM)]);
    s.signal(Signal::Ttin);
    let a = s.tick();
    s.spawned(&a, &[103]);
}

#[test]
fn status_counts_the_requests_served() {
    let mut s = serving();
    s.on(Event::Message {
        pid: 101,
        msg: msg(Kind::Heartbeat, 40),
    });
    s.on(Event::Message {
        pid: 102,
        msg: msg(Kind::Heartbeat, 2),
    });
    let a = s.at(5.0).raw(Event::Tick);
    assert!(
        a.contains(&notify(
            "STATUS=2/2 workers ready, 42 requests served, 0 in flight"
        )),
        "{a:?}"
    );
}

#[test]
fn the_watchdog_counts_only_live_workers() {
    let s = starting();
    assert!(s.sup.healthy(), "importing the app counts before READY");
    let mut s = serving();
    assert!(s.sup.healthy());
    s.at(31.0).tick();
    assert!(!s.sup.healthy(), "aborted workers are not in control");
}

#[test]
fn every_signal_the_master_catches_has_a_meaning() {
    for &caught in super::super::signals::HANDLED {
        if caught != Sig::SIGCHLD {
            let sig = Signal::of(caught);
            assert!(sig.is_some_and(|s| Signal::ALL.contains(&s)), "{caught}");
        }
    }
}

fn heartbeat(s: &mut Sim, pids: &[i32]) {
    for &pid in pids {
        s.on(Event::Message {
            pid,
            msg: msg(Kind::Heartbeat, 0),
        });
    }
}

#[test]
fn a_worker_over_its_memory_three_times_in_a_row_is_replaced_after_its_replacement_boots() {
    let mut s = Sim::new(2);
    s.sup = Supervisor::new(Tuning {
        max_memory: 100 << 20,
        ..tuning(2)
    });
    let a = s.tick();
    s.spawned(&a, &[101, 102]);
    s.booted(101);
    s.booted(102);
    s.tick();
    let sample = |s: &mut Sim, mb: u64| {
        s.on(Event::Memory {
            pid: 101,
            bytes: mb << 20,
        })
    };
    // A spike is not a leak: a sample under the limit starts the count again.
    sample(&mut s, 150);
    sample(&mut s, 150);
    sample(&mut s, 90);
    sample(&mut s, 150);
    sample(&mut s, 150);
    assert!(s.tick().is_empty(), "two in a row are not enough");
    sample(&mut s, 150);
    assert_eq!(s.sup.recycled(Recycle::Memory), 1);
    // The replacement boots first; the old worker serves meanwhile.
    let a = s.tick();
    assert_eq!(a, [Action::Spawn]);
    s.spawned(&a, &[103]);
    assert_eq!(s.state(101), State::Serving);
    assert!(s.tick().is_empty());
    s.booted(103);
    assert_eq!(s.tick(), [kill(101, TERM)]);
    assert_eq!(s.exit(101, Exit::Code(0)), [Action::Forget { pid: 101 }]);
    assert!(s.tick().is_empty(), "two workers again");
    assert_eq!(s.pids(), [102, 103]);
}

#[test]
fn lifetimes_end_one_worker_at_a_time() {
    let mut s = Sim::new(2);
    s.sup = Supervisor::new(Tuning {
        lifetime: Duration::from_secs(10),
        ..tuning(2)
    });
    let a = s.tick();
    s.spawned(&a, &[101, 102]);
    s.booted(101);
    s.booted(102);
    s.tick();
    heartbeat(s.at(9.0), &[101, 102]);
    assert!(s.tick().is_empty());
    // Both are due; one is replaced.
    heartbeat(s.at(10.0), &[101, 102]);
    let a = s.tick();
    assert_eq!(a, [Action::Spawn]);
    s.spawned(&a, &[103]);
    s.booted(103);
    assert_eq!(s.tick(), [kill(101, TERM)]);
    assert_eq!(s.sup.recycled(Recycle::Lifetime), 1);
    assert!(s.tick().is_empty(), "the next waits until this one is gone");
    s.exit(101, Exit::Code(0));
    let a = s.tick();
    assert_eq!(a, [Action::Spawn], "then the other");
    s.spawned(&a, &[104]);
    s.booted(104);
    assert_eq!(s.tick(), [kill(102, TERM)]);
    assert_eq!(s.sup.recycled(Recycle::Lifetime), 2);
}

#[test]
fn lifetime_jitter_spreads_workers_within_its_bound() {
    let max = Duration::from_secs(5);
    let spread: Vec<Duration> = (100..200).map(|pid| jitter(pid, max)).collect();
    assert!(spread.iter().all(|j| *j <= max));
    let distinct: std::collections::BTreeSet<_> = spread.iter().collect();
    assert!(distinct.len() > 50, "{distinct:?}");
    assert_eq!(jitter(123, Duration::ZERO), Duration::ZERO);
}

#[test]
fn livez_and_readyz_follow_the_phases() {
    let s = starting();
    assert!(s.sup.live(), "booting workers are alive");
    assert!(!s.sup.ready(), "none serves yet");
    let mut s = serving();
    assert!(s.sup.live() && s.sup.ready());
    s.signal(Signal::Term);
    assert!(!s.sup.ready(), "a stop is not ready, from its first moment");
    assert!(s.sup.live(), "the workers still finish their requests");
    let s = halting();
    assert!(!s.sup.live() && !s.sup.ready());
}

#[test]
fn a_worker_with_a_stuck_thread_is_replaced_once_and_counted_once() {
    let mut s = serving();
    let pids = s.pids();
    let stuck = pids[0];
    let replace = |s: &mut Sim| {
        s.on(Event::Message {
            pid: stuck,
            msg: msg(Kind::Replace, 0),
        })
    };
    replace(&mut s);
    replace(&mut s);
    assert_eq!(s.sup.recycled(Recycle::RequestTimeout), 1);
    let a = s.tick();
    assert_eq!(a, [Action::Spawn], "the replacement boots first");
    s.spawned(&a, &[201]);
    assert_eq!(s.state(stuck), State::Serving, "it serves meanwhile");
    s.booted(201);
    assert_eq!(s.tick(), [kill(stuck, TERM)]);
    s.exit(stuck, Exit::Code(0));
    assert!(s.tick().is_empty());
    // A sync worker drains itself before its replacement is up: its exit
    // is not a max-requests restart.
    let mut s = serving();
    let stuck = s.pids()[0];
    s.on(Event::Message {
        pid: stuck,
        msg: msg(Kind::Replace, 0),
    });
    s.exit(stuck, Exit::Code(0));
    let restarts: Vec<_> = s.sup.restarts().filter(|(_, n)| *n > 0).collect();
    assert_eq!(restarts, [("request_timeout", 1)]);
    assert_eq!(s.tick(), [Action::Spawn]);
}

#[test]
fn a_hup_that_cannot_reload_ends_as_a_refused_reload() {
    // `ferricorn ctl reload` waits for the count of ended reloads to move.
    let mut s = upgrading();
    let before = s.sup.reloads().0;
    assert!(s.signal(Signal::Hup).is_empty());
    assert_eq!(s.sup.reloads().0, before + 1);
    assert_eq!(
        s.sup.reloads().1,
        "reload refused: an upgrade is in progress"
    );
    let mut s = serving();
    s.signal(Signal::Term);
    let before = s.sup.reloads().0;
    s.signal(Signal::Hup);
    assert_eq!(s.sup.reloads().0, before + 1);
    assert!(s.sup.reloads().1.contains("stopping"));
}

#[test]
fn a_code_change_reloads_once_however_many_workers_report_it() {
    let mut s = serving();
    let pids = s.pids();
    let report = |s: &mut Sim, pid: i32| {
        s.on(Event::Message {
            pid,
            msg: msg(Kind::Reload, 0),
        })
    };
    assert_eq!(report(&mut s, pids[0]), [Action::LoadConfig]);
    s.on(Event::ConfigLoaded(tuning(2)));
    assert_eq!(s.sup.phase(), Phase::Reloading);
    assert!(
        report(&mut s, pids[1]).is_empty(),
        "one reload is under way"
    );
}
