//! The master process: workers, signals, timeouts, recycling, boot failures, hygiene.

mod common;

use common::*;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(20);

#[test]
fn starts_the_configured_number_of_workers_with_titles() {
    let s = server("conformance:app")
        .args(["-w", "3", "-n", "titletest"])
        .wait_workers(3)
        .start();
    let workers = s.wait_worker_count(3, LONG);
    assert_eq!(cmdline(s.pid), "ferricorn: master [titletest]");
    for w in &workers {
        assert_eq!(cmdline(*w), "ferricorn: worker [titletest]");
    }
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", s.pid)).unwrap();
    assert!(comm.starts_with("ferricorn: mast"), "{comm}");
}

/// When the kernel started a process, in clock ticks since boot.
fn start_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name, field 3 (state) is [0]: starttime (22) is [19].
    let after_name = stat.rsplit(')').next().unwrap();
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn workers_are_forked_as_soon_as_the_master_is_listening() {
    let s = server("conformance:app")
        .args(["-w", "2"])
        .wait_workers(2)
        .start();
    // SAFETY: sysconf has no memory effects.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let master = start_ticks(s.pid);
    for w in s.wait_worker_count(2, LONG) {
        // The kernel's own clock: how busy the machine is does not slow a
        // fork down by anything near the half-second poll it used to wait.
        let after = (start_ticks(w) - master) as f64 / ticks_per_second as f64;
        assert!(
            after < 0.4,
            "worker {w} forked {after:.2} s after the master started"
        );
    }
}

#[test]
fn title_defaults_to_the_app() {
    let s = server("conformance:app").start();
    assert_eq!(cmdline(s.pid), "ferricorn: master [conformance:app]");
}

