//! gunicorn's server hooks that run in a worker (post_fork,
//! post_worker_init, pre_request, post_request, worker_int, worker_exit),
//! from a gunicorn `*.py` config or as TOML `module:function` references,
//! with gunicorn's arguments. A gunicorn 27 run on the same config and
//! steps writes the same per-worker sequence.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// Hooks that write one line each: the hook, the pid it ran in, what it saw.
const HOOKS: &str = r#"
import os

def _write(*parts):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")

def post_fork(server, worker):
    _write("post_fork", os.getpid(), worker.pid, server.pid, worker.ppid, server.cfg.workers, worker.age > 0)

def post_worker_init(worker):
    _write("post_worker_init", os.getpid(), worker.pid, worker.wsgi is not None)

def pre_request(worker, req):
    host = dict(req.headers).get("HOST")
    _write("pre_request", os.getpid(), req.method, req.path, req.query, host)
    if req.path == "/refused-by-hook":
        raise RuntimeError("pre_request refused it")

def post_request(worker, req, environ, resp):
    _write("post_request", os.getpid(), req.method, req.path, environ.get("PATH_INFO"), resp.status.split()[0])

def worker_int(worker):
    _write("worker_int", os.getpid(), worker.pid)

def worker_exit(server, worker):
    _write("worker_exit", os.getpid(), worker.pid)
"#;

fn lines(log: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect()
}

/// Wait until the hook log has `n` lines naming `hook`.
fn wait_hook(log: &Path, hook: &str, n: usize) -> Vec<Vec<String>> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let all = lines(log);
        if all.iter().filter(|l| l[0] == hook).count() >= n {
            return all;
        }
        assert!(std::time::Instant::now() < deadline, "{hook} x{n}: {all:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Two workers of the conformance app from `dir`, with a TOML config that
/// names `hooks` from module `myhooks` (`source`); the server and the file
/// the hooks write to.
fn with_toml_hooks(dir: &Path, source: &str, hooks: &[&str], extra: &str) -> (Server, PathBuf) {
    std::fs::write(dir.join("myhooks.py"), source).unwrap();
    std::fs::copy(
        apps_dir().join("conformance.py"),
        dir.join("conformance.py"),
    )
    .unwrap();
    let log = dir.join("hooks.log");
    let toml = dir.join("app.toml");
    let mut text = format!("app = \"conformance:app\"\nworkers = 2\n{extra}");
    for hook in hooks {
        text.push_str(&format!("{hook} = \"myhooks:{hook}\"\n"));
    }
    std::fs::write(&toml, text).unwrap();
    let s = command()
        .args(["-b", "127.0.0.1:0", "-c", &toml.display().to_string()])
        .args(["--chdir", &dir.display().to_string()])
        .env("HOOK_LOG", &log.display().to_string())
        .wait_workers(2)
        .start();
    (s, log)
}

#[test]
fn toml_hooks_run_in_each_worker_with_gunicorns_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = [
        "post_fork",
        "post_worker_init",
        "pre_request",
        "post_request",
        "worker_int",
        "worker_exit",
    ];
    let (mut s, log) = with_toml_hooks(dir.path(), HOOKS, &hooks, "");
    let workers = s.wait_worker_count(2, LONG);
    let master = s.pid.to_string();
    let all = wait_hook(&log, "post_worker_init", 2);
    for l in all.iter().filter(|l| l[0] == "post_fork") {
        // In the worker, about itself; the server is the master.
        assert_eq!(l[1], l[2], "{l:?}");
        assert!(
            workers.iter().any(|w| w.to_string() == l[1]),
            "{l:?} {workers:?}"
        );
        assert_eq!(
            (&l[3], &l[4], &l[5], &l[6]),
            (&master, &master, &"2".to_string(), &"True".to_string()),
            "{l:?}"
        );
    }
    for l in all.iter().filter(|l| l[0] == "post_worker_init") {
        assert_eq!((l[1] == l[2], l[3].as_str()), (true, "True"), "{l:?}");
    }
    // post_fork comes before the app is imported, post_worker_init after.
    let order: Vec<&str> = all.iter().map(|l| l[0].as_str()).collect();
    assert_eq!(order.iter().filter(|h| **h == "post_fork").count(), 2);

    let r = s.get("/environ?x=1");
    assert_eq!(r.status, 200);
    let all = wait_hook(&log, "post_request", 1);
    let pre = all.iter().find(|l| l[0] == "pre_request").unwrap();
    assert_eq!(&pre[2..], ["GET", "/environ", "x=1", "test"]);
    let post = all.iter().find(|l| l[0] == "post_request").unwrap();
    assert_eq!(&post[2..], ["GET", "/environ", "/environ", "200"]);
    assert_eq!(pre[1], post[1], "one worker ran both");

    // A pre_request that raises: 500, its traceback, and post_request still runs.
    assert_eq!(s.get("/refused-by-hook").status, 500);
    s.wait_log("pre_request refused it", LONG);
    let all = wait_hook(&log, "post_request", 2);
    assert_eq!(
        all.iter().rfind(|l| l[0] == "post_request").unwrap()[5],
        "500"
    );

    // INT: each worker runs worker_int, then worker_exit.
    s.signal(libc::SIGINT);
    s.wait_exit(LONG);
    let all = wait_hook(&log, "worker_exit", 2);
    for w in &workers {
        let mine: Vec<&str> = all
            .iter()
            .filter(|l| l[1] == w.to_string())
            .map(|l| l[0].as_str())
            .filter(|h| *h != "pre_request" && *h != "post_request")
            .collect();
        assert_eq!(
            mine,
            ["post_fork", "post_worker_init", "worker_int", "worker_exit"],
            "{all:?}"
        );
    }
}

