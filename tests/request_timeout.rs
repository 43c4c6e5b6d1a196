//! `--request-timeout`: a request past its deadline gets 504 (or, once its
//! head is out, a cut connection), one log line says where it was stuck,
//! and it is stopped as its worker class allows: an asgi task is cancelled
//! and a gevent greenlet killed, keeping the worker; an app thread cannot
//! be stopped, so a sync or gthread worker is replaced once its other
//! requests finish. No other request fails meanwhile.

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// Send `path` on a new connection; the answer and how long it took.
/// The app sleeps a minute: only the deadline answers within the read timeout.
fn timed_get(s: &Server, path: &str) -> (Option<Response>, Duration) {
    let t0 = Instant::now();
    let mut c = Conn::try_open(s.addr(), Duration::from_secs(15)).expect("connect");
    c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let r = c.read_response(false);
    (r, t0.elapsed())
}

/// The 504 came from the deadline (not sooner, not the app), closing the connection.
fn assert_gateway_timeout(s: &Server, r: Option<Response>, took: Duration, limit: u64) {
    let r = r.unwrap_or_else(|| panic!("no answer in {took:?}; log:\n{}", s.log_text()));
    assert_eq!(r.status, 504, "log:\n{}", s.log_text());
    assert_eq!(r.header("connection"), Some("close"));
    let limit = Duration::from_secs(limit);
    assert!(
        took >= limit,
        "answered after {took:?}, before the deadline"
    );
    assert!(
        took < limit + Duration::from_secs(3),
        "answered after {took:?}"
    );
}

fn access_line_with_504(s: &Server, path: &str) {
    let needle = format!("\"GET {path} HTTP/1.1\" 504");
    let deadline = Instant::now() + LONG;
    while !s.stdout_text().contains(&needle) {
        assert!(
            Instant::now() < deadline,
            "no access line {needle:?}:\n{}\nlog:\n{}",
            s.stdout_text(),
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn gthread_answers_504_logs_every_thread_and_replaces_the_worker_under_load() {
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "4"])
        .args(["--request-timeout", "2", "--graceful-timeout", "2"])
        .start();
    let old = s.workers();
    let load = Load::start(s.addr(), "/pid");
    load.wait_answered(20);
    // A request under the deadline is not touched.
    assert_eq!(s.get("/sleep?0.5").status, 200);
    let (r, took) = timed_get(&s, "/sleep-noting?60");
    assert_gateway_timeout(&s, r, took, 2);
    let line = s.wait_log("Request timeout: GET /sleep-noting", LONG);
    assert!(line.contains(&format!("(pid:{})", old[0])), "{line}");
    assert!(line.contains("answered 504"), "{line}");
    assert!(line.contains("replacing the worker"), "{line}");
    // The stacks: the stuck thread's shows the app's frame.
    let log = s.log_text();
    let after = &log[log.find("Request timeout:").unwrap()..];
    assert!(after.contains("Thread "), "{after}");
    assert!(after.contains("in sleep_noting_route"), "{after}");
    // Replaced: a new worker first, then the old one leaves after its grace.
    s.wait_log("stuck past request_timeout: replacing it", LONG);
    s.wait_count(") loaded ", 2, LONG);
    s.wait_log(&format!("Worker exiting (pid: {})", old[0]), LONG);
    load.wait_answered(20);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok; log:\n{}", s.log_text());
    let log = s.log_text();
    assert!(
        !log.contains("sleep interrupted"),
        "a thread is not interrupted:\n{log}"
    );
    assert!(!log.contains("Error handling request"), "{log}");
    assert_eq!(log.matches("Request timeout:").count(), 1, "{log}");
    assert_ne!(s.get("/pid").text(), old[0].to_string());
}

#[test]
fn sync_stops_taking_connections_behind_its_stuck_thread() {
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "--request-timeout",
            "1",
            "--graceful-timeout",
            "1",
        ])
        .args(["--access-logfile", "-"])
        .start();
    let old = s.workers()[0];
    let (r, took) = timed_get(&s, "/sleep-noting?60");
    assert_gateway_timeout(&s, r, took, 1);
    // The next request does not wait behind the minute-long one: the
    // replacement answers it.
    let t0 = Instant::now();
    let r = s.get("/pid");
    assert_eq!(r.status, 200);
    assert_ne!(r.text(), old.to_string());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    s.wait_log(&format!("Worker exiting (pid: {old})"), LONG);
    assert!(s.log_text().contains("Request timeout: GET /sleep-noting"));
    // The stuck request's access line is written only if its thread
    // returns; this one never does (its worker left first).
    assert!(!s.stdout_text().contains("/sleep-noting"));
}

