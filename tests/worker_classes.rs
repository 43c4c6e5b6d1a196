//! The experiment users quote when they choose a worker class: one worker,
//! two clients at once on a handler that sleeps 2 s.

mod common;

use common::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timing tests run one at a time so they do not compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn two_clients_at_once(s: &Server) -> Duration {
    let addr = s.addr();
    let t0 = Instant::now();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                request(
                    addr,
                    "GET /sleep?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
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
            "GET /sleep?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
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