#[test]
fn a_killed_worker_is_replaced() {
    let s = server("conformance:app")
        .args(["-w", "2"])
        .wait_workers(2)
        .start();
    let before = s.wait_worker_count(2, LONG);
    // SAFETY: killing a worker of the server this test started.
    unsafe { libc::kill(before[0], libc::SIGKILL) };
    s.wait_log(
        &format!("Worker (pid:{}) was sent SIGKILL!", before[0]),
        LONG,
    );
    s.wait_count("loaded", 3, LONG);
    let after = s.wait_worker_count(2, LONG);
    assert!(!after.contains(&before[0]));
    assert!(after.contains(&before[1]));
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn ttin_and_ttou_change_the_worker_count_never_below_one() {
    let s = server("conformance:app")
        .args(["-w", "2"])
        .wait_workers(2)
        .start();
    s.wait_worker_count(2, LONG);
    s.signal(libc::SIGTTIN);
    s.wait_worker_count(3, LONG);
    s.signal(libc::SIGTTOU);
    s.wait_worker_count(2, LONG);
    s.signal(libc::SIGTTOU);
    s.wait_worker_count(1, LONG);
    s.signal(libc::SIGTTOU);
    s.wait_count("Number of workers: 1", 2, LONG);
    // Signals are handled in order: had that TTOU gone below one worker,
    // this TTIN would bring back one, not two.
    s.signal(libc::SIGTTIN);
    s.wait_worker_count(2, LONG);
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn term_lets_an_in_flight_request_finish_then_exits_0() {
    let mut s = server("conformance:app")
        .args(["-k", "gthread", "--threads", "2"])
        .start();
    let addr = s.addr();
    let req = std::thread::spawn(move || {
        request(
            addr,
            "GET /sleep-logged?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    s.wait_log("sleeping 2", LONG);
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    let r = req.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    let status = s.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "log:\n{}", s.log_text());
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "TERM must wait for the request"
    );
    // After TERM, nothing listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn int_stops_fast_without_waiting_for_requests() {
    let mut s = server("conformance:app").start();
    let addr = s.addr();
    let req = std::thread::spawn(move || {
        let mut c = Conn::open(addr);
        c.send("GET /sleep-logged?10 HTTP/1.1\r\nHost: x\r\n\r\n");
        c.read_response(false)
    });
    s.wait_log("sleeping 10", LONG);
    let t0 = Instant::now();
    s.signal(libc::SIGINT);
    let status = s.wait_exit(LONG);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "INT took {:?}",
        t0.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        req.join().unwrap().is_none(),
        "the in-flight request is cut"
    );
}

/// A server whose config file (`workers = 1`) the test may rewrite before HUP.
fn one_worker_from_a_config_file() -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("app.toml");
    std::fs::write(&conf, "workers = 1\n").unwrap();
    let s = server("conformance:app")
        .args(["-c", conf.to_str().unwrap()])
        .start();
    (dir, conf, s)
}

#[test]
fn hup_reloads_the_config_file_and_replaces_workers() {
    let (_dir, conf, s) = one_worker_from_a_config_file();
    let old = s.wait_worker_count(1, LONG);
    std::fs::write(&conf, "workers = 3\n").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("Reload complete", LONG);
    let new = s.wait_worker_count(3, LONG);
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "all workers are new: {old:?} -> {new:?}"
    );
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn hup_with_a_broken_config_keeps_running() {
    let (_dir, conf, s) = one_worker_from_a_config_file();
    let old = s.wait_worker_count(1, LONG);
    std::fs::write(&conf, "workers = \"many\"\n").unwrap();
    s.signal(libc::SIGHUP);
    let line = s.wait_log("Reload refused", LONG);
    assert!(line.contains("workers"), "{line}");
    // A refused reload changes nothing: no worker was started or stopped.
    assert_eq!(s.get("/pid").status, 200);
    assert_eq!(s.workers(), old);
    assert_eq!(s.count("Booting worker"), 1, "{}", s.log_text());
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn sync_worker_stuck_past_timeout_is_killed_and_replaced() {
    let s = server("conformance:app").args(["--timeout", "2"]).start();
    let before = s.wait_worker_count(1, LONG);
    let t0 = Instant::now();
    let mut c = Conn::open(s.addr());
    c.send("GET /spin?30 HTTP/1.1\r\nHost: x\r\n\r\n");
    s.wait_log(&format!("WORKER TIMEOUT (pid:{})", before[0]), LONG);
    assert!(s.log_text().contains("[CRITICAL] WORKER TIMEOUT"));
    assert!(
        c.read_response(false).is_none(),
        "the client's connection is closed"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    s.wait_count("loaded", 2, LONG);
    let r = s.get("/pid");
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), before[0].to_string(), "served by a fresh worker");
}

#[test]
fn gthread_long_request_is_not_a_timeout() {
    let s = server("conformance:app")
        .args(["-k", "gthread", "--timeout", "1"])
        .start();
    let r = s.get("/sleep?2.5");
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    assert!(!s.log_text().contains("WORKER TIMEOUT"));
}

#[test]
fn max_requests_recycles_workers() {
    let s = server("conformance:app")
        .args(["--max-requests", "3", "--max-requests-jitter", "0"])
        .start();
    let first = s.get("/pid").text();
    assert_eq!(s.get("/pid").text(), first);
    assert_eq!(s.get("/pid").text(), first);
    s.wait_log("Autorestarting worker after current request.", LONG);
    s.wait_count("loaded", 2, LONG);
    let next = s.get("/pid").text();
    assert_ne!(next, first);
    assert!(
        !s.log_text().contains("exited with code"),
        "a recycled worker exits cleanly"
    );
}

#[test]
fn import_failure_exits_4_naming_the_module() {
    let mut s = server("broken_import:app").spawn();
    let status = s.wait_exit(LONG);
    assert_eq!(status.code(), Some(4), "log:\n{}", s.log_text());
    let log = s.log_text();
    assert!(log.contains("this_module_does_not_exist_anywhere"), "{log}");
    assert!(log.contains("Traceback"), "{log}");
    assert!(log.contains("Reason: App failed to load."), "{log}");
    assert_eq!(
        log.matches("Booting worker").count(),
        1,
        "no respawn loop:\n{log}"
    );
}

#[test]
fn missing_attribute_exits_4() {
    let mut s = server("conformance:nope").spawn();
    assert_eq!(s.wait_exit(LONG).code(), Some(4));
    assert!(
        s.log_text()
            .contains("Failed to find attribute 'nope' in 'conformance'.")
    );
}

#[test]
fn pid_file_is_written_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("ferricorn.pid");
    let mut s = server("conformance:app")
        .args(["-p", pidfile.to_str().unwrap()])
        .start();
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", s.pid)
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
    assert!(!pidfile.exists());
}

#[test]
fn workers_run_as_the_configured_user() {
    let dir = readable_copy("conformance.py");
    let s = command()
        .args([
            "-b",
            "127.0.0.1:0",
            "--chdir",
            dir.path().to_str().unwrap(),
            "conformance:app",
        ])
        .args(["-u", "nobody", "-g", "nogroup", "-m", "0o027"])
        .start();
    let w = s.wait_worker_count(1, LONG)[0];
    let status = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid}"
    );
    let umask = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    assert!(umask.ends_with("0027"), "{umask}");
    // The master keeps its privileges (it must be able to manage sockets and workers).
    let mstatus = std::fs::read_to_string(format!("/proc/{}/status", s.pid)).unwrap();
    assert!(
        mstatus
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("\t0\t"))
    );
    assert_eq!(s.get("/pid").text(), w.to_string());
}

