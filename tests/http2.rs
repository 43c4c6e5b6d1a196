//! HTTP/2 (hyper's) for every worker class: ALPN over TLS, cleartext by
//! prior knowledge, per-stream flow control and timeouts, the limits, and
//! GOAWAY on drain with no request lost. Clients: curl, httpx and h2
//! (tests/clients/tls_client.py).

mod common;

use common::pki::{Pki, client};
use common::*;
use std::process::Command;
use std::time::Duration;

fn h2_server(pki: &Pki, app: &str, extra: &[&str]) -> Server {
    server(app)
        .args(["--virtualenv", test_venv().to_str().unwrap()])
        .args(["--certfile", &pki.arg("server.pem")])
        .args(["--keyfile", &pki.arg("server.key")])
        .args(["--http-protocols", "h2,h1"])
        .args(extra.iter().copied())
        .start()
}

/// Cleartext HTTP/2 by prior knowledge, with HTTP/1.1 beside it.
const H2C: [&str; 4] = [
    "--http-protocols",
    "h2,h1",
    "--http2-cleartext",
    "prior-knowledge",
];

/// An access log file the test reads.
struct AccessLog(tempfile::TempDir);

impl AccessLog {
    fn new() -> AccessLog {
        AccessLog(tempfile::tempdir().unwrap())
    }
    fn arg(&self) -> String {
        self.0.path().join("access.log").display().to_string()
    }
    fn count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.arg())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
    /// Wait (at most `limit`) until `needle` is in `n` lines.
    fn wait_count(&self, needle: &str, n: usize, limit: Duration) {
        wait_until(limit, &format!("{n}x {needle:?} in the access log"), || {
            self.count(needle) >= n
        });
    }
}

