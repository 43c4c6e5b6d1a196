//! `-k asgi`: ASGI 3 apps on an asyncio loop — a hand-written app for the
//! corners of the protocol, a real FastAPI app for the whole path.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The raw ASGI app from tests/apps, one worker, from the test virtualenv.
/// An asgi worker on the system Python (the apps here need only asyncio).
fn asgi(app: &str, extra: &[&str]) -> Builder {
    server(app)
        .args(["-w", "1", "-k", "asgi"])
        .args(extra.iter().copied())
}

/// An asgi worker in the test virtualenv (FastAPI, uvloop).
fn asgi_in_venv(app: &str, extra: &[&str]) -> Builder {
    asgi(app, extra)
        .args(["--virtualenv"])
        .arg(test_venv().display().to_string())
}

fn post(s: &Server, path: &str, body: &[u8], chunked: bool) -> Response {
    post_body(s.addr(), path, body, chunked.then_some(100_000))
}

#[test]
fn http_scope_is_complete() {
    let s = asgi("asgi_raw:app", &["--root-path", "/api"]).start();
    let r = request(
        s.addr(),
        "GET /api/scope/%E2%82%AC?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nX-Custom: one\r\nX-Custom: two\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", s.log_text());
    let scope = r.json();
    assert_eq!(scope["type"], "http");
    assert_eq!(scope["asgi"]["version"], "3.0");
    assert!(scope["asgi"]["spec_version"].is_string());
    assert_eq!(scope["http_version"], "1.1");
    assert_eq!(scope["method"], "GET");
    assert_eq!(scope["scheme"], "http");
    assert_eq!(scope["path"], "/api/scope/€");
    assert_eq!(scope["raw_path"], "/api/scope/%E2%82%AC");
    assert_eq!(scope["query_string"], "x=1&y=%20");
    assert_eq!(scope["root_path"], "/api");
    let headers = scope["headers"].as_array().unwrap();
    assert!(headers.contains(&serde_json::json!(["host", "example.com"])));
    assert!(headers.contains(&serde_json::json!(["x-custom", "one"])));
    assert!(headers.contains(&serde_json::json!(["x-custom", "two"])));
    assert_eq!(scope["client"][0], "127.0.0.1");
    assert!(scope["client"][1].as_u64().unwrap() > 0);
    assert_eq!(scope["server"][0], "127.0.0.1");
    assert_eq!(scope["server"][1], s.addr().port());
    assert_eq!(scope["state"]["greeting"], "set at startup");

    // https only from a trusted proxy (loopback is trusted by default).
    let r = request(
        s.addr(),
        "GET /api/scope HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.json()["scheme"], "https");
}

#[test]
fn request_bodies_arrive_as_events_with_more_body() {
    let s = asgi("asgi_raw:app", &[]).start();
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| b as u64).sum::<u64>() % 65536;
    for chunked in [false, true] {
        let r = post(&s, "/echo", &body, chunked).json();
        assert_eq!(r["len"], body.len());
        assert_eq!(r["sum"], sum);
        assert!(r["events"].as_u64().unwrap() > 1, "{r}");
    }
    // No body: one event, empty, more_body false.
    let r = post(&s, "/echo", b"", false).json();
    assert_eq!(
        (r["len"].as_u64(), r["events"].as_u64()),
        (Some(0), Some(1))
    );
    // A slow reader: the client waits for room, nothing is lost.
    let r = post(&s, "/slow-echo", &body[..2 * 1024 * 1024], true).json();
    assert_eq!(r["len"], 2 * 1024 * 1024);
}

#[test]
fn responses_stream_with_backpressure() {
    let s = asgi("asgi_raw:app", &[]).start();
    let r = s.get("/stream");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let expected: String = (0..100).map(|i| format!("chunk{i}\n")).collect();
    assert_eq!(r.text(), expected);
    let r = s.get("/big-stream");
    assert_eq!(r.body.len(), 32 * 1024 * 1024);
    let r = s.get("/");
    assert_eq!(r.header("content-length"), Some("10"));
    assert!(r.header("server").unwrap().starts_with("ferricorn/"));
    let r = s.get("/headers");
    assert_eq!(r.headers_named("x-multi"), vec!["a", "b"]);
    assert_ne!(r.header("connection"), Some("keep-alive"));
}

