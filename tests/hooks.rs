//! gunicorn's server hooks that run in a worker (post_fork,
//! post_worker_init, pre_request, post_request, worker_int, worker_exit),
//! from a gunicorn `*.py` config or as TOML `module:function` references,
//! with gunicorn's arguments. A gunicorn 27 run on the same config and
//! steps writes the same per-worker sequence.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
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

#[test]
fn toml_hooks_run_in_each_worker_with_gunicorns_arguments() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("myhooks.py"), HOOKS).unwrap();
    std::fs::copy(
        apps_dir().join("conformance.py"),
        dir.path().join("conformance.py"),
    )
    .unwrap();
    let log = dir.path().join("hooks.log");
    let toml = dir.path().join("app.toml");
    let mut text = String::from("app = \"conformance:app\"\nworkers = 2\n");
    for hook in [
        "post_fork",
        "post_worker_init",
        "pre_request",
        "post_request",
        "worker_int",
        "worker_exit",
    ] {
        text.push_str(&format!("{hook} = \"myhooks:{hook}\"\n"));
    }
    std::fs::write(&toml, text).unwrap();
    let mut s = command()
        .args(["-b", "127.0.0.1:0", "-c", &toml.display().to_string()])
        .args(["--chdir", &dir.path().display().to_string()])
        .env("HOOK_LOG", &log.display().to_string())
        .wait_workers(2)
        .start();
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
