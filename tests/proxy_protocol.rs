//! `--proxy-protocol`: a load balancer's PROXY header (v1 text, v2 binary)
//! names the real client, which the app sees in REMOTE_ADDR and the access
//! log shows; a header from a peer outside `--proxy-allow-from` is refused.
//! gunicorn 27, given the same bytes, agrees.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn v1() -> Vec<u8> {
    b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n".to_vec()
}

fn v2() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1]);
    h.extend_from_slice(&4242u16.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

/// Send `header` and a request for the environ on one write; the whole answer.
fn exchange(addr: SocketAddr, header: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn environ_of(answer: &str) -> serde_json::Value {
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"))
}

fn remote(env: &serde_json::Value) -> (String, String) {
    (
        env["REMOTE_ADDR"].as_str().unwrap().to_string(),
        env["REMOTE_PORT"].as_str().unwrap().to_string(),
    )
}

fn pair(a: &str, p: &str) -> (String, String) {
    (a.to_string(), p.to_string())
}

#[test]
fn the_headers_client_is_the_apps_remote_addr_and_the_access_logs() {
    let s = server("conformance:app")
        .args(["-w", "1", "-k", "gthread", "--proxy-protocol"])
        .args(["--access-logfile", "-"])
        .start();
    let env = environ_of(&exchange(s.addr(), &v1()));
    assert_eq!(remote(&env), pair("203.0.113.7", "51234"));
    let env = environ_of(&exchange(s.addr(), &v2()));
    assert_eq!(remote(&env), pair("198.51.100.9", "4242"));
    // No header: plain HTTP, the socket's own peer.
    let env = environ_of(&exchange(s.addr(), b""));
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !s.stdout_text().contains("198.51.100.9 - - [") {
        assert!(std::time::Instant::now() < deadline, "{}", s.stdout_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.stdout_text().contains("203.0.113.7 - - ["));
}

#[test]
fn a_header_from_a_peer_not_allowed_or_malformed_is_refused() {
    let s = server("conformance:app")
        .args(["-w", "1", "--proxy-protocol", "v1"])
        .args(["--proxy-allow-from", "10.0.0.0/8, 192.168.1.1"])
        .start();
    let answer = exchange(s.addr(), &v1());
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    s.wait_log(
        "a PROXY header from a peer not in proxy_allow_ips",
        Duration::from_secs(10),
    );
    // v1 only: a v2 header is not read, and is no HTTP either.
    let answer = exchange(s.addr(), &v2());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    drop(s);
    let s = server("conformance:app")
        .args(["-w", "1", "--proxy-protocol", "auto"])
        .start();
    let answer = exchange(s.addr(), b"PROXY TCP4 203.0.113.7 10.0.0.1 51234\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    s.wait_log("invalid PROXY line", Duration::from_secs(10));
}

#[test]
fn a_bad_allow_list_is_refused_before_anything_is_bound() {
    let mut s = server("conformance:app")
        .args(["--proxy-protocol", "--proxy-allow-from", "10.0.0.0/40"])
        .spawn();
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    let log = s.log_text();
    assert!(log.contains("setting `proxy_allow_ips`"), "{log}");
    assert!(!log.contains("Listening at"), "{log}");
}

/// gunicorn 27 with `--proxy-protocol auto`, the same bytes: the same REMOTE_ADDR.
#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: needs the test virtualenv (scripts/install-deps.sh && cargo test --features full)"
)]
fn gunicorn_sees_the_same_clients() {
    let s = server("conformance:app")
        .args(["-w", "1", "--proxy-protocol", "auto"])
        .start();
    let gunicorn = Gunicorn::start(&["-w", "1", "--proxy-protocol", "auto"], "conformance:app");
    let theirs = gunicorn.addr;
    for header in [v1(), v2()] {
        let ours = remote(&environ_of(&exchange(s.addr(), &header)));
        let gunicorns = remote(&environ_of(&exchange(theirs, &header)));
        assert_eq!(ours, gunicorns);
    }
}