#[test]
fn exceptions_give_a_500_or_a_cut_connection_never_a_hang() {
    let s = asgi("asgi_raw:app", &[]).start();
    let r = s.get("/error-before");
    assert_eq!(r.status, 500);
    s.wait_log("failed before the response", Duration::from_secs(5));
    assert!(s.log_text().contains("Traceback"));

    let mut c = Conn::open(s.addr());
    c.send("GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        c.read_response(false).is_none(),
        "a response that started must not look complete"
    );
    s.wait_log("failed after the response started", Duration::from_secs(5));

    assert_eq!(s.get("/no-response").status, 500);
    s.wait_log("without starting a response", Duration::from_secs(5));
    assert_eq!(s.get("/").text(), "hello asgi", "the worker goes on");
}

#[test]
fn http_disconnect_is_delivered_when_the_client_goes_away() {
    let s = asgi("asgi_raw:app", &[]).start();
    let tag = format!("gone-{}", std::process::id());
    {
        let mut c = Conn::open(s.addr());
        c.send(&format!(
            "GET /disconnect?{tag} HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        s.wait_log(
            &format!("waiting for the disconnect of {tag}"),
            Duration::from_secs(10),
        );
    }
    s.wait_log(
        &format!("saw http.disconnect for {tag}"),
        Duration::from_secs(10),
    );
}

#[test]
fn one_worker_serves_sleepers_at_once_with_keep_alive() {
    let s = asgi("asgi_raw:app", &[]).start();
    let t0 = Instant::now();
    let clients = concurrent_gets(s.addr(), "/sleep?1", 50);
    for c in clients {
        assert_eq!(c.join().unwrap().text(), "slept");
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    let mut c = Conn::open(s.addr());
    for _ in 0..3 {
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response(false).unwrap().text(), "hello asgi");
    }
}

/// While the loop works through queued requests, it hands complete
/// responses back once per pass, not one by one: the I/O thread wakes once
/// for several (about 1.3 sleeps per request before; on a busy machine each
/// of those wake-ups also took the loop's core away from it).
#[test]
fn complete_responses_go_back_to_the_io_thread_in_batches() {
    let s = asgi("asgi_raw:app", &[]).start();
    assert_responses_batched(&s, "/work?0.0003");
}

/// The I/O thread's tick (which sends a held response if the loop has not)
/// runs only while a request is in flight or a response held: an idle
/// worker sleeps until its next request.
#[test]
fn an_idle_worker_does_not_tick() {
    let s = asgi("asgi_raw:app", &[]).start();
    let sleeps = io_thread_sleeps_after_one_request(&s, "/", Duration::from_millis(300));
    assert!(
        sleeps < 30,
        "the idle I/O thread went to sleep {sleeps} times in 300 ms"
    );
}

/// The worker keeps each request's task only while it runs (the loop holds
/// tasks weakly): after many requests, as many tasks are alive as before.
#[test]
fn finished_requests_leave_no_task_behind() {
    for extra in [&[][..], &["--request-timeout", "30"][..]] {
        let s = asgi("asgi_raw:app", extra).start();
        let alive = |s: &Server| -> usize { s.get("/live-tasks").text().trim().parse().unwrap() };
        let before = alive(&s);
        let mut c = Conn::open(s.addr());
        for _ in 0..200 {
            c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(c.read_response(false).unwrap().status, 200);
        }
        let after = alive(&s);
        assert!(
            after <= before + 2,
            "{extra:?}: {before} tasks alive before, {after} after"
        );
    }
}

/// The other side: a held response leaves within the I/O thread's tick,
/// not after what its task goes on to compute.
#[test]
fn a_complete_response_does_not_wait_for_work_after_it() {
    let s = asgi("asgi_raw:app", &[]).start();
    let t0 = Instant::now();
    let r = s.get("/answer-then-work?3");
    let waited = t0.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "answered"));
    assert_eq!(
        s.count("work after the answer done"),
        0,
        "the answer came after the work ({waited:?})"
    );
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    s.wait_log("work after the answer done", Duration::from_secs(10));
}

#[test]
fn a_blocked_loop_past_timeout_is_worker_timeout() {
    let s = asgi("asgi_raw:app", &["--timeout", "3"]).start();
    let before = s.workers();
    let mut c = Conn::open(s.addr());
    c.send("GET /block?60 HTTP/1.1\r\nHost: x\r\n\r\n");
    s.wait_log("WORKER TIMEOUT", Duration::from_secs(15));
    assert!(c.read_response(false).is_none());
    wait_gone(&before, Duration::from_secs(10));
    assert_eq!(s.get("/").text(), "hello asgi");
}

