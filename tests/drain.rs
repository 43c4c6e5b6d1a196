//! No request lost while workers drain (HUP, USR2, TERM, max-requests),
//! with keep-alive clients: a request sent on an open connection is
//! answered, with `Connection: close` once its worker is stopping. Clients
//! here never retry: a request that gets no answer is a lost request.

mod common;

use common::*;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Keep-alive clients that send their next request as soon as the last is answered.
struct KeepAlive {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    /// Requests lost on a connection that had been answered before.
    lost: Arc<AtomicU64>,
    /// First requests of new connections lost: the kernel took the
    /// connection, but no worker did before the listening socket closed.
    lost_fresh: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAlive {
    fn start(addr: std::net::SocketAddr, path: &'static str, clients: usize) -> KeepAlive {
        let stop = Arc::new(AtomicBool::new(false));
        let counter = || Arc::new(AtomicU64::new(0));
        let (ok, lost, lost_fresh, closed) = (counter(), counter(), counter(), counter());
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, lost, lost_fresh, closed) = (
                    stop.clone(),
                    ok.clone(),
                    lost.clone(),
                    lost_fresh.clone(),
                    closed.clone(),
                );
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
                    'connections: while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        // A server that has stopped listening refuses new
                        // connections: nothing was sent, nothing is lost.
                        let Some(mut c) = Conn::try_open(addr, Duration::from_secs(10)) else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let mut fresh = true;
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            let lost = if fresh { &lost_fresh } else { &lost };
                            fresh = false;
                            if c.stream.write_all(req.as_bytes()).is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                                continue 'connections;
                            }
                            match c.read_response(false) {
                                Some(r) if r.status == 200 => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    if r.header("connection") == Some("close") {
                                        closed.fetch_add(1, Ordering::Relaxed);
                                        continue 'connections;
                                    }
                                }
                                other => {
                                    eprintln!("lost: {other:?}");
                                    lost.fetch_add(1, Ordering::Relaxed);
                                    continue 'connections;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        KeepAlive {
            stop,
            ok,
            lost,
            lost_fresh,
            closed,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Outcome {
            ok: self.ok.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            lost_fresh: self.lost_fresh.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
#[allow(dead_code)] // shown in the test output
struct Outcome {
    ok: u64,
    lost: u64,
    lost_fresh: u64,
    closed: u64,
}

impl Outcome {
    /// Every request answered, and the draining workers said they close.
    fn none_lost(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert_eq!(
            (self.lost, self.lost_fresh),
            (0, 0),
            "{what}: requests lost"
        );
        assert!(
            self.closed > 0,
            "{what}: draining workers answer with Connection: close"
        );
    }
}

/// Wait until the clients have had `more` answers beyond what they had.
fn served_more(load: &KeepAlive, more: u64) {
    let start = load.ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.ok() < start + more {
        assert!(Instant::now() < deadline, "the clients were not served");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const CLASSES: [&str; 3] = ["gthread", "gevent", "asgi"];

fn start(class: &str, extra: &[&str]) -> Server {
    let venv = test_venv().display().to_string();
    let app = if class == "asgi" {
        "asgi_raw:app"
    } else {
        "conformance:app"
    };
    server(app)
        .args(["-w", "2", "-k", class, "--virtualenv", &venv])
        .args(extra.iter().copied())
        .wait_workers(2)
        .start()
}

fn path(class: &str) -> &'static str {
    if class == "asgi" { "/" } else { "/pid" }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn hup_and_ttou_lose_no_keep_alive_request() {
    for class in CLASSES {
        let s = start(class, &[]);
        let load = KeepAlive::start(s.addr(), path(class), 16);
        served_more(&load, 200);
        for n in 1..=2 {
            s.signal(libc::SIGHUP);
            // The old workers have drained and exited: 2 exits per reload.
            s.wait_count("Worker exiting", 2 * n, Duration::from_secs(30));
            served_more(&load, 200);
        }
        // TTOU retires one worker the same way.
        s.signal(libc::SIGTTOU);
        s.wait_count("Worker exiting", 5, Duration::from_secs(30));
        served_more(&load, 200);
        load.finish().none_lost(&format!("{class} HUP x2, TTOU"));
    }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn max_requests_loses_no_keep_alive_request() {
    for class in CLASSES {
        let s = start(
            class,
            &["--max-requests", "300", "--max-requests-jitter", "50"],
        );
        let load = KeepAlive::start(s.addr(), path(class), 16);
        // Several generations of workers retire under the load.
        s.wait_count("Worker exiting", 4, Duration::from_secs(60));
        served_more(&load, 100);
        load.finish().none_lost(&format!("{class} max-requests"));
    }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn term_answers_every_request_already_on_an_open_connection() {
    for class in CLASSES {
        let mut s = start(class, &[]);
        let load = KeepAlive::start(s.addr(), path(class), 16);
        served_more(&load, 200);
        s.signal(libc::SIGTERM);
        assert!(s.wait_exit(Duration::from_secs(30)).success());
        let out = load.finish();
        eprintln!("{class} TERM: {out:?}");
        assert_eq!(out.lost, 0, "{class}: requests lost while draining on TERM");
    }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn usr2_loses_no_keep_alive_request() {
    // A private copy of the binary: USR2 re-executes the file at the path.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ferricorn");
    copy_executable(std::path::Path::new(bin()), &exe);
    let venv = test_venv().display().to_string();
    for class in CLASSES {
        let app = if class == "asgi" {
            "asgi_raw:app"
        } else {
            "conformance:app"
        };
        let s = server(app)
            .bin(&exe)
            .args(["-w", "2", "-k", class, "--virtualenv", &venv])
            .wait_workers(2)
            .start();
        // USR2 before the master counts the workers ready would be refused.
        s.wait_log("Ready: ", Duration::from_secs(30));
        let load = KeepAlive::start(s.addr(), path(class), 16);
        served_more(&load, 200);
        s.signal(libc::SIGUSR2);
        s.wait_log("Upgraded in place", Duration::from_secs(30));
        // The previous image's workers have drained and exited.
        s.wait_count("Worker exiting", 2, Duration::from_secs(30));
        served_more(&load, 200);
        load.finish().none_lost(&format!("{class} USR2"));
    }
}
