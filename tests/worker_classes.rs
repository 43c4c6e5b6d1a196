//! The experiment users quote when they choose a worker class: one worker,
//! two clients at once on a handler that sleeps 2 s.

mod common;

use common::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timing tests run one at a time so they do not compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// A CPU-bound request past `--timeout`: WORKER TIMEOUT for that worker,
/// its connection closed without an answer, and a fresh worker serving.
fn spin_past_the_timeout(s: &Server) {
    let old = s.get("/pid").text();
    let mut c = Conn::open(s.addr());
    c.send("GET /spin?60 HTTP/1.1\r\nHost: x\r\n\r\n");
    let line = s.wait_log("WORKER TIMEOUT", Duration::from_secs(15));
    assert!(line.contains(&format!("(pid:{old})")), "{line}");
    assert!(
        c.read_response(false).is_none(),
        "connection closed without a response"
    );
    let fresh = s.get("/pid").text();
    assert_ne!(fresh, old);
}

fn two_clients_at_once(s: &Server) -> Duration {
    let t0 = Instant::now();
    let clients = concurrent_gets(s.addr(), "/sleep?2", 2);
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    }
    t0.elapsed()
}

#[test]
fn sync_serves_one_request_at_a_time() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "sync"])
        .start();
    let took = two_clients_at_once(&s);
    assert!(
        took >= Duration::from_millis(3900),
        "sync served both in {took:?}"
    );
    assert!(took < Duration::from_secs(7), "sync took {took:?}");
}

#[test]
fn gthread_with_two_threads_serves_both_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "2"])
        .start();
    let took = two_clients_at_once(&s);
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_millis(3500), "gthread took {took:?}");
}

/// Only one thread runs Python at a time: idle app threads must not take
/// turns with a busy one (each turn a forced GIL switch in the middle of a
/// request), or every request takes as long as all of them together.
#[test]
fn gthread_runs_cpu_bound_requests_to_the_end_one_after_another() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "4"])
        .start();
    // Up to three rounds: while other processes hold both cores, the GIL can
    // reach the standby in the middle of a request; the standby then judges
    // by a snapshot of the drainer's scheduler state ("Turns under
    // contention" in docs/benchmarks.md). Taking turns by design
    // interleaves every round.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let overlaps = overlaps_of_concurrent_work(&s);
        if overlaps.iter().all(|&ms| ms < 1.0) {
            return;
        }
        rounds.push(overlaps);
    }
    panic!("ms each request ran on into the next, per round: {rounds:?}");
}

/// Eight CPU-bound requests at once; for each request in the order they
/// started, how long it ran on after the next one started (by the worker's
/// clock). One after another, each starts when the one before ends (a
/// negative overlap, or the moment between two clock readings); taking
/// turns, they all run at once. (Their wall time against their CPU time
/// showed the same, until something else on the machine took a core: that
/// stretches wall time without any turns.)
fn overlaps_of_concurrent_work(s: &Server) -> Vec<f64> {
    let clients = concurrent_gets(s.addr(), "/work?0.05", 8);
    let mut runs: Vec<(f64, f64)> = clients
        .into_iter()
        .map(|c| {
            let r = c.join().unwrap();
            assert_eq!(r.status, 200);
            let f: Vec<f64> = r.text().split(' ').map(|x| x.parse().unwrap()).collect();
            (f[2], f[3])
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs.windows(2).map(|w| w[0].1 - w[1].0).collect()
}

/// The other side of the same coin: once the busy request blocks (here in
/// a 3 s sleep), the requests queued behind it go to the idle threads at once.
#[test]
fn gthread_serves_queued_requests_while_a_busy_one_blocks() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "4"])
        .start();
    let slow = concurrent_gets(s.addr(), "/work-then-sleep?0.03,3", 1);
    s.wait_log("busy then blocked 0.03,3", Duration::from_secs(10));
    let t0 = Instant::now();
    for c in concurrent_gets(s.addr(), "/work?0.01", 3) {
        assert_eq!(c.join().unwrap().status, 200);
    }
    let quick = t0.elapsed();
    assert!(
        quick < Duration::from_secs(1),
        "queued requests took {quick:?}"
    );
    assert_eq!(slow.into_iter().next().unwrap().join().unwrap().status, 200);
}