#[test]
fn workers_exit_when_the_master_disappears() {
    let s = server("conformance:app")
        .args(["-w", "2"])
        .wait_workers(2)
        .start();
    let workers = s.wait_worker_count(2, LONG);
    s.signal(libc::SIGKILL);
    // Each worker notices its master is gone and exits.
    wait_gone(&workers, LONG);
}

#[test]
fn usr1_reopens_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let s = server("conformance:app")
        .args(["--error-logfile", log.to_str().unwrap()])
        .start_with_log(&log);
    let rotated = dir.path().join("error.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    // Master and worker both write to the new file once they have reopened it.
    let deadline = Instant::now() + LONG;
    loop {
        let _ = s.get("/log?after-usr1");
        s.signal(libc::SIGTTIN);
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("app log line after-usr1") && text.contains("Handling signal: ttin") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new log file after USR1: {text}"
        );
    }
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("Listening at")
    );
}

/// The preloader's pid, from the master's log.
fn preloader_pid(s: &Server) -> i32 {
    preloader_pid_after(s, "in the preloader (pid:")
}

/// The master's workers, without the preloader.
fn preloaded_workers(s: &Server, preloader: i32, n: usize) -> Vec<i32> {
    let mut w = s.wait_worker_count(n + 1, LONG);
    w.retain(|&p| p != preloader);
    w
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn preload_imports_the_app_once_outside_the_master() {
    let s = server("threaded_import:app")
        .args(["--preload", "-w", "2"])
        .start();
    let preloader = preloader_pid(&s);
    let old = preloaded_workers(&s, preloader, 2);
    // Imported once, in the preloader; the workers are the master's
    // children (it reaps and times them out), forked from the preloader.
    assert_eq!(s.get("/import-pid").text(), preloader.to_string());
    assert!(old.contains(&s.get("/pid").text().parse().unwrap()));
    // The app started a thread at import: the master has none but its own.
    assert!(
        threads_of(preloader) >= 2,
        "the app's thread runs in the preloader"
    );
    assert_eq!(threads_of(s.pid), 1, "the master stays single-threaded");
    // HUP keeps the preloaded app (gunicorn's behaviour) and replaces the workers.
    s.signal(libc::SIGHUP);
    s.wait_log("Reload complete", LONG);
    let new = preloaded_workers(&s, preloader, 2);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
    assert_eq!(s.get("/import-pid").text(), preloader.to_string());
    drop(s);
    let s = server("threaded_import:app").start();
    assert_eq!(
        s.get("/import-pid").text(),
        s.get("/pid").text(),
        "without --preload the worker imports"
    );
}

/// A `.py` config is read on HUP by a Python child of the master; with
/// `--preload` the master has never run Python, so that child starts a
/// fresh interpreter, and the new settings reach workers forked from the
/// preloader.
#[test]
fn hup_with_preload_and_a_py_config_applies_the_new_settings() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    let access = dir.path().join("access.log");
    let write_conf = |generation: &str| {
        std::fs::write(
            &conf,
            format!(
                "preload_app = True\nworkers = 2\naccesslog = {access:?}\naccess_log_format = '{generation} %(s)s %(U)s'\n"
            ),
        )
        .unwrap();
    };
    write_conf("first");
    let s = server("threaded_import:app")
        .args(["-c", conf.to_str().unwrap()])
        .start();
    let preloader = preloader_pid(&s);
    let old = preloaded_workers(&s, preloader, 2);
    assert_eq!(s.get("/import-pid").text(), preloader.to_string());
    write_conf("second");
    s.signal(libc::SIGHUP);
    s.wait_log("Reload complete", LONG);
    let new = preloaded_workers(&s, preloader, 2);
    assert!(new.iter().all(|p| !old.contains(p)), "{old:?} {new:?}");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        s.get("/after-reload");
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        if log.contains("second 200 /after-reload") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "access log:\n{log}");
    }
    assert_eq!(
        s.get("/import-pid").text(),
        preloader.to_string(),
        "the app is kept"
    );
    assert_eq!(threads_of(s.pid), 1);
    assert!(!s.log_text().contains("Reload refused"), "{}", s.log_text());
}

#[test]
fn preload_import_failure_exits_4_before_binding() {
    let mut s = server("broken_import:app").args(["--preload"]).spawn();
    assert_eq!(s.wait_exit(LONG).code(), Some(4));
    let log = s.log_text();
    assert!(log.contains("this_module_does_not_exist_anywhere"), "{log}");
    assert!(!log.contains("Listening at"), "{log}");
}