#[test]
fn lifespan_startup_comes_before_ready_and_shutdown_after_the_drain() {
    let mut s = asgi("asgi_raw:app", &["--graceful-timeout", "10"])
        .env("ASGI_STARTUP_DELAY", "2")
        .start();
    s.wait_log("Ready:", Duration::from_secs(20));
    let log = s.log_text();
    let startup = log.find("lifespan startup ran").expect("startup ran");
    let ready = log.find("Ready:").expect("ready line");
    assert!(startup < ready, "{log}");
    assert!(log.contains("Application startup complete."), "{log}");

    let addr = s.addr();
    let sleeper = std::thread::spawn(move || {
        request(
            addr,
            "GET /sleep?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    s.wait_log("sleeping 2", Duration::from_secs(10));
    s.signal(libc::SIGTERM);
    assert_eq!(sleeper.join().unwrap().text(), "slept");
    assert!(s.wait_exit(Duration::from_secs(15)).success());
    let log = s.log_text();
    let shutdown = log.find("lifespan shutdown ran").expect("shutdown ran");
    assert!(
        shutdown > log.find("Handling signal: term").unwrap(),
        "{log}"
    );
}

#[test]
fn lifespan_auto_carries_on_without_support_off_skips_it_on_refuses_a_failure() {
    let s = asgi("asgi_raw:no_lifespan", &[]).start();
    assert_eq!(s.get("/").text(), "no lifespan here");
    s.wait_log("appears unsupported", Duration::from_secs(5));

    let s = asgi("asgi_raw:app", &["--asgi-lifespan", "off"]).start();
    assert_eq!(s.get("/").text(), "hello asgi");
    assert_eq!(s.count("lifespan startup ran"), 0);

    let mut s = asgi("asgi_raw:failing_startup", &["--asgi-lifespan", "on"]).spawn();
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(3), "{}", s.log_text());
    assert!(s.log_text().contains("database unreachable"));
    assert_eq!(s.count("Booting worker"), 1, "no respawn loop");
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn asgi_loop_auto_picks_uvloop_and_asyncio_can_be_forced() {
    let s = asgi_in_venv("asgi_raw:app", &[]).start();
    s.wait_log("ASGI event loop: uvloop", Duration::from_secs(5));
    assert_eq!(s.get("/").text(), "hello asgi");
    let s = asgi("asgi_raw:app", &["--asgi-loop", "asyncio"]).start();
    s.wait_log("ASGI event loop: asyncio", Duration::from_secs(5));
    assert_eq!(s.get("/").text(), "hello asgi");
}

#[test]
fn asgi_access_log_and_limits_as_for_wsgi() {
    let s = asgi(
        "asgi_raw:app",
        &["--access-logfile", "-", "--limit-request-line", "100"],
    )
    .start();
    assert_eq!(s.get("/stream?a=1").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        if let Some(l) = s.stdout_text().lines().find(|l| l.contains("/stream")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access log line");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.starts_with("127.0.0.1 ") && line.contains("\"GET /stream?a=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200));
    assert_eq!(request(s.addr(), &long).status, 414);
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn fastapi_routes_json_streaming_upload_and_lifespan() {
    let mut s = asgi_in_venv("fastapi_app:app", &[]).start();
    s.wait_log("fastapi startup", Duration::from_secs(5));
    let r = s.get("/items/42?q=hi");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"item_id": 42, "q": "hi"}));
    assert_eq!(s.get("/items/notanint").status, 422);

    let body = br#"{"name": "pen", "price": 1.5, "tags": ["a"]}"#;
    let raw = format!(
        "POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let r = request(s.addr(), &raw);
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "pen", "total": 3.0, "tags": ["a"]})
    );

    assert_eq!(s.get("/state").json()["db"], "connected");
    let r = s.get("/stream");
    assert_eq!(r.text().lines().count(), 50);

    let upload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let r = post(&s, "/upload", &upload, true).json();
    assert_eq!(r["size"], upload.len());
    assert_eq!(r["sha256"].as_str().unwrap().len(), 64);

    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(15)).success());
    assert!(s.log_text().contains("fastapi shutdown"));
}

mod websockets {
    use super::*;
    use std::net::TcpStream;
    use tungstenite::client::IntoClientRequest;
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::{Message, WebSocket};