/// While an app thread works through queued requests, it hands finished
/// responses back a few at a time: the I/O thread (the worker's main
/// thread) wakes once for several instead of once per response and once
/// more per next request (about 1.5 sleeps per request before).
#[test]
fn gthread_hands_back_responses_in_batches_while_requests_queue() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "2"])
        .start();
    assert_responses_batched(&s, "/work?0.0003");
}

/// The other side: a held response leaves within the I/O thread's tick,
/// never after the long request the app thread went on with.
#[test]
fn a_held_response_does_not_wait_for_the_next_long_request() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "1"])
        .start();
    // The app thread is busy; a quick request and then a long one queue up
    // behind it. Their order in the queue is the order they were sent.
    let first = concurrent_gets(s.addr(), "/work?0.2", 1);
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let quick = concurrent_gets(s.addr(), "/work?0.001", 1);
    std::thread::sleep(Duration::from_millis(30));
    let long = concurrent_gets(s.addr(), "/work?1.5", 1);
    assert_eq!(
        quick.into_iter().next().unwrap().join().unwrap().status,
        200
    );
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_millis(900),
        "the quick response came after {waited:?}, with the long request"
    );
    for c in first.into_iter().chain(long) {
        assert_eq!(c.join().unwrap().status, 200);
    }
}

#[test]
fn sync_with_threads_becomes_gthread() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "1", "--threads", "2"])
        .start();
    assert!(s.log_text().contains("Using worker: gthread"));
    let took = two_clients_at_once(&s);
    assert!(took < Duration::from_millis(3500), "took {took:?}");
}

#[test]
fn cpu_bound_sync_request_past_timeout_is_worker_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-k", "sync", "--timeout", "3"])
        .start();
    spin_past_the_timeout(&s);
}

