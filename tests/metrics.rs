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

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no {key} in {:?}", m.keys().collect::<Vec<_>>()))
}

/// Scrape until `ok` holds (a worker counts a request just after its
/// answer left); panics with the last page after 30 s.
fn scrape_until(
    addr: SocketAddr,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "{m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sync worker busy in a request accepts nothing: connections wait in
/// the kernel's queue, which /metrics shows. With one gthread thread, a
/// request behind a slow one waits for it, which the wait histogram shows.
#[test]
fn the_listen_queue_the_wait_for_a_thread_and_boots_are_measured() {
    let metrics = free_addr();
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "--backlog",
            "64",
            "--metrics-bind",
            &metrics.to_string(),
        ])
        .start();
    s.wait_log("Ready: 1 workers accepting", LONG);
    let listener = format!("ferricorn_listen_queue{{listener=\"http://{}\"}}", s.addr());
    let m = scrape(metrics);
    assert_eq!(metric(&m, &listener), 0.0);
    assert_eq!(
        metric(&m, &listener.replace("_queue{", "_queue_limit{")),
        64.0
    );
    assert_eq!(metric(&m, "ferricorn_worker_boot_seconds_count"), 1.0);
    let boot = metric(&m, "ferricorn_worker_boot_seconds_sum");
    assert!(boot > 0.0 && boot < 30.0, "{boot}");
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&m, "ferricorn_start_time_seconds");
    assert!(
        started <= epoch && started > epoch - 60.0,
        "{started} vs {epoch}"
    );

    let busy = {
        let addr = s.addr();
        std::thread::spawn(move || {
            request(
                addr,
                "GET /sleep-logged?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
    };
    s.wait_log("sleeping 3", LONG);
    let waiting: Vec<_> = (0..3).map(|_| connect(s.addr())).collect();
    scrape_until(metrics, |m| m.get(&listener) == Some(&3.0));
    assert_eq!(busy.join().unwrap().status, 200);
    drop(waiting);
    scrape_until(metrics, |m| m.get(&listener) == Some(&0.0));
    drop(s);

    let metrics = free_addr();
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--threads", "1"])
        .args(["--metrics-bind", &metrics.to_string()])
        .start();
    s.wait_log("Ready: 1 workers accepting", LONG);
    let slow = {
        let addr = s.addr();
        std::thread::spawn(move || {
            request(
                addr,
                "GET /sleep-logged?1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
    };
    s.wait_log("sleeping 1", LONG);
    assert_eq!(s.get("/pid").status, 200, "queued behind the sleeper");
    assert_eq!(slow.join().unwrap().status, 200);
    let m = scrape_until(metrics, |m| {
        m.get("ferricorn_request_wait_seconds_count") == Some(&2.0)
    });
    // The sleeper started at once; the other waited for the one thread.
    assert_eq!(
        metric(&m, "ferricorn_request_wait_seconds_bucket{le=\"0.25\"}"),
        1.0
    );
    let waited = metric(&m, "ferricorn_request_wait_seconds_sum");
    assert!((0.3..5.0).contains(&waited), "{waited}");
}

#[test]
fn a_request_timeout_restart_is_counted_by_its_reason() {
    let metrics = free_addr();
    let s = server("conformance:app")
        .args([
            "-w",
            "1",
            "--request-timeout",
            "1",
            "--graceful-timeout",
            "1",
        ])
        .args(["--metrics-bind", &metrics.to_string()])
        .start();
    s.wait_log("Ready: 1 workers accepting", LONG);
    assert_eq!(s.get("/sleep?60").status, 504);
    let m = scrape_until(metrics, |m| {
        m.get("ferricorn_worker_restarts_total{reason=\"request_timeout\"}") == Some(&1.0)
            && m.get("ferricorn_worker_boot_seconds_count") == Some(&2.0)
    });
    assert_eq!(
        metric(
            &m,
            "ferricorn_worker_restarts_total{reason=\"max_requests\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(&m, "ferricorn_worker_restarts_total{reason=\"crash\"}"),
        0.0
    );
}

/// The page as Prometheus' own Python parser reads it.
#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn prometheus_client_parses_the_page_and_reads_the_same_values() {
    let metrics = free_addr();
    let s = server("conformance:app")
        .args([
            "-w",
            "2",
            "-k",
            "gthread",
            "--metrics-bind",
            &metrics.to_string(),
        ])
        .wait_workers(2)
        .start();
    s.wait_log("Ready: 2 workers accepting", LONG);
    for _ in 0..3 {
        assert_eq!(s.get("/pid").status, 200);
    }
    let ours = scrape_until(metrics, |m| {
        m.get("ferricorn_request_duration_seconds_count") == Some(&3.0)
    });
    let page = request(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .text();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out[s.name + ("{%s}" % labels if labels else "")] = [family.type, s.value]
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(test_venv().join("bin/python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: BTreeMap<String, (String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        parsed["ferricorn_requests_total{status=\"2xx\",worker_class=\"gthread\"}"],
        ("counter".into(), 3.0)
    );
    assert_eq!(
        parsed["ferricorn_request_duration_seconds_count"].0,
        "histogram"
    );
    assert_eq!(
        parsed["ferricorn_worker_boot_seconds_count"],
        ("summary".into(), 2.0)
    );
    assert_eq!(
        parsed["ferricorn_workers{state=\"serving\"}"],
        ("gauge".into(), 2.0)
    );
    // Every sample of ours, and no other.
    assert_eq!(parsed.len(), ours.len(), "{parsed:?}\n{ours:?}");
}

/// statsd datagrams received until `done` says enough, split into lines.
fn statsd_lines(socket: &std::net::UdpSocket, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let deadline = std::time::Instant::now() + LONG;
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    while !done(&lines) {
        assert!(std::time::Instant::now() < deadline, "{lines:#?}");
        if let Ok(n) = socket.recv(&mut buf) {
            lines.extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
        }
    }
    lines
}

/// What a line says, without its measured value: `name|type`.
fn shape(line: &str) -> String {
    let (name, rest) = line.split_once(':').unwrap_or((line, ""));
    let kind = rest.split_once('|').map_or("", |(_, k)| k);
    format!("{name}|{kind}")
}

fn statsd_traffic(addr: SocketAddr) {
    for path in ["/pid", "/pid", "/raw-status?404%20Not%20Found"] {
        request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
    }
}

/// Every line of the three requests, and the worker gauge (gunicorn sends
/// each line as a datagram of its own: all must have come).
fn enough(lines: &[String]) -> bool {
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    count("gunicorn.requests:") >= 3
        && count("gunicorn.request.status.") >= 3
        && count("gunicorn.request.duration:") >= 3
        && count("gunicorn.workers:") >= 1
}

#[test]
fn statsd_gets_gunicorns_lines_for_each_request_and_the_worker_count() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = server("conformance:app")
        .args(["-w", "2", "--statsd-prefix", "shop"])
        .args(["--statsd-host", &udp.local_addr().unwrap().to_string()])
        .wait_workers(2)
        .start();
    statsd_traffic(s.addr());
    let lines = statsd_lines(&udp, enough);
    let count = |needle: &str| lines.iter().filter(|l| l.as_str() == needle).count();
    assert_eq!(count("shop.gunicorn.requests:1|c|@1.0"), 3, "{lines:#?}");
    assert_eq!(
        count("shop.gunicorn.request.status.200:1|c|@1.0"),
        2,
        "{lines:#?}"
    );
    assert_eq!(
        count("shop.gunicorn.request.status.404:1|c|@1.0"),
        1,
        "{lines:#?}"
    );
    let durations: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("shop.gunicorn.request.duration:"))
        .map(|v| v.strip_suffix("|ms").unwrap().parse().unwrap())
        .collect();
    assert_eq!(durations.len(), 3, "{lines:#?}");
    assert!(
        durations.iter().all(|&ms| ms > 0.0 && ms < 5000.0),
        "{durations:?}"
    );
    assert!(
        lines.iter().any(|l| l == "shop.gunicorn.workers:2|g"),
        "{lines:#?}"
    );
}

/// gunicorn, sent the same traffic, sends lines of the same names and types.
#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn statsd_lines_have_the_names_and_types_gunicorn_sends() {
    let ours_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = server("conformance:app")
        .args(["-w", "1", "--statsd-prefix", "shop"])
        .args(["--statsd-host", &ours_udp.local_addr().unwrap().to_string()])
        .start();
    statsd_traffic(s.addr());
    let ours = statsd_lines(&ours_udp, enough);

    let theirs_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let statsd = theirs_udp.local_addr().unwrap().to_string();
    let gunicorn = Gunicorn::start(
        &[
            "-w",
            "1",
            "--statsd-prefix",
            "shop",
            "--statsd-host",
            &statsd,
        ],
        "conformance:app",
    );
    statsd_traffic(gunicorn.addr);
    let theirs = statsd_lines(&theirs_udp, enough);
    drop(gunicorn);

    let shapes = |lines: &[String]| -> std::collections::BTreeSet<String> {
        lines
            .iter()
            .filter(|l| !l.contains("gunicorn.log."))
            .map(|l| shape(l))
            .collect()
    };
    assert_eq!(
        shapes(&ours),
        shapes(&theirs),
        "ours {ours:#?}\ntheirs {theirs:#?}"
    );
    let counts = |lines: &[String]| {
        let mut c = BTreeMap::new();
        for l in lines
            .iter()
            .filter(|l| l.contains("|c") && !l.contains("gunicorn.log."))
        {
            *c.entry(l.clone()).or_insert(0) += 1;
        }
        c
    };
    assert_eq!(counts(&ours), counts(&theirs));
}