/// curl's body and the HTTP version it spoke.
fn curl(args: &[&str]) -> (serde_json::Value, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .expect("run curl (scripts/install-deps.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, version) = text.rsplit_once('\n').unwrap_or(("", ""));
    (
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        version.to_string(),
    )
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn every_class_serves_http2_by_alpn_and_http1_to_clients_that_ask_for_it() {
    let pki = Pki::new();
    let ca = pki.arg("ca.pem");
    for (class, app) in [
        ("sync", "tls_probe:app"),
        ("gthread", "tls_probe:app"),
        ("gevent", "tls_probe:app"),
        ("asgi", "tls_probe:asgi_app"),
    ] {
        let access = AccessLog::new();
        let s = h2_server(&pki, app, &["-k", class, "--access-logfile", &access.arg()]);
        let url = format!("https://localhost:{}/probe?x=1", s.addr().port());
        let (body, version) = curl(&["--http2", "--cacert", &ca, &url]);
        assert_eq!(version, "2", "{class}: curl spoke HTTP/{version}: {body}");
        let (h1, h1_version) = curl(&["--http1.1", "--cacert", &ca, &url]);
        assert_eq!(h1_version, "1.1", "{class}");
        if class == "asgi" {
            assert_eq!(body["http_version"], "2", "{body}");
            assert_eq!(body["scheme"], "https");
            assert_eq!(body["path"], "/probe");
            assert_eq!(body["host"], format!("localhost:{}", s.addr().port()));
            assert_eq!(h1["http_version"], "1.1", "{h1}");
        } else {
            // gunicorn's spelling; the rest as HTTP/1.1 gives it.
            assert_eq!(body["SERVER_PROTOCOL"], "HTTP/2.0", "{class}: {body}");
            assert_eq!(body["RAW_URI"], "/probe?x=1");
            assert_eq!(body["PATH_INFO"], "/probe");
            assert_eq!(body["QUERY_STRING"], "x=1");
            assert_eq!(body["wsgi.url_scheme"], "https");
            assert_eq!(body["HTTP_HOST"], format!("localhost:{}", s.addr().port()));
            assert_eq!(body["SERVER_NAME"], "localhost");
            assert_eq!(body["SERVER_PORT"], s.addr().port().to_string());
            assert_eq!(h1["SERVER_PROTOCOL"], "HTTP/1.1", "{h1}");
        }
        // httpx over h2: several streams on one connection.
        let r = client(&["get", &url, "--ca", &ca, "--http2"]);
        assert_eq!(r["http_version"], "HTTP/2", "{class}: {r}");
        // One access-log line per stream, with its protocol.
        access.wait_count("\"GET /probe?x=1 HTTP/2.0\" 200", 2, Duration::from_secs(5));
        access.wait_count("\"GET /probe?x=1 HTTP/1.1\" 200", 1, Duration::from_secs(5));
        // hyper's own HTTP/2 tracing stays out of the error log.
        let log = s.log_text();
        assert!(
            !log.contains("[DEBUG]") && !log.contains("SETTINGS"),
            "{class}: {log}"
        );
    }
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn cleartext_http2_by_prior_knowledge_from_trusted_peers_only() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h2c.sock");
    let s = server("tls_probe:app")
        .args(["-k", "gthread", "--threads", "4"])
        .args(["-b", &format!("unix:{}", sock.display())])
        .args(H2C)
        .start();
    let url = format!("http://127.0.0.1:{}/c", s.addr().port());
    let (body, version) = curl(&["--http2-prior-knowledge", &url]);
    assert_eq!(version, "2", "{body}");
    assert_eq!(body["SERVER_PROTOCOL"], "HTTP/2.0");
    assert_eq!(body["wsgi.url_scheme"], "http");
    // Over the unix socket (a proxy on the same host) as well.
    let (body, version) = curl(&[
        "--http2-prior-knowledge",
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://localhost/c",
    ]);
    assert_eq!(version, "2", "{body}");
    assert_eq!(body["PATH_INFO"], "/c");
    // HTTP/1.1 on the same port, as before.
    let (body, version) = curl(&[&url]);
    assert_eq!(version, "1.1", "{body}");
    assert_eq!(body["SERVER_PROTOCOL"], "HTTP/1.1");
    // A peer not in --forwarded-allow-ips is served HTTP/1 only (gunicorn's
    // rule): its preface is an invalid HTTP/1 request.
    let untrusted = server("tls_probe:app")
        .args(["-k", "gthread", "--forwarded-allow-ips", "10.9.9.9"])
        .args(H2C)
        .start();
    let url = format!("http://127.0.0.1:{}/c", untrusted.addr().port());
    let (_, version) = curl(&["--http2-prior-knowledge", &url]);
    assert_ne!(version, "2");
    let (body, version) = curl(&[&url]);
    assert_eq!(
        (version.as_str(), &body["SERVER_PROTOCOL"]),
        ("1.1", &serde_json::json!("HTTP/1.1"))
    );
    // Without the setting, prior knowledge is not honoured either.
    let plain = server("tls_probe:app").args(["-k", "gthread"]).start();
    let url = format!("http://127.0.0.1:{}/c", plain.addr().port());
    let (_, version) = curl(&["--http2-prior-knowledge", &url]);
    assert_ne!(version, "2");
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn a_stream_whose_client_does_not_read_holds_up_no_other_stream() {
    let pki = Pki::new();
    let s = h2_server(&pki, "tls_probe:app", &["-k", "gthread", "--threads", "4"]);
    let r = client(&[
        "slow-stream",
        "127.0.0.1",
        &s.addr().port().to_string(),
        "--ca",
        &pki.arg("ca.pem"),
    ]);
    assert_eq!(r["answered"], r["of"], "{r}");
    // The unread stream got no more than its window.
    assert!(r["blocked_stream_bytes"].as_u64().unwrap() <= 65535, "{r}");
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn streams_and_header_lists_are_limited_and_each_stream_has_its_deadline() {
    let pki = Pki::new();
    let access = AccessLog::new();
    let s = h2_server(
        &pki,
        "tls_probe:asgi_app",
        &[
            "--access-logfile",
            &access.arg(),
            "-k",
            "asgi",
            "--http2-max-concurrent-streams",
            "7",
            "--http2-max-header-list-size",
            "16384",
            "--request-timeout",
            "1",
        ],
    );
    let port = s.addr().port().to_string();
    let ca = pki.arg("ca.pem");
    // One stream past its deadline: 504; the other on the connection: 200.
    let r = client(&["raw", "127.0.0.1", &port, "/slow?s=3", "/", "--ca", &ca]);
    assert_eq!(r["settings"]["MAX_CONCURRENT_STREAMS"], 7, "{r}");
    assert_eq!(r["settings"]["MAX_HEADER_LIST_SIZE"], 16384, "{r}");
    let streams = r["streams"].as_array().unwrap();
    assert_eq!(streams[0]["status"], 504, "{r}");
    assert_eq!(streams[1]["status"], 200, "{r}");
    assert!(
        streams[1]["end"].as_f64().unwrap() < 1.0,
        "not held by the slow one: {r}"
    );
    // A header list larger than allowed is refused, not passed to the app.
    let r = client(&[
        "raw",
        "127.0.0.1",
        &port,
        "/big-headers",
        "--ca",
        &ca,
        "--header-bytes",
        "20000",
    ]);
    let stream = &r["streams"][0];
    assert!(
        stream["status"] == 431 || stream["reset"].is_number() || r["goaway"].is_number(),
        "{r}"
    );
    assert_ne!(stream["status"], 200, "{r}");
    // Within the list size, past gunicorn's per-field and request-line
    // limits (8190 each by default): refused as HTTP/1.1 refuses them.
    let r = client(&[
        "raw",
        "127.0.0.1",
        &port,
        "/",
        "--ca",
        &ca,
        "--header-bytes",
        "9000",
    ]);
    assert_eq!(r["streams"][0]["status"], 431, "{r}");
    let long = format!("/{}", "p".repeat(9000));
    let r = client(&["raw", "127.0.0.1", &port, &long, "--ca", &ca]);
    assert_eq!(r["streams"][0]["status"], 414, "{r}");
    // Access lines per stream, the timed-out one with its 504.
    access.wait_count("\"GET /slow?s=3 HTTP/2.0\" 504", 1, Duration::from_secs(5));
}

/// HUP twice under HTTP/2 load: the old workers send GOAWAY (hyper's
/// two-step one), answer the streams begun, and the client moves to the
/// new workers; no request fails. The load is curl's (nghttp2), which
/// handles GOAWAY as RFC 9113 says: Python's h2 (httpx) takes any GOAWAY
/// as the end of the connection and fails the streams still in flight on
/// it, with this server or any other.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn goaway_on_reload_under_http2_load_loses_no_request() {
    let pki = Pki::new();
    let access = AccessLog::new();
    let s = server("tls_probe:app")
        .args(["--access-logfile", &access.arg()])
        .args(["--access-logformat", "%(p)s \"%(r)s\" %(s)s"])
        .args(["--certfile", &pki.arg("server.pem")])
        .args(["--keyfile", &pki.arg("server.key")])
        .args([
            "--http-protocols",
            "h2",
            "-k",
            "gthread",
            "--threads",
            "4",
            "-w",
            "2",
        ])
        .wait_workers(2)
        .start();
    let first: Vec<i32> = s.workers();
    let dir = tempfile::tempdir().unwrap();
    // Enough requests to outlast two reloads; curl multiplexes them, 8 at a
    // time, over HTTP/2 connections.
    const REQUESTS: usize = 30_000;
    let config = dir.path().join("urls");
    let url = format!("https://localhost:{}/probe", s.addr().port());
    std::fs::write(
        &config,
        format!("url = \"{url}\"\noutput = \"/dev/null\"\n").repeat(REQUESTS),
    )
    .unwrap();
    let load = Command::new("curl")
        .args(["-sS", "--http2", "--parallel", "--parallel-max", "8"])
        .args(["--cacert", &pki.arg("ca.pem")])
        .args(["-w", "%{http_code} %{http_version}\\n", "-K"])
        .arg(&config)
        .stdout(std::fs::File::create(dir.path().join("answers")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("curl.err")).unwrap())
        .spawn()
        .expect("run curl");
    let load = Reaped(load);
    access.wait_count("HTTP/2.0\" 200", 200, Duration::from_secs(20));
    for round in 1..=2 {
        s.signal(libc::SIGHUP);
        s.wait_count(") loaded ", 2 + 2 * round, Duration::from_secs(30));
        s.wait_worker_count(2, Duration::from_secs(30));
    }
    let last: Vec<i32> = s.workers();
    let mut load = load;
    wait_until(Duration::from_secs(120), "curl to finish", || {
        load.0.try_wait().unwrap().is_some()
    });
    let out = std::fs::read_to_string(dir.path().join("answers")).unwrap();
    let err = std::fs::read_to_string(dir.path().join("curl.err")).unwrap();
    let answers: Vec<&str> = out.lines().collect();
    let good = answers.iter().filter(|l| **l == "200 2").count();
    assert_eq!(
        good,
        REQUESTS,
        "answers other than 200 over HTTP/2: {:?}; curl: {err}",
        {
            let mut bad: Vec<_> = answers.iter().filter(|l| **l != "200 2").collect();
            bad.dedup();
            bad.into_iter().take(5).collect::<Vec<_>>()
        }
    );
    // Served by a first worker and by a last one: the load (curl keeps one
    // connection) moved across both reloads.
    let log = std::fs::read_to_string(access.arg()).unwrap();
    let served = |pids: &[i32]| {
        pids.iter()
            .any(|pid| log.lines().any(|l| l.starts_with(&format!("<{pid}> "))))
    };
    assert!(served(&first), "no first worker served: {first:?}");
    assert!(served(&last), "no last worker served: {last:?}");
}

/// TERM with a stream in progress: it is answered before the worker leaves.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn a_stream_in_progress_at_stop_is_answered() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut s = server("tls_probe:app")
        .env("SLOW_STARTED", started.to_str().unwrap())
        .args(["--certfile", &pki.arg("server.pem")])
        .args(["--keyfile", &pki.arg("server.key")])
        .args(["--http-protocols", "h2", "-k", "gthread", "--threads", "2"])
        .start();
    let url = format!("https://localhost:{}/slow?s=1", s.addr().port());
    let ca = pki.arg("ca.pem");
    let req = std::thread::spawn(move || curl(&["--http2", "--cacert", &ca, &url]));
    wait_until(Duration::from_secs(20), "the request to begin", || {
        started.exists()
    });
    s.signal(libc::SIGTERM);
    let (body, version) = req.join().unwrap();
    assert_eq!(version, "2");
    assert_eq!(body["PATH_INFO"], "/slow", "{body}");
    assert_eq!(s.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// A sync worker serves one connection at a time: an HTTP/2 connection is
/// closed (GOAWAY) a moment after its streams are answered, not kept for
/// --keep-alive, so the next client is not kept waiting behind it.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn a_sync_worker_closes_an_http2_connection_once_its_streams_are_answered() {
    let pki = Pki::new();
    let s = h2_server(&pki, "tls_probe:app", &["-k", "sync", "--keep-alive", "30"]);
    let port = s.addr().port().to_string();
    let t0 = std::time::Instant::now();
    let r = client(&[
        "raw",
        "127.0.0.1",
        &port,
        "/",
        "/",
        "--ca",
        &pki.arg("ca.pem"),
        "--until-closed",
    ]);
    assert_eq!(r["streams"][0]["status"], 200, "{r}");
    assert_eq!(r["streams"][1]["status"], 200, "{r}");
    assert_eq!(r["goaway"], 0, "GOAWAY with NO_ERROR: {r}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
