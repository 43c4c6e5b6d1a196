//! A worker survives what an app or a client does to it.

mod common;

use common::*;
use std::time::Duration;

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn an_app_writing_to_a_closed_pipe_gets_broken_pipe_error_and_the_worker_lives() {
    let venv = test_venv().display().to_string();
    for class in ["sync", "gthread", "gevent"] {
        let s = server("conformance:app")
            .args(["-k", class, "--virtualenv", &venv])
            .start();
        let before = s.workers();
        let r = request(
            s.addr(),
            "GET /broken-pipe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{class}");
        if class != "gevent" {
            // (gevent's patched os.write reports no error here, under gunicorn too.)
            assert_eq!(r.text(), "BrokenPipeError", "{class}");
        }
        assert_eq!(s.workers(), before, "{class}: the worker was not replaced");
    }
}

#[test]
fn a_replacement_that_cannot_boot_is_retried_while_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("down");
    let s = server("flaky_import:app")
        .args(["-w", "2", "-k", "gthread"])
        .env("FLAKY_FLAG", flag.to_str().unwrap())
        .wait_workers(2)
        .start();
    let workers = s.workers();
    std::fs::write(&flag, "").unwrap();
    // A worker dies; its replacement cannot import the app.
    // SAFETY: signalling a worker of the server this test started.
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    s.wait_count("keep serving; trying again in", 2, Duration::from_secs(20));
    // The server still serves, on the worker that remains.
    for _ in 0..20 {
        let r = request(
            s.addr(),
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), workers[1].to_string());
    }
    assert!(
        s.log_text().contains("the database is down"),
        "the traceback is logged"
    );
    // Fixed: the next attempt boots, and the server is whole again.
    std::fs::remove_file(&flag).unwrap();
    s.wait_log("A worker booted again after", Duration::from_secs(20));
    s.wait_worker_count(2, Duration::from_secs(10));
    assert!(!s.log_text().contains("Shutting down: Master"));
}

#[test]
fn a_first_boot_that_fails_still_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("down");
    std::fs::write(&flag, "").unwrap();
    let mut s = server("flaky_import:app")
        .args(["-w", "2"])
        .env("FLAKY_FLAG", flag.to_str().unwrap())
        .spawn();
    let status = s.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(4), "{}", s.log_text());
}

#[test]
fn running_out_of_descriptors_is_logged_once_per_episode_with_a_count() {
    let cmd = format!(
        "ulimit -n 64 && exec '{}' -b 127.0.0.1:0 -k gthread --chdir '{}' conformance:app",
        bin(),
        apps_dir().display()
    );
    let s = command().bin("/bin/sh").args(["-c", cmd.as_str()]).start();
    // Idle connections, a few more than the worker has descriptors left for
    // (more would be accepted in a second episode once these close).
    let worker = s.workers()[0];
    let open = std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .count();
    let held: Vec<_> = (0..(64 - open + 5)).map(|_| connect(s.addr())).collect();
    s.wait_log("accept failed", Duration::from_secs(10));
    // The window under test, not a synchronisation: the worker retries
    // every 100 ms meanwhile, and must not log each retry.
    std::thread::sleep(Duration::from_millis(600));
    drop(held);
    let line = s.wait_log("Accepting again after", Duration::from_secs(10));
    assert_eq!(s.count("accept failed"), 1, "{}", s.log_text());
    let failed: u64 = line
        .split("after ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(failed >= 3, "{line}");
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn at_the_connection_limit_idle_keep_alive_connections_make_room() {
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "-k",
            "gthread",
            "--keep-alive",
            "120",
            "--worker-connections",
            "100",
        ])
        .start();
    // As many clients as the limit, each made a request and keeps its connection open.
    let idle: Vec<_> = (0..100)
        .map(|_| {
            let mut c = Conn::open(s.addr());
            c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(c.read_response(false).map(|r| r.status), Some(200));
            c
        })
        .collect();
    // A new client is served, every time (gunicorn: 10 of 10), without
    // waiting for --keep-alive to close an idle connection.
    for i in 0..10 {
        let mut c = Conn::try_open(s.addr(), Duration::from_secs(5)).unwrap();
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = c.read_response(false);
        assert_eq!(r.map(|r| r.status), Some(200), "new client {i}");
    }
    drop(idle);
}

#[test]
fn at_the_connection_limit_with_none_idle_a_new_client_gets_503_at_once() {
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "10",
            "--worker-connections",
            "10",
        ])
        .start();
    let busy: Vec<_> = (0..10)
        .map(|_| {
            let mut c = Conn::open(s.addr());
            c.send("GET /sleep-logged?5 HTTP/1.1\r\nHost: x\r\n\r\n");
            c
        })
        .collect();
    // Every slot holds a request in progress.
    s.wait_count("sleeping 5", 10, Duration::from_secs(10));
    let t0 = std::time::Instant::now();
    let mut c = Conn::try_open(s.addr(), Duration::from_secs(10)).unwrap();
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).expect("an answer, not silence");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    s.wait_log("Connection limit reached", Duration::from_secs(5));
    drop(busy);
}

/// Clients that trickle a large body a few bytes at a time, each holding a
/// request (and, under gthread, an app thread) open.
fn tricklers(addr: std::net::SocketAddr, n: usize) -> Vec<std::thread::JoinHandle<Option<u16>>> {
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::try_open(addr, Duration::from_secs(20))?;
                c.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                c.stream.set_nonblocking(true).unwrap();
                loop {
                    // 5 bytes a second, until the server answers or gives up.
                    let mut probe = [0u8; 1];
                    match std::io::Read::read(&mut c.stream, &mut probe) {
                        Ok(_) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                    if std::time::Instant::now() > deadline {
                        return None;
                    }
                    let _ = std::io::Write::write_all(&mut c.stream, b"x");
                    std::thread::sleep(Duration::from_millis(200));
                }
                c.stream.set_nonblocking(false).unwrap();
                // The answer, once the server gave up on the body.
                c.read_response(false).map(|r| r.status)
            })
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn a_body_trickled_below_the_floor_gets_408_and_frees_the_thread() {
    let venv = test_venv().display().to_string();
    for class in ["gthread", "gevent"] {
        let s = server("conformance:app")
            .args([
                "-k",
                class,
                "--threads",
                "2",
                "--virtualenv",
                &venv,
                "--min-request-body-rate",
                "1000",
            ])
            .start();
        let attackers = tricklers(s.addr(), 4);
        let statuses: Vec<_> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            statuses.iter().all(|s| *s == Some(408)),
            "{class}: {statuses:?}"
        );
        s.wait_log("slower than 1000 bytes/s", Duration::from_secs(5));
        // The threads they held serve again.
        assert_eq!(s.get("/pid").status, 200, "{class}");
    }
}

#[test]
fn a_client_that_does_not_read_its_response_is_cut_off_and_frees_the_thread() {
    let s = server("conformance:app")
        .args([
            "-k",
            "gthread",
            "--threads",
            "1",
            "--min-response-rate",
            "100000",
        ])
        .start();
    // A client that asks for 50 MB and reads none of it.
    let mut c = connect(s.addr());
    std::io::Write::write_all(&mut c, b"GET /big?50000000 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.wait_log(
        "read its response slower than 100000 bytes/s",
        Duration::from_secs(20),
    );
    // The one app thread it held answers others again.
    assert_eq!(s.get("/pid").status, 200);
    drop(c);
}
