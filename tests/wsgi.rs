//! PEP 3333 over the real binary: environ, wsgi.input, start_response, iterables.

mod common;

use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn conformance() -> Server {
    server("conformance:app").start()
}

/// The conformance app under a worker class that runs it in its own way:
/// one app thread, a pool of them, or greenlets on the gevent hub.
fn conformance_for(class: &str) -> Server {
    // A debug build takes tens of seconds over an upload sent in 7-byte
    // chunks; a sync worker busy that long would meet the default timeout.
    let b = server("conformance:app").args(["--timeout", "300"]);
    match class {
        "sync" => b.start(),
        "gthread" => b.args(["-k", "gthread", "--threads", "2"]).start(),
        "gevent" => b
            .args(["-k", "gevent", "--virtualenv"])
            .arg(test_venv().display().to_string())
            .start(),
        other => panic!("no worker class {other}"),
    }
}

/// One check under one class; gevent needs the full tier's virtualenv.
macro_rules! class_test {
    ($check:ident, gevent) => {
        #[test]
        #[cfg_attr(
            not(feature = "full"),
            ignore = "full tier: gevent is in the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
        )]
        fn gevent() {
            super::$check(&super::conformance_for("gevent"));
        }
    };
    ($check:ident, $class:ident) => {
        #[test]
        fn $class() {
            super::$check(&super::conformance_for(stringify!($class)));
        }
    };
}

/// Each check below runs once per listed class, as `check::class`.
macro_rules! under {
    ($($check:ident: [$($class:ident),+];)*) => {$(
        mod $check {
            $(class_test!($check, $class);)+
        }
    )*};
}

under! {
    input_read_readline_readlines_and_iteration: [gthread, gevent];
    large_upload_streams_through: [sync, gevent];
    expect_100_continue: [sync, gevent];
    validator_wrapped_app_get_post_and_stream: [sync, gevent];
    streaming_response_is_chunked: [sync, gevent];
    lazy_start_response_inside_the_iterable: [sync, gevent];
    write_callable_then_iterable: [sync, gevent];
    exc_info_replaces_headers_before_output_and_reraises_after: [sync, gevent];
    app_exception_is_500_with_traceback_and_worker_goes_on: [sync, gevent];
    crlf_in_a_header_value_never_reaches_the_wire: [sync, gevent];
    body_is_cut_at_declared_content_length: [sync, gevent];
    head_has_no_body_and_204_304_have_none: [gthread, gevent];
    hop_by_hop_headers_are_dropped_server_and_date_added: [sync, gevent];
    close_is_called_also_when_the_client_goes_away: [sync, gevent];
    file_wrapper_sends_the_whole_file: [sync, gevent];
    a_kept_start_response_or_write_never_serves_a_later_request: [sync, gevent];
    a_response_does_not_wait_for_the_iterables_close: [sync, gthread, gevent];
}