#[test]
fn a_worker_that_cannot_boot_stops_the_master_with_exit_3() {
    let mut s = server("conformance:app")
        .args(["--access-logfile", "/nonexistent/dir/access.log"])
        .spawn();
    assert_eq!(s.wait_exit(LONG).code(), Some(3), "log:\n{}", s.log_text());
    let log = s.log_text();
    assert!(
        log.contains("cannot open access log /nonexistent/dir/access.log"),
        "{log}"
    );
    assert!(log.contains("Reason: Worker failed to boot."), "{log}");
    assert_eq!(
        log.matches("Booting worker").count(),
        1,
        "no respawn loop:\n{log}"
    );
}

#[test]
fn term_closes_idle_keep_alive_connections_promptly() {
    let mut s = server("conformance:app")
        .args([
            "-k",
            "gthread",
            "--keep-alive",
            "60",
            "--graceful-timeout",
            "30",
        ])
        .start();
    let mut idle = Conn::open(s.addr());
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response(false).unwrap().status, 200);
    // The connection now sits idle; it must not hold the drain open for 30 s.
    let t0 = Instant::now();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(LONG).code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        t0.elapsed()
    );
    assert!(idle.closed_within(Duration::from_secs(1)));
}

#[test]
fn initgroups_sets_the_users_supplementary_groups() {
    let groups = |extra: &[&str]| {
        let s = server("conformance:app")
            .args(["-u", "0"])
            .args(extra.iter().copied())
            .start();
        let w = s.wait_worker_count(1, LONG)[0];
        let status = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .unwrap()
            .trim_start_matches("Groups:")
            .trim()
            .to_string()
    };
    // Without --initgroups, switching user clears the supplementary groups;
    // with it, the user's groups from /etc/group are set (root: 0).
    assert_eq!(groups(&[]), "");
    assert!(
        groups(&["--initgroups"])
            .split_whitespace()
            .any(|g| g == "0")
    );
}

#[test]
fn a_preloader_that_dies_is_replaced_and_workers_still_get_replaced() {
    let s = server("threaded_import:app")
        .args(["--preload", "-w", "1"])
        .start();
    let preloader = preloader_pid(&s);
    let worker = preloaded_workers(&s, preloader, 1)[0];
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(preloader, libc::SIGKILL) };
    s.wait_log("Preloaded threaded_import:app again", LONG);
    let second = preloader_pid_after(&s, "again (pid:");
    assert_ne!(second, preloader);
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    s.wait_count("Booting worker", 2, LONG);
    let replaced = preloaded_workers(&s, second, 1)[0];
    assert_ne!(replaced, worker);
    assert_eq!(s.get("/import-pid").text(), second.to_string());
}

fn preloader_pid_after(s: &Server, marker: &str) -> i32 {
    let line = s.wait_log(marker, LONG);
    line.split(marker)
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

/// logrotate's USR1 while a worker still imports the app: the worker
/// notes it and reopens once it serves (it used to die of the signal's
/// default action, which stopped the server at start).
#[test]
fn usr1_while_a_worker_imports_is_kept_for_when_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let rotated = dir.path().join("error.log.1");
    let s = server("slow_import:app")
        .args(["--error-logfile", log.to_str().unwrap()])
        .env("SLOW_IMPORT_SECONDS", "2")
        .spawn();
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Booting worker")
    {
        assert!(Instant::now() < deadline, "no worker booted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    let deadline = Instant::now() + LONG;
    loop {
        let new = std::fs::read_to_string(&log).unwrap_or_default();
        if new.contains("Ready: 1 workers accepting") {
            break;
        }
        let old = std::fs::read_to_string(&rotated).unwrap_or_default();
        assert!(!old.contains("was sent SIGUSR1"), "{old}");
        assert!(Instant::now() < deadline, "never ready:\n{old}\n{new}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    let addr: std::net::SocketAddr = old
        .split("Listening at: http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{old}"));
    let r = request(
        addr,
        "GET /after-usr1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.text(), "finally");
    // The worker reopened once it served: its lines go to the new file.
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("served /after-usr1")
    {
        let old = std::fs::read_to_string(&rotated).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the worker still writes to the rotated file:\n{old}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The master reopened; the first worker is still there beside a new one.
    s.signal(libc::SIGTTIN);
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Handling signal: ttin")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("was sent SIGUSR1"), "{old}");
    assert_eq!(s.workers().len(), 2, "the first worker lives");
}
