//! Malformed and oversized requests: the status codes, the log line, and a worker that goes on.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn status_of(s: &Server, raw: &[u8]) -> u16 {
    request_bytes(s.addr(), raw).status
}

#[test]
fn request_line_over_the_limit_is_414() {
    let s = server("conformance:app")
        .args(["--limit-request-line", "100"])
        .start();
    let long = "a".repeat(120);
    assert_eq!(
        status_of(
            &s,
            format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()
        ),
        414
    );
    s.wait_log("Request Line is too large", Duration::from_secs(5));
    let ok = "a".repeat(50);
    assert_eq!(
        status_of(
            &s,
            format!("GET /environ/{ok} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes()
        ),
        200
    );
}

#[test]
fn default_request_line_limit_is_gunicorns_4094() {
    let s = server("conformance:app").start();
    let long = "a".repeat(4100);
    assert_eq!(
        status_of(
            &s,
            format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()
        ),
        414
    );
}

#[test]
fn too_many_or_too_large_header_fields_are_431() {
    let s = server("conformance:app")
        .args([
            "--limit-request-fields",
            "10",
            "--limit-request-field_size",
            "200",
        ])
        .start();
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        status_of(
            &s,
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()
        ),
        431
    );
    let big = "v".repeat(300);
    assert_eq!(
        status_of(
            &s,
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes()
        ),
        431
    );
    s.wait_log("is too large", Duration::from_secs(5));
    assert_eq!(s.get("/pid").status, 200, "the worker goes on");
}

#[test]
fn malformed_framing_and_versions_are_400_and_logged() {
    let s = server("conformance:app").args(["-k", "gthread"]).start();
    let cases: &[&[u8]] = &[
        b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
        b"POST /read HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello",
    ];
    for raw in cases {
        assert_eq!(
            status_of(&s, raw),
            400,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // One log line per refusal; a line is written once hyper has answered,
    // so it may trail the response a little.
    s.wait_count(
        "[WARNING] Invalid request from 127.0.0.1",
        cases.len(),
        Duration::from_secs(5),
    );
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn content_length_with_transfer_encoding_or_twice_is_400() {
    // hyper alone would drop Content-Length (or merge equal duplicates) and
    // serve the request; gunicorn 22+ refuses both, and so do we.
    for class in ["sync", "gthread"] {
        let s = server("conformance:app").args(["-k", class]).start();
        let cases: &[&[u8]] = &[
            b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ];
        for raw in cases {
            let r = request_bytes(s.addr(), raw);
            assert_eq!(r.status, 400, "{class}: {:?}", String::from_utf8_lossy(raw));
            assert_eq!(r.header("connection"), Some("close"));
        }
        s.wait_log(
            "Content-Length and Transfer-Encoding in one request",
            Duration::from_secs(5),
        );
        s.wait_log("duplicate Content-Length header", Duration::from_secs(5));
    }
}

#[test]
fn a_refused_request_behind_a_good_one_on_a_keep_alive_connection() {
    let s = server("conformance:app").args(["-k", "gthread"]).start();
    let mut c = Conn::open(s.addr());
    // A good chunked request, then a smuggling attempt, in one write.
    c.send("POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().json()["len"], 3);
    assert_eq!(c.read_response(false).unwrap().status, 400);
    assert!(
        c.read_response(false).is_none(),
        "nothing after the refused request is served"
    );
}

#[test]
fn a_client_that_dribbles_its_headers_is_cut_off() {
    let s = server("conformance:app")
        .args(["--header-timeout", "1"])
        .start();
    let mut c = connect(s.addr());
    let t0 = Instant::now();
    c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let mut closed = false;
    for _ in 0..30 {
        if c.write_all(b"X-Slow: 1\r\n").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 512];
        match c.read(&mut b) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        c.set_nonblocking(false).unwrap();
    }
    assert!(closed, "the server kept a dribbling client");
    assert!(t0.elapsed() < Duration::from_secs(4));
    s.wait_log("Invalid request from 127.0.0.1", Duration::from_secs(5));
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    // --header-timeout bounds how long a request head may take to arrive,
    // not how long a client may wait between requests (--keep-alive does).
    let s = server("conformance:app")
        .args([
            "-k",
            "gthread",
            "--keep-alive",
            "4",
            "--header-timeout",
            "1",
        ])
        .start();
    let mut c = Conn::open(s.addr());
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    // The window under test: idle longer than --header-timeout, shorter
    // than --keep-alive.
    std::thread::sleep(Duration::from_millis(2500));
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c
        .read_response(false)
        .expect("the connection was closed while idle for less than --keep-alive");
    assert_eq!(r.status, 200);
    assert!(
        !s.log_text().contains("Invalid request"),
        "{}",
        s.log_text()
    );
}
