//! `--health-bind`: /livez and /readyz, answered by the master.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn check(addr: SocketAddr, path: &str) -> u16 {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .status
}

#[test]
fn readyz_waits_for_a_booted_worker_and_turns_503_when_a_stop_begins() {
    let health = free_addr();
    let mut s = server("slow_import:app")
        .args(["--health-bind", &health.to_string(), "-k", "gthread"])
        .env("SLOW_IMPORT_SECONDS", "2")
        .spawn();
    s.wait_listening();
    s.wait_log("Health checks at", LONG);
    // The app is still importing: alive, not ready.
    s.wait_log("Booting worker", LONG);
    assert_eq!(check(health, "/livez"), 200);
    assert_eq!(check(health, "/readyz"), 503);
    s.wait_log("Ready: 1 workers accepting", LONG);
    assert_eq!(check(health, "/readyz"), 200);
    assert_eq!(check(health, "/nope"), 404);
    // A request in flight when TERM comes: readiness drops at once, while
    // the request is still being served.
    let addr = s.addr();
    let inflight = std::thread::spawn(move || {
        request(
            addr,
            "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    s.wait_log("served /slow", LONG);
    s.signal(libc::SIGTERM);
    s.wait_log("Handling signal: term", LONG);
    assert_eq!(check(health, "/readyz"), 503);
    assert_eq!(check(health, "/livez"), 200, "still finishing a request");
    assert_eq!(inflight.join().unwrap().status, 200);
    assert!(s.wait_exit(LONG).success());
}

#[test]
fn a_health_address_that_cannot_be_used_is_one_clear_line() {
    let mut s = server("conformance:app")
        .args(["--health-bind", "fd://3"])
        .spawn();
    assert_eq!(s.wait_exit(LONG).code(), Some(2));
    assert!(
        s.log_text().contains("setting `health_bind`"),
        "{}",
        s.log_text()
    );
}
