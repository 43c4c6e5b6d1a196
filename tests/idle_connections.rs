//! Idle keep-alive connections in a crowded worker are parked: hyper's
//! buffers are given up while the socket waits alone (src/http/idle.rs).
//! A parked connection costs a few KB instead of hyper's 16, and it serves
//! its next request (also a pipelined pair), still closes when idle too
//! long, and still answers a request sent as the worker drains.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// More connections than a worker holds before it parks idle ones.
const MANY: usize = 2000;
const WAIT: Duration = Duration::from_secs(30);

/// A worker class with an app, and a path whose answer shows the request's headers.
struct Case {
    class: &'static str,
    app: &'static str,
    path: &'static str,
}

const GTHREAD: Case = Case {
    class: "gthread",
    app: "conformance:app",
    path: "/environ",
};
/// asgi lets go of a request on its event loop's thread, after hyper has
/// already asked for the next one.
const ASGI: Case = Case {
    class: "asgi",
    app: "asgi_raw:app",
    path: "/scope",
};

impl Case {
    fn get(&self, tag: &str) -> String {
        format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nX-N: {tag}\r\n\r\n",
            self.path
        )
    }
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        lim.rlim_max as usize > MANY + 200,
        "this test needs {} descriptors; the hard limit is {}",
        MANY + 200,
        lim.rlim_max
    );
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// `MANY` keep-alive connections, each answered once and then idle.
fn open_idle(s: &Server, case: &Case) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(MANY);
    for _ in 0..MANY {
        let mut c = Conn::try_open(s.addr(), WAIT).expect("connect");
        c.send(&case.get("first"));
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200);
        conns.push(c);
    }
    conns
}

fn crowded_server(case: &Case) -> Server {
    server(case.app)
        .args(["-w", "1", "-k", case.class, "--threads", "4"])
        .args(["--worker-connections", "5000", "--keep-alive", "5"])
        .start()
}

#[test]
fn idle_connections_of_a_crowded_gthread_worker_cost_a_few_kb_and_serve_on() {
    parked_and_served(&GTHREAD);
}

#[test]
fn idle_connections_of_a_crowded_asgi_worker_cost_a_few_kb_and_serve_on() {
    parked_and_served(&ASGI);
}

fn parked_and_served(case: &Case) {
    raise_fd_limit();
    let s = crowded_server(case);
    let worker = s.workers()[0];
    let before = rss_kb(worker);
    let mut conns = open_idle(&s, case);
    let per_conn = (rss_kb(worker) - before) as f64 * 1024.0 / MANY as f64;
    // Unparked, hyper's buffers alone touch about 10 KB per connection.
    assert!(
        per_conn < 8.0 * 1024.0,
        "{per_conn:.0} bytes per idle connection"
    );

    // Each serves its next request; a pipelined pair comes back in order.
    for (i, c) in conns.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.send(&case.get("again"));
        } else {
            c.send(&(case.get(&format!("{i}a")) + &case.get(&format!("{i}b"))));
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let r = c.read_response(false).expect("answered after parking");
        assert_eq!(r.status, 200);
        if i % 2 == 1 {
            assert!(r.text().contains(&format!("{i}a")), "{}", r.text());
            let r = c.read_response(false).expect("the second of the pair");
            assert!(r.text().contains(&format!("{i}b")), "{}", r.text());
        }
    }

    // Still closed once idle past --keep-alive (5 s, checked every period).
    let deadline = Instant::now() + Duration::from_secs(20);
    for c in conns.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(c.closed_within(left.max(Duration::from_millis(1))));
    }
}

#[test]
fn a_request_on_a_parked_connection_is_answered_while_the_worker_drains() {
    raise_fd_limit();
    let mut s = crowded_server(&GTHREAD);
    let mut conns = open_idle(&s, &GTHREAD);
    s.signal(libc::SIGTERM);
    // Sent after TERM, before the worker could close the idle connections.
    let last = conns.last_mut().unwrap();
    last.send(&GTHREAD.get("draining"));
    let r = last.read_response(false).expect("answered while draining");
    assert_eq!(r.status, 200);
    // The others close within the drain's idle limit; the master exits.
    for c in conns.iter_mut().take(MANY - 1) {
        assert!(c.closed_within(WAIT));
    }
    assert!(s.wait_exit(WAIT).success());
}