/// A request's header fields fit in its copy of the worker's template
/// environ: CPython copies the template's table as it is, and a full one
/// made every request with more than a Host field grow its copy.
#[test]
fn header_fields_fit_in_the_environ_without_growing_it() {
    let s = server("conformance:app").start();
    let size = |fields: &str| {
        let r = request(
            s.addr(),
            &format!("GET /environ-size HTTP/1.0\r\nHost: x\r\n{fields}\r\n"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        (j["size"].as_u64().unwrap(), j["keys"].as_u64().unwrap())
    };
    let (bare, bare_keys) = size("");
    let fields: String = (0..15).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    let (full, full_keys) = size(&fields);
    assert_eq!(full_keys, bare_keys + 15);
    assert_eq!(
        full, bare,
        "the environ grew for 15 more fields ({bare_keys} keys: {bare} bytes, {full_keys}: {full})"
    );
}

#[test]
fn environ_has_what_gunicorn_sets() {
    let s = server("conformance:app")
        .args(["-w", "2"])
        .wait_workers(2)
        .start();
    let r = s.get("/environ?x=1&y=%20z");
    let r = request(
        s.addr(),
        "GET /environ?x=1&y=%20z HTTP/1.1\r\nHost: example.com:8080\r\nX-Multi: a\r\nX-Multi: b\r\nX_Under: dropped\r\nContent-Type: text/x-test\r\nPriority: u=0, i\r\nX-Custom-Thing: 1\r\nConnection: close\r\n\r\n",
    )
    .json()
    .as_object()
    .cloned()
    .map(|m| (r.status, m))
    .unwrap();
    let (status, env) = r;
    assert_eq!(status, 200);
    let e = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing: {env:?}"))
    };
    assert_eq!(e("wsgi.version"), serde_json::json!([1, 0]));
    assert_eq!(e("wsgi.url_scheme"), "http");
    assert_eq!(e("wsgi.multiprocess"), true);
    assert_eq!(e("wsgi.multithread"), false);
    assert_eq!(e("wsgi.run_once"), false);
    assert_eq!(e("wsgi.input_terminated"), true);
    assert_eq!(e("wsgi.input"), "Input");
    assert_eq!(e("wsgi.errors"), "ErrorStream");
    assert_eq!(e("wsgi.file_wrapper"), "type");
    assert_eq!(e("REQUEST_METHOD"), "GET");
    assert_eq!(e("SCRIPT_NAME"), "");
    assert_eq!(e("PATH_INFO"), "/environ");
    assert_eq!(e("QUERY_STRING"), "x=1&y=%20z");
    assert_eq!(e("RAW_URI"), "/environ?x=1&y=%20z");
    assert_eq!(e("SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(e("SERVER_NAME"), "example.com");
    assert_eq!(e("SERVER_PORT"), "8080");
    assert_eq!(e("REMOTE_ADDR"), "127.0.0.1");
    assert!(e("REMOTE_PORT").as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(e("CONTENT_TYPE"), "text/x-test");
    assert_eq!(e("HTTP_X_MULTI"), "a,b");
    assert_eq!(e("HTTP_HOST"), "example.com:8080");
    // One field with an interned key, one without.
    assert_eq!(e("HTTP_PRIORITY"), "u=0, i");
    assert_eq!(e("HTTP_X_CUSTOM_THING"), "1");
    assert!(
        env.keys().all(|k| !k.starts_with("ferricorn.")),
        "placeholder keys left in the environ: {env:?}"
    );
    assert!(
        !env.contains_key("HTTP_X_UNDER"),
        "names with _ must be dropped"
    );
    assert!(
        e("SERVER_SOFTWARE")
            .as_str()
            .unwrap()
            .starts_with("ferricorn/")
    );
}

#[test]
fn path_info_is_percent_decoded_as_latin1() {
    let s = conformance();
    // %E2%82%AC is the UTF-8 euro sign: PEP 3333 wants each byte as one code point.
    let r = s.get("/environ/%E2%82%AC%20x").json();
    assert_eq!(r["PATH_INFO"], "/environ/\u{e2}\u{82}\u{ac} x");
    assert_eq!(r["RAW_URI"], "/environ/%E2%82%AC%20x");
}

#[test]
fn url_scheme_is_https_only_from_trusted_proxies() {
    let s = conformance();
    let ask = |extra: &str| {
        request(
            s.addr(),
            &format!("GET /environ HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"),
        )
        .json()
    };
    assert_eq!(
        ask("X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"],
        "https"
    );
    assert_eq!(ask("X-Forwarded-Ssl: on\r\n")["wsgi.url_scheme"], "https");
    assert_eq!(ask("")["wsgi.url_scheme"], "http");
    drop(s);
    // 127.0.0.1 is not trusted here, so the header is ignored.
    let s = server("conformance:app")
        .args(["--forwarded-allow-ips", "10.9.9.9"])
        .start();
    let r = request(
        s.addr(),
        "GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    .json();
    assert_eq!(r["wsgi.url_scheme"], "http");
}

#[test]
fn server_name_and_port_follow_each_request_host() {
    // One worker serves every request, so strings it keeps from one request
    // must not leak into the next.
    let s = server("conformance:app").args(["-w", "1"]).start();
    let ask = |head: &str| {
        let r = request(
            s.addr(),
            &format!("GET /environ HTTP/1.1\r\n{head}Connection: close\r\n\r\n"),
        )
        .json();
        ["HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme"]
            .map(|k| r[k].as_str().unwrap_or("-").to_string())
    };
    // Head sent → HTTP_HOST, SERVER_NAME, SERVER_PORT, wsgi.url_scheme.
    for (head, want) in [
        (
            "Host: a.example:81\r\n",
            ["a.example:81", "a.example", "81", "http"],
        ),
        (
            "Host: b.example\r\n",
            ["b.example", "b.example", "80", "http"],
        ),
        (
            "Host: b.example\r\nX-Forwarded-Proto: https\r\n",
            ["b.example", "b.example", "443", "https"],
        ),
        (
            "Host: b.example\r\n",
            ["b.example", "b.example", "80", "http"],
        ),
        ("Host: [::1]:9\r\n", ["[::1]:9", "::1", "9", "http"]),
    ] {
        assert_eq!(ask(head), want, "{head:?}");
    }
    let r = request(s.addr(), "GET /environ HTTP/1.0\r\n\r\n").json();
    assert_eq!(r.get("HTTP_HOST"), None);
    assert_eq!(r["SERVER_NAME"], s.addr().ip().to_string());
    assert_eq!(r["SERVER_PORT"], s.addr().port().to_string());
    // The template's HTTP/1.1 and empty query must not stand for this one.
    assert_eq!(r["SERVER_PROTOCOL"], "HTTP/1.0");
    assert_eq!(r["QUERY_STRING"], "");
    assert_eq!(r["RAW_URI"], "/environ");
}

#[test]
fn environ_over_a_unix_socket_has_no_remote_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let s = command()
        .args(["-b", &format!("unix:{}", path.display())])
        .args([
            "--chdir",
            &apps_dir().display().to_string(),
            "conformance:app",
        ])
        .start();
    let get = |raw: &[u8]| {
        let mut us = std::os::unix::net::UnixStream::connect(&path).unwrap();
        us.write_all(raw).unwrap();
        let mut out = Vec::new();
        us.read_to_end(&mut out).unwrap();
        parse_response(&out, false).unwrap().0.json()
    };
    let r = get(b"GET /environ?a=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r["REMOTE_ADDR"], "", "{r}");
    assert_eq!(r["REMOTE_PORT"], "", "{r}");
    assert_eq!(r["QUERY_STRING"], "a=b");
    assert_eq!(r["SERVER_PROTOCOL"], "HTTP/1.1");
    assert_eq!(r["wsgi.url_scheme"], "http");
    // A request through a trusted proxy (a unix socket's peer always is).
    let r = get(b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n");
    assert_eq!(r["wsgi.url_scheme"], "https", "{r}");
    drop(s);
}

#[test]
fn gthread_environ_is_multithread() {
    let s = server("conformance:app")
        .args(["-k", "gthread", "--threads", "4"])
        .start();
    let r = s.get("/environ").json();
    assert_eq!(r["wsgi.multithread"], true);
    assert_eq!(r["wsgi.multiprocess"], false);
}

fn post(s: &Server, path: &str, body: &[u8], chunked: bool) -> Response {
    // 7-byte chunks: a client that dribbles its body.
    post_body(s.addr(), path, body, chunked.then_some(7))
}

fn input_read_readline_readlines_and_iteration(s: &Server) {
    let body = b"first line\nsecond\nthird line here\nno newline at end";
    for chunked in [false, true] {
        let r = post(s, "/read?read=10", body, chunked).json();
        assert_eq!(
            r,
            serde_json::json!([10, 10, 10, 10, 10, 1, 0]),
            "chunked={chunked}"
        );
        let r = post(s, "/read?readline=6", body, chunked).json();
        assert_eq!(
            r,
            serde_json::json!([
                "first ", "line\n", "second", "\n", "third ", "line h", "ere\n", "no new",
                "line a", "t end", ""
            ]),
            "chunked={chunked}"
        );
        for how in ["readlines", "iter"] {
            let r = post(s, &format!("/read?{how}"), body, chunked).json();
            assert_eq!(
                r,
                serde_json::json!([
                    "first line\n",
                    "second\n",
                    "third line here\n",
                    "no newline at end"
                ]),
                "{how}"
            );
        }
        let r = post(s, "/read?readlines=12", body, chunked).json();
        assert_eq!(
            r,
            serde_json::json!(["first line\n", "second\n"]),
            "readlines(hint) stops once hint is reached"
        );
    }
}

fn large_upload_streams_through(s: &Server) {
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| b as u64).sum::<u64>() % 65536;
    for chunked in [false, true] {
        let r = post(s, "/read", &body, chunked).json();
        assert_eq!(r["len"], body.len());
        assert_eq!(r["sum"], sum);
    }
}

fn expect_100_continue(s: &Server) {
    let mut c = Conn::open(s.addr());
    c.send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n");
    let interim = c.read_response(false).expect("interim response");
    assert_eq!(interim.status, 100);
    c.send("hello");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["len"], 5);
}

fn validator_wrapped_app_get_post_and_stream(s: &Server) {
    let r = s.get("/validated");
    assert_eq!((r.status, r.text().as_str()), (200, "validated"));
    let r = post(s, "/validated", b"posted body", false);
    assert_eq!((r.status, r.text().as_str()), (200, "posted body"));
    let r = s.get("/validated-stream");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "part0part1part2part3part4")
    );
    assert!(
        !s.log_text().contains("Error handling request"),
        "{}",
        s.log_text()
    );
}

fn streaming_response_is_chunked(s: &Server) {
    let r = s.get("/stream");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let expected: String = (0..100).map(|i| format!("chunk{i}\n")).collect();
    assert_eq!(r.text(), expected);
}

fn lazy_start_response_inside_the_iterable(s: &Server) {
    let r = s.get("/lazy");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-lazy"), Some("yes"));
    assert_eq!(r.text(), "lazy body");
}

fn write_callable_then_iterable(s: &Server) {
    let r = s.get("/write");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "written-then-returned")
    );
}