#[test]
fn a_response_past_its_deadline_after_its_head_is_cut_off() {
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "2"])
        .args(["--request-timeout", "1", "--graceful-timeout", "1"])
        .start();
    let mut c = Conn::try_open(s.addr(), Duration::from_secs(15)).unwrap();
    let t0 = Instant::now();
    c.send("GET /stall?60 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = c.stream.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("first chunk"), "{got}");
    // No last chunk: the client knows the body is incomplete.
    assert!(!got.ends_with("0\r\n\r\n"), "{got}");
    let line = s.wait_log("Request timeout: GET /stall", LONG);
    assert!(line.contains("its response was cut off"), "{line}");
}

#[test]
fn asgi_cancels_the_task_and_keeps_the_worker() {
    let s = server("asgi_raw:app")
        .args(["-w", "1", "-k", "asgi", "--request-timeout", "1"])
        .args(["--access-logfile", "-"])
        .start();
    let pid = s.workers()[0];
    let (r, took) = timed_get(&s, "/sleep-noting?60");
    assert_gateway_timeout(&s, r, took, 1);
    s.wait_log("sleep interrupted by CancelledError", LONG);
    let line = s.wait_log("Request timeout: GET /sleep-noting", LONG);
    assert!(line.contains("cancelling its task"), "{line}");
    let log = s.log_text();
    let after = &log[log.find("Request timeout:").unwrap()..];
    assert!(after.contains("asgi_raw.py"), "the task's stack:\n{after}");
    assert!(!log.contains("Exception in ASGI application"), "{log}");
    access_line_with_504(&s, "/sleep-noting?60");
    // The same worker serves on.
    assert_eq!(s.get("/sleep?0.1").status, 200);
    assert_eq!(s.workers(), [pid]);
    assert_eq!(s.count(") loaded "), 1, "{log}");
    assert!(!log.contains("replacing it"), "{log}");
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gevent_kills_the_greenlet_and_keeps_the_worker() {
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gevent", "--request-timeout", "1"])
        .args(["--access-logfile", "-", "--virtualenv"])
        .arg(test_venv().display().to_string())
        .start();
    let pid = s.workers()[0];
    // Another greenlet's request is not disturbed by the kill.
    let neighbour = {
        let addr = s.addr();
        std::thread::spawn(move || {
            request(
                addr,
                "GET /sleep?0.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
    };
    let (r, took) = timed_get(&s, "/sleep-noting?60");
    assert_gateway_timeout(&s, r, took, 1);
    assert_eq!(neighbour.join().unwrap().status, 200);
    s.wait_log("sleep interrupted by RequestTimeout", LONG);
    let line = s.wait_log("Request timeout: GET /sleep-noting", LONG);
    assert!(line.contains("killing its greenlet"), "{line}");
    let log = s.log_text();
    let after = &log[log.find("Request timeout:").unwrap()..];
    assert!(
        after.contains("in sleep_noting_route"),
        "the greenlet's stack:\n{after}"
    );
    assert!(!log.contains("Error handling request"), "{log}");
    access_line_with_504(&s, "/sleep-noting?60");
    assert_eq!(s.get("/pid").text(), pid.to_string());
    assert_eq!(s.count(") loaded "), 1, "{log}");
}
