//! `--metrics-bind`: /metrics in Prometheus' text format, counted from
//! known traffic, across a worker's restart.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `name{labels}` → value, from the text format.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let r = request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        out.insert(name.to_string(), value);
    }
    // Every series has its HELP and TYPE.
    for name in out.keys() {
        let family = name.split('{').next().unwrap();
        let family = family
            .strip_suffix("_bucket")
            .or_else(|| family.strip_suffix("_sum"))
            .or_else(|| family.strip_suffix("_count"))
            .unwrap_or(family);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    out
}

fn get_status(s: &Server, path: &str) -> u16 {
    s.get(path).status
}

#[test]
fn counters_move_by_the_traffic_and_survive_a_workers_restart() {
    let metrics = free_addr();
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "--max-requests",
            "4",
            "--metrics-bind",
            &metrics.to_string(),
        ])
        .start();
    s.wait_log("Ready: 1 workers accepting", LONG);
    let before = scrape(metrics);
    assert_eq!(before["ferricorn_request_duration_seconds_count"], 0.0);
    assert_eq!(before["ferricorn_workers{state=\"serving\"}"], 1.0);
    for _ in 0..5 {
        assert_eq!(get_status(&s, "/pid"), 200);
    }
    for _ in 0..2 {
        assert_eq!(get_status(&s, "/raw-status?404%20Not%20Found"), 404);
    }
    // The fourth request recycled the worker (--max-requests): its counts
    // stay in the totals.
    s.wait_log("Autorestarting worker", LONG);
    let deadline = std::time::Instant::now() + LONG;
    let m = loop {
        let m = scrape(metrics);
        // A worker counts a request just after its answer left: the
        // last one may show a moment after the client has it.
        if m["ferricorn_worker_restarts_total{reason=\"max_requests\"}"] >= 1.0
            && m["ferricorn_request_duration_seconds_count"] == 7.0
        {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "{m:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let class =
        |c: &str| m[&format!("ferricorn_requests_total{{worker_class=\"sync\",status=\"{c}\"}}")];
    assert_eq!(class("2xx"), 5.0, "{m:?}");
    assert_eq!(class("4xx"), 2.0, "{m:?}");
    assert_eq!(class("5xx"), 0.0);
    assert_eq!(m["ferricorn_request_duration_seconds_count"], 7.0);
    assert_eq!(
        m["ferricorn_request_duration_seconds_bucket{le=\"+Inf\"}"],
        7.0
    );
    assert!(m["ferricorn_request_duration_seconds_bucket{le=\"10\"}"] <= 7.0);
    assert!(m["ferricorn_request_duration_seconds_sum"] > 0.0);
    assert_eq!(m["ferricorn_worker_restarts_total{reason=\"crash\"}"], 0.0);
    assert_eq!(m["ferricorn_workers_target"], 1.0);
    let r = request(
        metrics,
        "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 404);
}