fn exc_info_replaces_headers_before_output_and_reraises_after(s: &Server) {
    let r = s.get("/exc-info");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-replaced"), Some("1"));
    assert_eq!(r.text(), "replaced");

    // After the body started, the app's error is re-raised: the connection is
    // cut instead of ending the chunked body as if it were complete.
    let mut c = Conn::open(s.addr());
    c.send("GET /exc-info-late HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c.stream, &mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("partial"));
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "body must not look complete: {text:?}"
    );
    s.wait_log("boom after body", Duration::from_secs(5));
}

fn app_exception_is_500_with_traceback_and_worker_goes_on(s: &Server) {
    let pid_before = s.get("/pid").text();
    let r = s.get("/error");
    assert_eq!(r.status, 500);
    let log = s.wait_log("Error handling request /error", Duration::from_secs(5));
    assert!(log.contains("[ERROR]"), "{log}");
    let text = s.log_text();
    assert!(text.contains("Traceback (most recent call last)"), "{text}");
    assert!(
        text.contains("ValueError: the app failed on purpose"),
        "{text}"
    );
    assert_eq!(
        s.get("/pid").text(),
        pid_before,
        "the same worker keeps serving"
    );
}

fn crlf_in_a_header_value_never_reaches_the_wire(s: &Server) {
    let mut c = Conn::open(s.addr());
    c.send("GET /crlf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 500);
    assert!(
        !r.raw_head.to_ascii_lowercase().contains("evil"),
        "{}",
        r.raw_head
    );
    assert!(!r.text().contains("should not be sent"));
    s.wait_log("CR, LF and NUL are not allowed", Duration::from_secs(5));
}

fn body_is_cut_at_declared_content_length(s: &Server) {
    // The app's header tuple is a constant: from the second request on, the
    // app thread finds it converted in its cache.
    for _ in 0..3 {
        let r = s.get("/cl-cut");
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.text(), "12345");
    }
}