/// A worker's hooks, by worker, in order, without pids: what both servers
/// must agree on.
fn by_worker(log: &Path) -> Vec<Vec<String>> {
    let mut per: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines(log) {
        let shown = match l[0].as_str() {
            "pre_request" | "post_request" => l[0].clone() + " " + &l[2..].join(" "),
            other => other.to_string(),
        };
        per.entry(l[1].clone()).or_default().push(shown);
    }
    let mut v: Vec<_> = per.into_values().collect();
    v.sort();
    v
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn a_gunicorn_config_s_worker_hooks_run_as_gunicorn_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    std::fs::write(&conf, format!("workers = 2\n{HOOKS}")).unwrap();
    let run = |ours: bool| -> Vec<Vec<String>> {
        let log = dir
            .path()
            .join(if ours { "ours.log" } else { "theirs.log" });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = if ours {
            bin().into()
        } else {
            test_venv().join("bin/gunicorn")
        };
        let child = std::process::Command::new(bin)
            .args([
                "-c",
                &conf.display().to_string(),
                "-b",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("conformance:app")
            .current_dir(apps_dir())
            .env("HOOK_LOG", &log)
            .env_remove("WEB_CONCURRENCY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let child = Reaped(child);
        wait_hook(&log, "post_worker_init", 2);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let r = request(
            addr,
            "GET /environ?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        wait_hook(&log, "post_request", 1);
        // TERM: a graceful stop; each worker runs worker_exit.
        unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
        wait_hook(&log, "worker_exit", 2);
        drop(child);
        by_worker(&log)
    };
    let ours = run(true);
    let theirs = run(false);
    assert_eq!(ours, theirs);
    assert!(
        ours.iter().any(|w| w
            .iter()
            .any(|h| h.starts_with("post_request GET /environ /environ 200"))),
        "{ours:?}"
    );
}

#[test]
fn a_worker_stopped_for_its_timeout_runs_worker_abort_then_worker_exit() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "{HOOKS}\ndef worker_abort(worker):\n    _write('worker_abort', os.getpid(), worker.pid)\n"
    );
    std::fs::write(dir.path().join("myhooks.py"), hooks).unwrap();
    std::fs::copy(
        apps_dir().join("conformance.py"),
        dir.path().join("conformance.py"),
    )
    .unwrap();
    let log = dir.path().join("hooks.log");
    let s = command()
        .args(["-b", "127.0.0.1:0", "-w", "1", "--timeout", "1"])
        .args([
            "--worker-abort",
            "myhooks:worker_abort",
            "--worker-exit",
            "myhooks:worker_exit",
        ])
        .args([
            "--chdir",
            &dir.path().display().to_string(),
            "conformance:app",
        ])
        .env("HOOK_LOG", &log.display().to_string())
        .start();
    let pid = s.workers()[0].to_string();
    let addr = s.addr();
    let busy = std::thread::spawn(move || {
        request(
            addr,
            "GET /sleep?10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    s.wait_log("WORKER TIMEOUT", LONG);
    let all = wait_hook(&log, "worker_exit", 1);
    let mine: Vec<&str> = all
        .iter()
        .filter(|l| l[1] == pid)
        .map(|l| l[0].as_str())
        .collect();
    assert_eq!(mine, ["worker_abort", "worker_exit"], "{all:?}");
    let _ = busy.join();
}

/// Every gunicorn server hook writes a line: its name, the process it ran
/// in, and what it was given.
const ALL_HOOKS: &str = r#"
import os

workers = 1
timeout = 2
graceful_timeout = 10

def _write(*parts):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(" ".join(str(p) for p in parts) + "\n")

# The arbiter's: name, pid, parent pid, server.pid, then the arguments.
# (gunicorn's first nworkers_changed comes before its arbiter has a pid.)
def _arbiter(name, server, *args):
    _write(name, os.getpid(), os.getppid(), getattr(server, "pid", "unset"), *args)

def on_starting(server): _arbiter("on_starting", server)
def when_ready(server): _arbiter("when_ready", server)
def on_reload(server): _arbiter("on_reload", server)
def pre_exec(server): _arbiter("pre_exec", server)
def on_exit(server): _arbiter("on_exit", server)
def pre_fork(server, worker): _arbiter("pre_fork", server, worker.age, worker.pid)
def child_exit(server, worker): _arbiter("child_exit", server, worker.age, worker.pid)
def nworkers_changed(server, new, old): _arbiter("nworkers_changed", server, new, old)

# A worker's: name, pid, worker.pid, worker.age, then what else it was given.
def _worker(name, worker, *args):
    _write(name, os.getpid(), worker.pid, worker.age, *args)

def post_fork(server, worker): _worker("post_fork", worker)
def post_worker_init(worker): _worker("post_worker_init", worker)
def worker_int(worker): _worker("worker_int", worker)
def worker_abort(worker): _worker("worker_abort", worker)
def worker_exit(server, worker): _worker("worker_exit", worker)
def pre_request(worker, req): _worker("pre_request", worker, req.method, req.path)
def post_request(worker, req, environ, resp):
    _worker("post_request", worker, req.path, resp.status.split()[0] if resp else None)
"#;

const ARBITER: [&str; 8] = [
    "on_starting",
    "when_ready",
    "on_reload",
    "pre_exec",
    "on_exit",
    "pre_fork",
    "child_exit",
    "nworkers_changed",
];

/// Hook lines as both servers must agree on them, step by step: no pids,
/// but checked first (a worker's hooks run in it; the arbiter's run in the
/// master's process or, in ferricorn, in its child the hook host; child_exit
/// is given the worker that post_fork ran in).
fn tokens(
    steps: &[(&'static str, Vec<Vec<String>>)],
    ours: bool,
) -> Vec<(&'static str, Vec<String>)> {
    let mut pid_of_age: BTreeMap<String, String> = BTreeMap::new();
    let mut token = |l: &Vec<String>| -> String {
        let name = l[0].as_str();
        if !ARBITER.contains(&name) {
            assert_eq!(l[1], l[2], "{name} ran outside its worker: {l:?}");
            if name == "post_fork" {
                pid_of_age.insert(l[3].clone(), l[1].clone());
            }
            return format!("{name} age={} {}", l[3], l[4..].join(" "))
                .trim_end()
                .to_string();
        }
        let (pid, ppid, server) = (&l[1], &l[2], &l[3]);
        let in_arbiter = if ours {
            ppid == server
        } else {
            pid == server
                || (name == "pre_exec" && ppid == server)
                || (name == "nworkers_changed" && server == "unset")
        };
        assert!(in_arbiter, "{name} ran outside the arbiter: {l:?}");
        let mut args = &l[4..];
        if name == "child_exit" {
            assert_eq!(pid_of_age.get(&l[4]), Some(&l[5]), "{l:?}");
            args = &l[4..5];
        }
        std::iter::once(name)
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    };
    steps
        .iter()
        .map(|(step, lines)| (*step, lines.iter().map(&mut token).collect()))
        .collect()
}

fn count(log: &Path, hook: &str) -> usize {
    lines(log).iter().filter(|l| l[0] == hook).count()
}

/// Wait until the log has at least these many lines of these hooks.
fn wait_counts(log: &Path, want: &[(&str, usize)]) {
    let deadline = std::time::Instant::now() + LONG;
    while want.iter().any(|(h, n)| count(log, h) < *n) {
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {want:?}: {:?}",
            lines(log)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Kills a process that is not our child (gunicorn's new master after
/// USR2) if the test fails before it ends.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .is_ok_and(|s| !s.contains(") Z"))
        {
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// The steps, each with the hook lines it wrote.
fn hook_steps(ours: bool, dir: &Path, conf: &Path) -> Vec<(&'static str, Vec<Vec<String>>)> {
    let log = dir.join(if ours { "ours.log" } else { "theirs.log" });
    let errors =
        std::fs::File::create(dir.join(if ours { "ours.err" } else { "theirs.err" })).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let bin = if ours {
        bin().into()
    } else {
        test_venv().join("bin/gunicorn")
    };
    let child = std::process::Command::new(bin)
        .args(["-c", &conf.display().to_string()])
        .args(["-b", &addr.to_string(), "conformance:app"])
        .current_dir(apps_dir())
        .env("HOOK_LOG", &log)
        .env_remove("WEB_CONCURRENCY")
        .stdout(std::process::Stdio::null())
        .stderr(errors)
        .spawn()
        .unwrap();
    let mut master = Reaped(child);
    let pid = master.0.id() as i32;
    let signal = |pid: i32, sig: i32| unsafe { libc::kill(pid, sig) };
    let mut steps = Vec::new();
    let mut seen = 0;
    let mut step = |name: &'static str, steps: &mut Vec<_>| {
        let all = lines(&log);
        steps.push((name, all[seen..].to_vec()));
        seen = all.len();
    };

    wait_counts(&log, &[("post_worker_init", 1)]);
    step("start", &mut steps);

    let r = request(
        addr,
        "GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    wait_counts(&log, &[("post_request", 1)]);
    step("request", &mut steps);

    signal(pid, libc::SIGHUP);
    wait_counts(&log, &[("post_worker_init", 2), ("child_exit", 1)]);
    step("HUP", &mut steps);

    signal(pid, libc::SIGTTIN);
    wait_counts(&log, &[("post_worker_init", 3)]);
    step("TTIN", &mut steps);

    signal(pid, libc::SIGTTOU);
    wait_counts(&log, &[("child_exit", 2)]);
    step("TTOU", &mut steps);

    // A request that outlives --timeout: the worker is aborted and replaced.
    let stuck = std::thread::spawn(move || {
        std::net::TcpStream::connect(addr).and_then(|mut c| {
            use std::io::{Read, Write};
            c.write_all(b"GET /sleep?10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            c.read_to_end(&mut Vec::new())
        })
    });
    wait_counts(&log, &[("post_worker_init", 4), ("child_exit", 3)]);
    let _ = stuck.join();
    step("worker timeout", &mut steps);

    signal(pid, libc::SIGUSR2);
    let mut guard = None;
    if ours {
        // In place: the new image's worker, then the old one retires.
        wait_counts(&log, &[("post_worker_init", 5), ("child_exit", 4)]);
    } else {
        // gunicorn's upgrade: a second master, then the old one is stopped.
        wait_counts(&log, &[("post_worker_init", 5)]);
        let all = lines(&log);
        let new: i32 = all.iter().filter(|l| l[0] == "on_starting").nth(1).unwrap()[1]
            .parse()
            .unwrap();
        guard = Some(KillOnDrop(new));
        signal(pid, libc::SIGTERM);
        assert!(master.0.wait().unwrap().success());
    }
    step("USR2", &mut steps);

    match &guard {
        Some(KillOnDrop(new)) => {
            signal(*new, libc::SIGTERM);
            wait_gone(&[*new], LONG);
        }
        None => {
            signal(pid, libc::SIGTERM);
            assert!(master.0.wait().unwrap().success());
        }
    }
    step("TERM", &mut steps);
    steps
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn every_server_hook_runs_when_and_where_gunicorn_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    std::fs::write(&conf, ALL_HOOKS).unwrap();
    let ours = hook_steps(true, dir.path(), &conf);
    let theirs = hook_steps(false, dir.path(), &conf);
    let ours = tokens(&ours, true);
    let theirs = tokens(&theirs, false);
    for ((step, ours), (_, theirs)) in ours.iter().zip(&theirs) {
        let (mut ours, mut theirs) = (ours.clone(), theirs.clone());
        match *step {
            // gunicorn's sync worker runs post_request (resp None) for the
            // request its abort interrupted; ferricorn's worker leaves it
            // in the app's thread and runs only worker_abort.
            "worker timeout" => theirs.retain(|t| t != "post_request age=3 /sleep None"),
            // gunicorn's upgrade ends its old master (on_exit); ferricorn's
            // master execs in place and goes on.
            "USR2" => theirs.retain(|t| t != "on_exit"),
            _ => {}
        }
        // The arbiter's hooks run in one process, one after another: the
        // same order, except that ferricorn forks a timed-out worker's
        // replacement before the worker is gone (no gap in capacity).
        let arbiter = |t: &Vec<String>| -> Vec<String> {
            t.iter()
                .filter(|t| ARBITER.iter().any(|a| t.split(' ').next() == Some(*a)))
                .cloned()
                .collect()
        };
        if *step != "worker timeout" {
            assert_eq!(arbiter(&ours), arbiter(&theirs), "{step}: arbiter order");
        }
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "{step}");
    }
    // What the steps must have shown, so that agreement means something.
    let all: Vec<&String> = ours.iter().flat_map(|(_, t)| t).collect();
    for hook in ARBITER.iter().chain(&[
        "post_fork",
        "post_worker_init",
        "worker_abort",
        "worker_exit",
        "pre_request",
        "post_request",
    ]) {
        assert!(
            all.iter().any(|t| t.split(' ').next() == Some(*hook)),
            "{hook} never ran: {all:?}"
        );
    }
}

/// Arbiter hooks for TOML: they count their calls in a module global,
/// which lives as long as the hook host.
const ARBITER_MODULE: &str = r#"
import os, time

calls = 0

def _write(*parts):
    global calls
    calls += 1
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(" ".join(str(p) for p in parts + (calls,)) + "\n")

def on_starting(server):
    _write("on_starting", server.pid, server.cfg.workers)

def when_ready(server):
    _write("when_ready", server.pid, server.num_workers)

def pre_fork(server, worker):
    _write("pre_fork", worker.age, worker.pid)
    if os.path.exists(os.environ["HOOK_LOG"] + ".raise"):
        raise RuntimeError("pre_fork refused it")
    # Hangs until the test removes the file.
    deadline = time.monotonic() + 30
    while os.path.exists(os.environ["HOOK_LOG"] + ".hang") and time.monotonic() < deadline:
        time.sleep(0.02)

def child_exit(server, worker):
    _write("child_exit", worker.age, worker.pid, sorted(server.WORKERS))

def on_exit(server):
    _write("on_exit", server.pid)
"#;

#[test]
fn toml_arbiter_hooks_run_in_one_hook_host_that_outlives_a_raising_or_hanging_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = [
        "on_starting",
        "when_ready",
        "pre_fork",
        "child_exit",
        "on_exit",
    ];
    let (mut s, log) =
        with_toml_hooks(dir.path(), ARBITER_MODULE, &hooks, "graceful_timeout = 1\n");
    let master = s.pid.to_string();
    let all = wait_hook(&log, "pre_fork", 2);
    // One process ran them all, in gunicorn's order, keeping its globals.
    let shown: Vec<String> = all.iter().map(|l| l.join(" ")).collect();
    assert_eq!(
        shown,
        [
            format!("on_starting {master} 2 1"),
            format!("when_ready {master} 2 2"),
            "pre_fork 1 [booting] 3".to_string(),
            "pre_fork 2 [booting] 4".to_string(),
        ]
    );
    s.wait_log("Ready: 2 workers accepting", LONG);

    // A pre_fork that raises is logged with its traceback; the worker is
    // still forked and the server goes on.
    let workers = s.wait_worker_count(3, LONG);
    let host = workers
        .iter()
        .copied()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("hook host"))
        })
        .expect("a hook host among the master's children");
    let killed = *workers.iter().find(|p| **p != host).unwrap();
    std::fs::write(log.with_extension("log.raise"), "").unwrap();
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let all = wait_hook(&log, "pre_fork", 3);
    let exit = all.iter().find(|l| l[0] == "child_exit").unwrap();
    assert_eq!(exit[2], killed.to_string(), "{all:?}");
    s.wait_log("Exception in pre_fork hook", LONG);
    s.wait_log("RuntimeError: pre_fork refused it", LONG);
    s.wait_worker_count(3, LONG);
    std::fs::remove_file(log.with_extension("log.raise")).unwrap();

    // One that hangs holds the master up for --graceful-timeout at most.
    std::fs::write(log.with_extension("log.hang"), "").unwrap();
    let killed = *s.workers().iter().find(|p| **p != host).unwrap();
    unsafe { libc::kill(killed, libc::SIGKILL) };
    s.wait_log("The pre_fork hook did not finish in 1 s", LONG);
    assert_eq!(s.get("/").status, 404, "the server still answers");
    std::fs::remove_file(log.with_extension("log.hang")).unwrap();

    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(LONG).success());
    let all = lines(&log);
    let last = all.last().unwrap();
    assert_eq!(&last[..2], ["on_exit", master.as_str()], "{all:?}");
    // The same module all along: its call count never started again.
    let counts: Vec<u64> = all
        .iter()
        .map(|l| l.last().unwrap().parse().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
    wait_gone(&[host], LONG);
}

#[test]
fn an_on_starting_hook_that_raises_stops_the_start_before_anything_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    std::fs::write(
        &conf,
        "def on_starting(server):\n    raise RuntimeError('no database')\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = command()
        .args(["-c", &conf.display().to_string()])
        .args(["-b", &format!("127.0.0.1:{port}")])
        .args([
            "--chdir",
            &apps_dir().display().to_string(),
            "conformance:app",
        ])
        .spawn();
    assert_eq!(s.wait_exit(LONG).code(), Some(1));
    let log = s.log_text();
    assert!(log.contains("Exception in on_starting hook"), "{log}");
    assert!(log.contains("RuntimeError: no database"), "{log}");
    assert!(!log.contains("Listening at"), "{log}");
}

/// A sample's value on a Prometheus text page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn prometheus_client_multiprocess_mode_works_with_child_exit() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_dir = dir.path().join("prometheus");
    std::fs::create_dir(&metrics_dir).unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    std::fs::write(
        &conf,
        "from prometheus_client import multiprocess\n\n\
         def child_exit(server, worker):\n    multiprocess.mark_process_dead(worker.pid)\n",
    )
    .unwrap();
    let venv = test_venv();
    let s = server("prom_multiproc:app")
        .args(["-c", &conf.display().to_string(), "-w", "2"])
        .args(["--virtualenv", venv.to_str().unwrap()])
        .env("PROMETHEUS_MULTIPROC_DIR", metrics_dir.to_str().unwrap())
        .wait_workers(2)
        .start();
    s.wait_log("Ready: 2 workers accepting", LONG);
    // Requests until both workers have answered some (bounded).
    let mut answered_by = std::collections::BTreeSet::new();
    let mut sent = 0;
    while answered_by.len() < 2 && sent < 400 {
        let r = s.get("/work");
        assert_eq!(r.status, 200);
        answered_by.insert(r.text());
        sent += 1;
    }
    assert_eq!(answered_by.len(), 2, "one worker answered all {sent}");
    let page = s.get("/metrics").text();
    assert_eq!(
        sample(&page, "app_requests_total{path=\"/work\"}"),
        sent as f64,
        "{page}"
    );
    assert_eq!(sample(&page, "app_workers_live"), 2.0, "{page}");

    // TTOU: a worker leaves; child_exit marks it dead, its live gauge file goes.
    let files = |pid: &str| -> Vec<String> {
        std::fs::read_dir(&metrics_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(&format!("_{pid}.db")))
            .collect()
    };
    let pids: Vec<String> = answered_by.into_iter().collect();
    assert!(
        pids.iter()
            .all(|p| files(p).iter().any(|f| f.starts_with("gauge_livesum")))
    );
    s.signal(libc::SIGTTOU);
    s.wait_log("Worker exiting", LONG);
    let deadline = std::time::Instant::now() + LONG;
    let gone = loop {
        if let Some(p) = pids
            .iter()
            .find(|p| !files(p).iter().any(|f| f.starts_with("gauge_livesum")))
        {
            break p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gauge file was removed"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let page = s.get("/metrics").text();
    assert_eq!(sample(&page, "app_workers_live"), 1.0, "{page}");
    // Its counts stay in the total, as prometheus_client keeps counter files.
    assert_eq!(
        sample(&page, "app_requests_total{path=\"/work\"}"),
        sent as f64,
        "{page}"
    );
    assert!(
        files(&gone).iter().any(|f| f.starts_with("counter_")),
        "{gone}"
    );
}

/// The inode of the socket listening on `port` (/proc/net/tcp, LISTEN).
fn listening_inode(port: u16) -> String {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A")
        .map(|f| f[9].to_string())
        .unwrap_or_else(|| panic!("nothing listens on {port}"))
}

fn hook_host_of(s: &Server) -> i32 {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        if let Some(p) = s.workers().into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("hook host"))
        }) {
            return p;
        }
        assert!(std::time::Instant::now() < deadline, "no hook host");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_hook_host_started_again_holds_no_listening_socket_and_an_upgrade_survives_a_failing_hook() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    let flag = dir.path().join("fail");
    std::fs::write(
        &conf,
        format!(
            "import os\n\ndef on_starting(server):\n    if os.path.exists({flag:?}):\n        \
             raise RuntimeError('on_starting failed after the upgrade')\n",
            flag = flag.display().to_string()
        ),
    )
    .unwrap();
    let mut s = server("conformance:app")
        .args(["-c", &conf.display().to_string()])
        .start();
    s.wait_log("Ready: 1 workers accepting", LONG);
    let inode = format!("socket:[{}]", listening_inode(s.addr().port()));

    // The hook host dies; the master starts another, which must not keep
    // a copy of the listening socket (a stop would leave it queueing).
    let first = hook_host_of(&s);
    unsafe { libc::kill(first, libc::SIGKILL) };
    s.wait_log("The hook host", LONG);
    let deadline = std::time::Instant::now() + LONG;
    let second = loop {
        let host = hook_host_of(&s);
        if host != first {
            break host;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(25));
    };
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{second}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !fds.contains(&inode),
        "the hook host holds {inode}: {fds:?}"
    );

    // An upgrade whose on_starting raises: logged, and the server goes on
    // (the workers were serving all along).
    std::fs::write(&flag, "").unwrap();
    s.signal(libc::SIGUSR2);
    s.wait_log("Upgraded in place", LONG);
    s.wait_log("RuntimeError: on_starting failed after the upgrade", LONG);
    s.wait_log("Reload complete", LONG);
    assert_eq!(s.get("/").status, 404);

    // One whose hooks do not load (the file reads, the hook's module does
    // not import) is refused by the check, before the exec.
    std::fs::write(&conf, "on_starting = 'no_such_module:on_starting'\n").unwrap();
    s.signal(libc::SIGUSR2);
    let refused = s.wait_log("Upgrade refused", LONG);
    assert!(refused.contains("--check-config failed"), "{refused}");
    s.wait_log("No module named 'no_such_module'", LONG);
    assert_eq!(s.get("/").status, 404);
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(LONG).success());
}