    fn connect(s: &Server, path: &str, protocol: Option<&str>) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(s.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = format!("ws://{}{path}", s.addr())
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        let (ws, resp) = tungstenite::client(req, stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        ws
    }

    fn next_data(ws: &mut WebSocket<TcpStream>) -> Message {
        loop {
            match ws.read().expect("a message") {
                Message::Ping(_) | Message::Pong(_) => continue,
                m => return m,
            }
        }
    }

    #[test]
    fn echo_text_and_binary_with_subprotocol_and_ping() {
        let s = asgi("asgi_raw:app", &[]).start();
        let stream = TcpStream::connect(s.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut req = format!("ws://{}/ws/echo", s.addr())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "other, chat".parse().unwrap());
        let (mut ws, resp) = tungstenite::client(req, stream).expect("handshake");
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
        assert_eq!(resp.headers()["x-ws"], "yes");

        ws.send(Message::text("hello")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("echo:hello"));
        ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
        assert_eq!(next_data(&mut ws), Message::binary(vec![3u8, 2, 1]));
        ws.send(Message::text("scope")).unwrap();
        let Message::Text(t) = next_data(&mut ws) else {
            panic!("text expected")
        };
        let scope: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(scope["type"], "websocket");
        assert_eq!(scope["scheme"], "ws");
        assert_eq!(scope["subprotocols"], serde_json::json!(["other", "chat"]));

        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .unwrap();
        let pong = match ws.read().unwrap() {
            Message::Pong(p) => p,
            other => panic!("expected a pong, got {other:?}"),
        };
        assert_eq!(&pong[..], b"are you there");

        // Many messages at once: more than either queue holds.
        for i in 0..300 {
            ws.send(Message::text(format!("m{i}"))).unwrap();
        }
        for i in 0..300 {
            match ws.read() {
                Ok(m) => assert_eq!(m, Message::text(format!("echo:m{i}"))),
                Err(e) => panic!("echo {i}: {e}\n{}", s.log_text()),
            }
        }

        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        s.wait_log("ws disconnect 1000", Duration::from_secs(5));
    }

    #[test]
    fn close_codes_limits_and_refusal() {
        let s = asgi("asgi_raw:app", &["--websocket-max-message-size", "1024"]).start();
        let mut ws = connect(&s, "/ws/echo", None);
        ws.send(Message::text("close-me")).unwrap();
        match next_data(&mut ws) {
            Message::Close(Some(f)) => {
                assert_eq!(f.code, CloseCode::from(4001));
                assert_eq!(f.reason.as_str(), "asked");
            }
            other => panic!("expected close 4001, got {other:?}"),
        }

        let mut ws = connect(&s, "/ws/echo", None);
        ws.send(Message::binary(vec![7u8; 2000])).unwrap();
        match next_data(&mut ws) {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Size),
            other => panic!("expected close 1009, got {other:?}"),
        }
        s.wait_log("ws disconnect 1009", Duration::from_secs(5));

        let stream = TcpStream::connect(s.addr()).unwrap();
        let req = format!("ws://{}/ws/refuse", s.addr())
            .into_client_request()
            .unwrap();
        match tungstenite::client(req, stream) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                assert_eq!(resp.status(), 403)
            }
            other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
        }
        assert_eq!(s.get("/").text(), "hello asgi");
    }

    #[test]
    fn graceful_stop_closes_open_websockets_with_1001() {
        let mut s = asgi("asgi_raw:app", &["--graceful-timeout", "10"]).start();
        let mut ws = connect(&s, "/ws/echo", None);
        ws.send(Message::text("before")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("echo:before"));
        let t0 = Instant::now();
        s.signal(libc::SIGTERM);
        match next_data(&mut ws) {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
        assert!(s.wait_exit(Duration::from_secs(15)).success());
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
        assert!(s.log_text().contains("ws disconnect 1001"));
    }

    #[test]
    fn an_upgrade_in_place_closes_old_websockets_with_1001_and_serves_new_ones() {
        let s = asgi("asgi_raw:app", &[]).start();
        // USR2 before the master counts the worker ready would be refused.
        s.wait_log("Ready: ", Duration::from_secs(20));
        let mut old = connect(&s, "/ws/echo", None);
        old.send(Message::text("a")).unwrap();
        assert_eq!(next_data(&mut old), Message::text("echo:a"));
        s.signal(libc::SIGUSR2);
        match next_data(&mut old) {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
            other => panic!("expected close 1001, got {other:?}"),
        }
        s.wait_log("Upgraded in place", Duration::from_secs(20));
        let mut new = connect(&s, "/ws/echo", None);
        new.send(Message::text("b")).unwrap();
        assert_eq!(next_data(&mut new), Message::text("echo:b"));
    }

    #[test]
    #[cfg_attr(
        not(feature = "full"),
        ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
    )]
    fn fastapi_websocket_echo() {
        let s = asgi_in_venv("fastapi_app:app", &[]).start();
        let mut ws = connect(&s, "/ws", None);
        ws.send(Message::text("hi")).unwrap();
        let Message::Text(t) = next_data(&mut ws) else {
            panic!("text expected")
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            serde_json::json!({"echo": "hi"})
        );
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .unwrap();
        let _ = ws.read();
        s.wait_log("fastapi ws closed 1000", Duration::from_secs(5));
    }
}