fn head_has_no_body_and_204_304_have_none(s: &Server) {
    let mut c = Conn::open(s.addr());
    c.send("HEAD /cl-cut HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5"));
    for code in ["204", "304"] {
        c.send(&format!("GET /status?{code} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status.to_string(), code);
        assert!(r.body.is_empty());
    }
    // If any of those had carried a body, it would be read here instead.
    c.send("GET /status?200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body that must not be sent");
}

/// An app thread reuses its last start_response (and the `write` bound to
/// it) for the next request, but only when the app kept neither.
fn a_kept_start_response_or_write_never_serves_a_later_request(s: &Server) {
    for kept in ["write", "start_response"] {
        assert_eq!(s.get(&format!("/keep?{kept}")).text(), "kept");
        for _ in 0..3 {
            assert_eq!(s.get("/after-kept").text(), "own", "kept: {kept}");
        }
    }
}

fn hop_by_hop_headers_are_dropped_server_and_date_added(s: &Server) {
    // Constant tuples: later requests take them from the thread's cache.
    for _ in 0..3 {
        let r = s.get("/hop");
        assert_eq!(r.text(), "hop");
        assert_eq!(r.header("x-kept"), Some("1"));
        assert_eq!(r.header("keep-alive"), None);
        assert_eq!(r.header("upgrade"), None);
        assert_ne!(r.header("transfer-encoding"), Some("gzip"));
        assert!(r.header("server").unwrap().starts_with("ferricorn/"));
        assert!(r.header("date").is_some());
    }
}

fn closed_marker(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ferricorn-closed-{tag}"))
}

fn close_is_called_also_when_the_client_goes_away(s: &Server) {
    let tag = format!("normal-{}-{}", std::process::id(), s.addr().port());
    let _ = std::fs::remove_file(closed_marker(&tag));
    assert_eq!(s.get(&format!("/close?{tag}")).text(), "abc");
    assert!(closed_marker(&tag).exists());

    let tag = format!("gone-{}-{}", std::process::id(), s.addr().port());
    let _ = std::fs::remove_file(closed_marker(&tag));
    {
        let mut c = Conn::open(s.addr());
        c.send(&format!(
            "GET /close-slow?{tag} HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        let mut first = [0u8; 1024];
        let _ = std::io::Read::read(&mut c.stream, &mut first);
    } // the client hangs up mid-body
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !closed_marker(&tag).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "close() was not called; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(closed_marker(&tag));
}

fn file_wrapper_sends_the_whole_file(s: &Server) {
    let r = s.get("/file");
    assert_eq!(r.status, 200);
    let expected: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(4096);
    assert_eq!(r.body.len(), expected.len());
    assert!(r.body == expected);
}

#[test]
fn app_logging_and_wsgi_errors_reach_the_error_log_with_the_worker_pid() {
    let s = conformance();
    let pid = s.get("/pid").text();
    assert_eq!(s.get("/log?xyz").text(), "logged");
    let line = s.wait_log("app log line xyz", Duration::from_secs(5));
    assert!(line.contains(&format!("[{pid}] [WARNING]")), "{line}");
    let line = s.wait_log("wsgi.errors line xyz", Duration::from_secs(5));
    assert!(line.contains(&format!("[{pid}]")), "{line}");
}

#[test]
fn factory_with_literal_arguments_and_default_application() {
    let s = server("conformance:make_app('ab', times=3)").start();
    assert_eq!(s.get("/").text(), "ababab");
    drop(s);
    let s = server("conformance").start();
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn gthread_keeps_connections_alive_and_closes_idle_ones() {
    let s = server("conformance:app")
        .args(["-k", "gthread", "--threads", "2", "--keep-alive", "1"])
        .start();
    let mut c = Conn::open(s.addr());
    for _ in 0..3 {
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), None);
    }
    // Pipelined: two requests in one write, two responses in order.
    c.send("GET /cl-cut HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().text(), "12345");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    // Idle past --keep-alive: the server closes the connection.
    assert!(
        c.closed_within(Duration::from_secs(4)),
        "idle keep-alive connection was not closed"
    );
}

#[test]
fn sync_closes_every_connection() {
    let s = conformance();
    let mut c = Conn::open(s.addr());
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn access_log_uses_gunicorn_atoms() {
    let s = server("conformance:app")
        .args([
            "--access-logfile",
            "-",
            "--access-logformat",
            r#"%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %({x-id}i)s %({content-type}o)s %(p)s"#,
        ])
        .start();
    let pid = s.get("/pid").text();
    let r = request(
        s.addr(),
        "GET /hop?a=1 HTTP/1.1\r\nHost: x\r\nX-Id: 77\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = s.stdout_text();
        if let Some(line) = out.lines().find(|l| l.contains("/hop")) {
            assert_eq!(
                line,
                format!(
                    r#"127.0.0.1 "GET /hop?a=1 HTTP/1.1" 200 3 GET /hop a=1 77 text/plain <{pid}>"#
                )
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_access_log_records_the_status_sent_not_the_one_the_app_started() {
    let s = server("conformance:app")
        .args(["--access-logfile", "-", "--access-logformat", "%(U)s %(s)s"])
        .start();
    for path in [
        "/start-then-raise",
        "/generator-raise",
        "/start-twice",
        "/str-body",
        "/raw-status",
    ] {
        let query = if path == "/raw-status" {
            "?100%20Continue"
        } else {
            ""
        };
        let r = request(
            s.addr(),
            &format!("GET {path}{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 500, "{path}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let line = loop {
            let out = s.stdout_text();
            if let Some(line) = out.lines().find(|l| l.starts_with(&format!("{path} "))) {
                break line.to_string();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no access log line: {out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(line, format!("{path} 500"), "the client got 500");
    }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn two_threads_reading_one_wsgi_input_do_not_deadlock() {
    let venv = test_venv().display().to_string();
    for class in ["gthread", "gevent"] {
        let s = server("conformance:app")
            .args(["-k", class, "--virtualenv", &venv])
            .start();
        let mut c = Conn::open(s.addr());
        c.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        c.send("POST /two-readers HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
        // Both readers wait for the body before any of it is sent.
        s.wait_log("reader 0 reading", Duration::from_secs(10));
        s.wait_log("reader 1 reading", Duration::from_secs(10));
        c.send("0123456789");
        let r = c
            .read_response(false)
            .unwrap_or_else(|| panic!("{class}: no answer: the readers deadlocked"));
        assert_eq!(r.json()["total"], 10, "{class}");
        assert_eq!(r.json()["stuck"], false, "{class}");
    }
}

/// PEP 3333's close() comes after the response: work an app does there
/// (Flask's teardown, werkzeug's call_on_close) does not hold its client
/// up, also where complete responses are handed back in batches (gthread,
/// gevent). gunicorn has written the body when it calls close() (below).
fn a_response_does_not_wait_for_the_iterables_close(s: &Server) {
    let t0 = Instant::now();
    let r = answer_then_close(s.addr());
    let waited = t0.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "answered"));
    assert_eq!(
        s.count("close done"),
        0,
        "answered after close() ({waited:?})"
    );
    s.wait_log("close done", Duration::from_secs(10));
}

/// The response to `/answer-then-close?3`, read by its Content-Length on
/// a keep-alive connection (the end of the connection comes after close()).
fn answer_then_close(addr: std::net::SocketAddr) -> Response {
    let mut c = Conn::open(addr);
    c.send("GET /answer-then-close?3 HTTP/1.1\r\nHost: x\r\n\r\n");
    c.read_response(false).expect("a response")
}

/// What the check above holds ferricorn to: gunicorn answers before the
/// iterable's close() ends.
#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: gunicorn is in the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gunicorn_answers_before_the_iterables_close() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("error.log");
    let log_arg = log.display().to_string();
    let g = Gunicorn::start(
        &[
            "-k",
            "gthread",
            "--threads",
            "2",
            "--capture-output",
            "--error-logfile",
            &log_arg,
        ],
        "conformance:app",
    );
    let r = answer_then_close(g.addr);
    assert_eq!((r.status, r.text().as_str()), (200, "answered"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("close done"),
        "gunicorn answered after close(): {text}"
    );
    wait_until(Duration::from_secs(10), "gunicorn's close() to end", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("close done"))
    });
}