#[test]
fn a_busy_sync_worker_leaves_new_connections_to_idle_ones() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "2", "-k", "sync"])
        .wait_workers(2)
        .start();
    let addr = s.addr();
    let slow = std::thread::spawn(move || {
        request(
            addr,
            "GET /sleep-logged?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    s.wait_log("sleeping 3", Duration::from_secs(10));
    let t0 = Instant::now();
    for _ in 0..5 {
        assert_eq!(s.get("/pid").status, 200);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "quick requests waited behind the slow one: {:?}",
        t0.elapsed()
    );
    assert_eq!(slow.join().unwrap().status, 200);
}

/// Connections opened in a burst (a proxy filling its keep-alive pool, wrk
/// starting) must not all land on the worker that happened to be awake.
fn a_burst_of_keep_alive_connections_is_shared_by_the_workers(class: &str, extra: &[String]) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = server("conformance:app")
        .args(["-w", "2", "-k", class, "--keep-alive", "30"])
        .args(["--log-level", "debug"])
        .args(extra.iter().cloned())
        .wait_workers(2)
        .start();
    // "loaded" comes before a gevent worker's hub is up; a worker reports
    // itself booted only once it accepts (and counts on the board).
    s.wait_count(") booted", 2, Duration::from_secs(30));
    const N: usize = 40;
    let mut conns: Vec<Conn> = (0..N).map(|_| Conn::open(s.addr())).collect();
    let mut per_worker = std::collections::HashMap::<String, usize>::new();
    for c in &mut conns {
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    for c in &mut conns {
        let r = c
            .read_response(false)
            .expect("an answer on every connection");
        *per_worker.entry(r.text()).or_default() += 1;
    }
    let fewest = per_worker.values().copied().min().unwrap_or(0);
    assert!(
        per_worker.len() == 2 && fewest >= N / 4,
        "connections per worker: {per_worker:?}"
    );
}

#[test]
fn gthread_workers_share_a_burst_of_connections() {
    let threads = ["--threads".to_string(), "2".to_string()];
    a_burst_of_keep_alive_connections_is_shared_by_the_workers("gthread", &threads);
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_workers_share_a_burst_of_connections() {
    let venv = [
        "--virtualenv".to_string(),
        test_venv().display().to_string(),
    ];
    a_burst_of_keep_alive_connections_is_shared_by_the_workers("gevent", &venv);
}

/// One gevent worker on the conformance app, from the test virtualenv (which has gevent).
fn gevent(extra: &[&str]) -> Server {
    server("conformance:app")
        .args(["-w", "1", "-k", "gevent", "--virtualenv"])
        .arg(test_venv().display().to_string())
        .args(extra.iter().copied())
        .start()
}

/// The hub hands complete responses back once per pass, not one by one:
/// the I/O thread wakes once for several (each wake-up also took the hub's
/// core away on a busy machine).
#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_hands_back_responses_in_batches() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&[]);
    assert_responses_batched(&s, "/work?0.0003");
    // The tick that backs the hub's flush stops with the last request.
    let sleeps = io_thread_sleeps_after_one_request(&s, "/pid", Duration::from_millis(300));
    assert!(
        sleeps < 30,
        "the idle I/O thread went to sleep {sleeps} times in 300 ms"
    );
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_serves_both_sleepers_at_once() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&[]);
    let took = two_clients_at_once(&s);
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_millis(3500), "gevent took {took:?}");
    let env = s.get("/environ/x").json();
    assert_eq!(env["wsgi.multithread"], true);
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_serves_two_hundred_sleepers_with_one_worker() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&[]);
    let pid = s.get("/pid").text();
    let t0 = Instant::now();
    let clients = concurrent_gets(s.addr(), "/sleep?1", 200);
    let ok = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|r| r.status == 200 && r.text() == "slept")
        .count();
    let took = t0.elapsed();
    assert_eq!(ok, 200, "log:\n{}", s.log_text());
    assert!(took < Duration::from_secs(6), "200 sleepers took {took:?}");
    assert_eq!(s.get("/pid").text(), pid, "one worker served them all");
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn cpu_bound_greenlet_past_timeout_is_worker_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&["--timeout", "3"]);
    let old = s.get("/pid").text();
    // An idle hub keeps the worker alive past the timeout...
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(s.get("/pid").text(), old);
    assert_eq!(s.count("WORKER TIMEOUT"), 0);
    // ...a greenlet that never yields stalls it.
    spin_past_the_timeout(&s);
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_quick_requests_pass_a_greenlet_waiting_for_a_slow_upload() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&[]);
    let addr = s.addr();
    let piece: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let pieces = 40;
    let upload = std::thread::spawn(move || {
        let mut c = Conn::open(addr);
        c.send("POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for _ in 0..pieces {
            std::io::Write::write_all(&mut c.stream, format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            std::io::Write::write_all(&mut c.stream, &piece).unwrap();
            std::io::Write::write_all(&mut c.stream, b"\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        c.send("0\r\n\r\n");
        c.read_response(false).expect("upload response").json()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t0 = Instant::now();
        assert_eq!(s.get("/pid").status, 200);
        slowest = slowest.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!upload.is_finished(), "the upload should still be going");
    assert!(
        slowest < Duration::from_millis(500),
        "a quick request waited {slowest:?} behind the upload"
    );
    let r = upload.join().unwrap();
    assert_eq!(r["len"], 64 * 1024 * pieces);
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_drains_in_flight_greenlets_on_reload_and_stop() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = gevent(&["--graceful-timeout", "10"]);
    let sleepers = |s: &Server| concurrent_gets(s.addr(), "/sleep-logged?2", 3);
    let old = s.workers();
    let during_reload = sleepers(&s);
    s.wait_count("sleeping 2", 3, Duration::from_secs(10));
    s.signal(libc::SIGHUP);
    for c in during_reload {
        assert_eq!(c.join().unwrap().text(), "slept");
    }
    wait_gone(&old, Duration::from_secs(10));
    s.wait_worker_count(1, Duration::from_secs(10));
    s.wait_count("loaded", 2, Duration::from_secs(20));

    let during_stop = sleepers(&s);
    s.wait_count("sleeping 2", 6, Duration::from_secs(10));
    s.signal(libc::SIGTERM);
    for c in during_stop {
        assert_eq!(c.join().unwrap().text(), "slept");
    }
    assert!(s.wait_exit(Duration::from_secs(15)).success());
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_keeps_the_request_limits() {
    // Serial like the others: a worker booting gevent takes a core for a
    // moment, and the timing tests measure what their own worker gets.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&["--limit-request-line", "100", "--limit-request-fields", "5"]);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200));
    assert_eq!(request(s.addr(), &long).status, 414);
    let many: String = (0..10).map(|i| format!("X-{i}: y\r\n")).collect();
    let r = request(
        s.addr(),
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    );
    assert_eq!(r.status, 431);
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn gevent_without_the_package_is_one_clear_error_and_exit_3() {
    // Serial: making a virtualenv takes a core for a second or two.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let made = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success());
    let mut s = server("conformance:app")
        .args(["-k", "gevent", "--virtualenv"])
        .arg(venv.display().to_string())
        .spawn();
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "log:\n{}", s.log_text());
    let log = s.log_text();
    assert!(log.contains("needs the gevent package"), "{log}");
    assert!(log.contains("pip install gevent"), "{log}");
    assert_eq!(s.count("Booting worker"), 1, "no respawn loop:\n{log}");
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_with_preload_patches_before_the_import_in_the_preloader() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&["--preload"]);
    assert!(s.log_text().contains("(preloaded)"), "{}", s.log_text());
    let took = two_clients_at_once(&s);
    assert!(took < Duration::from_millis(3500), "gevent took {took:?}");
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_hands_over_every_request_under_concurrent_load() {
    // Requests arrive on the I/O thread while the hub drains its inbox: a
    // lost wake-up there strands a request and, with it, the whole worker.
    // Streamed responses (100 chunks, more than the stream holds) make
    // greenlets park and be woken for room again and again.
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = gevent(&[]);
    let addr = s.addr();
    let clients: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                let mut ok = 0;
                let path = if i % 4 == 0 { "/stream" } else { "/pid" };
                for _ in 0..300 {
                    c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
                    match c.read_response(false) {
                        Some(r) if r.status == 200 => ok += 1,
                        _ => break,
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(ok, 64 * 300, "log:\n{}", s.log_text());
}

/// Responses are written whole or in deliberate pieces (streams), and
/// Nagle's algorithm would hold each last piece for the client's delayed
/// ACK. The master turns it off on the listening socket, where accepted
/// connections inherit it (no system call per connection).
#[test]
fn connections_and_their_listening_socket_send_without_nagles_delay() {
    use socket2::SockRef;
    for class in ["sync", "gthread"] {
        let s = server("conformance:app").args(["-k", class]).start();
        let listener = socket_held_by(s.pid, |sock: &SockRef<'_>| {
            sock.is_listener().unwrap_or(false)
                && sock.local_addr().ok().and_then(|a| a.as_socket()) == Some(s.addr())
        })
        .expect("the master's listening socket");
        assert!(
            SockRef::from(&listener).tcp_nodelay().unwrap(),
            "{class}: TCP_NODELAY on the listening socket"
        );
        let mut c = Conn::open(s.addr());
        c.send("GET /sleep-logged?1 HTTP/1.1\r\nHost: x\r\n\r\n");
        s.wait_log("sleeping", Duration::from_secs(10));
        let ours = c.stream.local_addr().unwrap();
        let worker = s.workers()[0];
        let accepted = socket_held_by(worker, |sock: &SockRef<'_>| {
            sock.peer_addr().ok().and_then(|a| a.as_socket()) == Some(ours)
        })
        .expect("the worker's end of our connection");
        assert!(
            SockRef::from(&accepted).tcp_nodelay().unwrap(),
            "{class}: TCP_NODELAY on the accepted connection"
        );
        assert_eq!(c.read_response(false).unwrap().text(), "slept");
    }
}
