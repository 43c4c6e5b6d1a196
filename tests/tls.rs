//! TLS (rustls) with gunicorn's settings: versions, client certificates,
//! refusals at start, rotation on HUP under load, root-only keys.
//! Clients are Python's `ssl` and httpx (tests/clients/tls_client.py).

mod common;

use common::pki::{Pki, client, client_in_background, finish};
use common::*;
use std::time::Duration;

fn tls_server(pki: &Pki, app: &str, extra: &[&str]) -> Server {
    server(app)
        .args(["--virtualenv", test_venv().to_str().unwrap()])
        .args(["--certfile", &pki.arg("server.pem")])
        .args(["--keyfile", &pki.arg("server.key")])
        .args(extra.iter().copied())
        .start()
}

fn url(s: &Server, path: &str) -> String {
    format!("https://localhost:{}{path}", s.addr().port())
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn https_is_served_over_tls_1_2_and_1_3_and_the_app_knows_it() {
    let pki = Pki::new();
    for class in ["sync", "gthread", "gevent"] {
        let s = tls_server(&pki, "tls_probe:app", &["-k", class]);
        for (tls, expect) in [("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
            let r = client(&[
                "get",
                &url(&s, "/probe?x=1"),
                "--ca",
                &pki.arg("ca.pem"),
                "--tls",
                tls,
            ]);
            assert_eq!(r["status"], 200, "{class} {tls}: {r}");
            let env = &r["body"];
            assert_eq!(env["wsgi.url_scheme"], "https", "{class}: {env}");
            assert_eq!(env["SSL_PROTOCOL"], expect, "{env}");
            assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
            assert_eq!(env["QUERY_STRING"], "x=1");
            assert!(env["SSL_CLIENT_CERT"].is_null(), "no client cert: {env}");
        }
        // Plain HTTP on a TLS port is not served: a TLS alert, then the end.
        let mut c = Conn::open(s.addr());
        c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut c.stream, &mut got).expect("closed, not timed out");
        assert!(
            !got.starts_with(b"HTTP/"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn asgi_scope_has_the_scheme_and_the_tls_extension() {
    let pki = Pki::new();
    let s = tls_server(
        &pki,
        "tls_probe:asgi_app",
        &[
            "-k",
            "asgi",
            "--ca-certs",
            &pki.arg("ca.pem"),
            "--cert-reqs",
            "1",
        ],
    );
    let r = client(&[
        "get",
        &url(&s, "/a"),
        "--ca",
        &pki.arg("ca.pem"),
        "--cert",
        &pki.arg("client.pem"),
        "--key",
        &pki.arg("client.key"),
        "--tls",
        "1.3",
    ]);
    let scope = &r["body"];
    assert_eq!(scope["scheme"], "https", "{r}");
    assert_eq!(scope["http_version"], "1.1");
    let tls = &scope["tls"];
    assert_eq!(tls["tls_version"], 0x0304, "{tls}");
    assert!(tls["cipher_suite"].as_u64().unwrap() > 0);
    let client_pem = std::fs::read_to_string(pki.path("client.pem")).unwrap();
    assert_eq!(tls["client_cert_chain"][0], client_pem.as_str(), "{tls}");
    // The subject as OpenSSL writes it (RFC 4514), escaped comma and all.
    let subject = pki.subject("client.pem");
    assert_eq!(subject, "CN=test client,O=Example\\, Inc.");
    assert_eq!(tls["client_cert_name"], subject.as_str(), "{tls}");
}

#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn client_certificates_are_required_or_optional_and_reach_the_app() {
    let pki = Pki::new();
    // A certificate from a CA the server does not trust.
    let other = Pki::new();
    let client_pem = std::fs::read_to_string(pki.path("client.pem")).unwrap();
    let get = |s: &Server, cert: Option<&Pki>| {
        let mut args = vec![
            "get".to_string(),
            url(s, "/"),
            "--ca".into(),
            pki.arg("ca.pem"),
        ];
        if let Some(p) = cert {
            args.extend([
                "--cert".into(),
                p.arg("client.pem"),
                "--key".into(),
                p.arg("client.key"),
            ]);
        }
        client(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let required = tls_server(
        &pki,
        "tls_probe:app",
        &["--ca-certs", &pki.arg("ca.pem"), "--cert-reqs", "2"],
    );
    let r = get(&required, Some(&pki));
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"]["SSL_CLIENT_CERT"], client_pem.as_str());
    assert_eq!(
        r["body"]["SSL_CLIENT_S_DN"],
        pki.subject("client.pem").as_str()
    );
    let r = get(&required, None);
    assert!(r["error"].is_string(), "no certificate: refused, got {r}");
    let r = get(&required, Some(&other));
    assert!(
        r["error"].is_string(),
        "untrusted certificate: refused, got {r}"
    );

    let optional = tls_server(
        &pki,
        "tls_probe:app",
        &["--ca-certs", &pki.arg("ca.pem"), "--cert-reqs", "1"],
    );
    let r = get(&optional, None);
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["body"]["SSL_CLIENT_CERT"].is_null());
    let r = get(&optional, Some(&pki));
    assert_eq!(r["body"]["SSL_CLIENT_CERT"], client_pem.as_str());
    let r = get(&optional, Some(&other));
    assert!(
        r["error"].is_string(),
        "an untrusted one is still refused: {r}"
    );
}

/// Refused at start: one line naming the setting and the file, exit 2, and
/// the port never bound.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the openssl command")]
fn a_bad_certificate_or_key_is_refused_before_anything_is_bound() {
    let pki = Pki::new();
    let other = Pki::new();
    std::fs::write(pki.path("garbage.pem"), "not a certificate\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<String>, &str, String)> = vec![
        (
            vec![
                "--certfile".into(),
                pki.arg("garbage.pem"),
                "--keyfile".into(),
                pki.arg("server.key"),
            ],
            "setting `certfile`",
            pki.arg("garbage.pem"),
        ),
        (
            vec![
                "--certfile".into(),
                pki.arg("server.pem"),
                "--keyfile".into(),
                pki.arg("server.pem"),
            ],
            "setting `keyfile`",
            pki.arg("server.pem"),
        ),
        (
            vec![
                "--certfile".into(),
                pki.arg("server.pem"),
                "--keyfile".into(),
                other.arg("server.key"),
            ],
            "setting `keyfile`",
            other.arg("server.key"),
        ),
        (
            vec![
                "--certfile".into(),
                pki.arg("missing.pem"),
                "--keyfile".into(),
                pki.arg("server.key"),
            ],
            "setting `certfile`",
            pki.arg("missing.pem"),
        ),
        (
            vec![
                "--certfile".into(),
                pki.arg("server.pem"),
                "--keyfile".into(),
                pki.arg("server.key"),
                "--cert-reqs".into(),
                "2".into(),
            ],
            "setting `cert_reqs`",
            "ca_certs".into(),
        ),
        (
            vec![
                "--certfile".into(),
                pki.arg("server.pem"),
                "--keyfile".into(),
                pki.arg("server.key"),
                "--ciphers".into(),
                "HIGH:!aNULL".into(),
            ],
            "setting `ciphers`",
            "HIGH".into(),
        ),
    ];
    for (args, setting, named) in cases {
        let mut s = command()
            .args(["-b", &bind, "--chdir", &apps_dir().display().to_string()])
            .args(args.clone())
            .arg("tls_probe:app")
            .spawn();
        let status = s.wait_exit(Duration::from_secs(20));
        let log = s.log_text();
        assert_eq!(status.code(), Some(2), "{args:?}: {log}");
        assert_eq!(log.lines().count(), 1, "{args:?}: one line: {log}");
        assert!(
            log.contains(setting) && log.contains(&named),
            "{args:?}: {log}"
        );
        // Nothing was bound: the port is still free.
        std::net::TcpListener::bind(&bind).expect("port left unbound");
    }
}

/// Replace the certificate and key, then HUP (and, in a second round, USR2:
/// the new image reads them again): new handshakes get the new certificate,
/// and of the requests made meanwhile (a new TLS connection each) none fails.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn certificates_rotate_on_hup_and_usr2_under_load_without_a_failed_request() {
    let pki = Pki::new();
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let access = live.path().join("access.log");
    let s = server("tls_probe:app")
        .args(["-k", "gthread", "--threads", "4", "-w", "2"])
        .args(["--certfile", cert.to_str().unwrap()])
        .args(["--keyfile", key.to_str().unwrap()])
        .args(["--access-logfile", access.to_str().unwrap()])
        .wait_workers(2)
        .start();
    s.wait_log("Ready: ", Duration::from_secs(30));
    let answered = || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let stop = live.path().join("stop");
    let port = s.addr().port().to_string();
    let load = client_in_background(&[
        "handshakes",
        "127.0.0.1",
        &port,
        "--ca",
        &pki.arg("ca.pem"),
        "--until",
        stop.to_str().unwrap(),
    ]);
    for (round, (signal, name)) in [(libc::SIGHUP, "server2"), (libc::SIGUSR2, "server3")]
        .into_iter()
        .enumerate()
    {
        // Another server certificate from the same CA.
        pki.issue(name, "/CN=localhost", common::pki::SERVER);
        let served = s.count(") loaded ");
        std::fs::copy(pki.path(&format!("{name}.pem")), &cert).unwrap();
        std::fs::copy(pki.path(&format!("{name}.key")), &key).unwrap();
        s.signal(signal);
        s.wait_count("Reload complete", round + 1, Duration::from_secs(60));
        assert!(s.count(") loaded ") >= served + 2);
        // The old workers gone: every handshake from now on is a new worker's.
        s.wait_worker_count(2, Duration::from_secs(30));
    }
    // Some requests answered by the last workers, with the last certificate.
    let now = answered();
    wait_until(Duration::from_secs(20), "the load stopped", || {
        answered() >= now + 20
    });
    std::fs::write(&stop, "").unwrap();
    let r = finish(load);
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["ok"].as_u64().unwrap() >= 20, "{r}");
    // While old and new workers both accept, handshakes alternate between
    // their certificates; each new one appears once its reload began, and
    // the last workers' is the only one at the end.
    let certs = r["certs"].as_array().unwrap();
    let mut first_seen: Vec<&serde_json::Value> = Vec::new();
    for c in certs {
        if !first_seen.contains(&c) {
            first_seen.push(c);
        }
    }
    assert_eq!(first_seen.len(), 3, "three certificates in turn: {r}");
    assert_eq!(
        certs.last(),
        first_seen.last().copied(),
        "the last one at the end: {r}"
    );
}

/// A key only root may read: the master reads it, workers run as nobody.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: runs as root")]
fn a_root_only_key_is_read_by_the_master_for_unprivileged_workers() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    std::fs::set_permissions(
        pki.path("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // No venv: the workers (nobody) may not be able to read the test's.
    let site = readable_copy("tls_probe.py");
    let s = command()
        .args([
            "-b",
            "127.0.0.1:0",
            "--chdir",
            site.path().to_str().unwrap(),
        ])
        .args(["--certfile", &pki.arg("server.pem")])
        .args(["--keyfile", &pki.arg("server.key")])
        .args(["--user", "nobody", "--group", "nogroup", "tls_probe:app"])
        .cwd(site.path())
        .start();
    let worker = s.workers()[0];
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.contains("65534"), "worker runs as nobody: {uid}");
    let r = client(&["get", &url(&s, "/"), "--ca", &pki.arg("ca.pem")]);
    assert_eq!(r["status"], 200, "{r}");
}

/// gunicorn with the same certificate: the environ keys both set agree.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn the_environ_over_tls_matches_gunicorns() {
    let pki = Pki::new();
    let s = tls_server(&pki, "tls_probe:app", &[]);
    let g = Gunicorn::start(
        &[
            "--certfile",
            &pki.arg("server.pem"),
            "--keyfile",
            &pki.arg("server.key"),
        ],
        "tls_probe:app",
    );
    let ours = client(&["get", &url(&s, "/p?q=1"), "--ca", &pki.arg("ca.pem")]);
    let theirs = client(&[
        "get",
        &format!("https://localhost:{}/p?q=1", g.addr.port()),
        "--ca",
        &pki.arg("ca.pem"),
    ]);
    for key in [
        "wsgi.url_scheme",
        "SERVER_PROTOCOL",
        "RAW_URI",
        "PATH_INFO",
        "QUERY_STRING",
    ] {
        assert_eq!(
            ours["body"][key], theirs["body"][key],
            "{key}: {ours} vs {theirs}"
        );
    }
}

/// A reload that cannot read the new certificate is refused with the
/// setting and the file named; the running workers keep serving.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn a_reload_with_a_broken_certificate_keeps_the_running_workers() {
    let pki = Pki::new();
    let live = tempfile::tempdir().unwrap();
    let cert = live.path().join("cert.pem");
    std::fs::copy(pki.path("server.pem"), &cert).unwrap();
    let s = server("tls_probe:app")
        .args(["--certfile", cert.to_str().unwrap()])
        .args(["--keyfile", &pki.arg("server.key")])
        .start();
    let workers = s.workers();
    std::fs::write(&cert, "truncated\n").unwrap();
    s.signal(libc::SIGHUP);
    let line = s.wait_log("setting `certfile`", Duration::from_secs(20));
    assert!(line.contains(cert.to_str().unwrap()), "{line}");
    assert_eq!(s.workers(), workers, "the workers stay");
    let r = client(&["get", &url(&s, "/"), "--ca", &pki.arg("ca.pem")]);
    assert_eq!(r["status"], 200, "{r}");
}

/// Idle TLS keep-alive connections in a crowded worker (over 256) are
/// parked like plain ones (hyper's buffers freed); each is served again.
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn idle_tls_connections_in_a_crowded_worker_are_served_again() {
    let pki = Pki::new();
    let s = tls_server(
        &pki,
        "tls_probe:app",
        &[
            "-k",
            "gthread",
            "--keep-alive",
            "30",
            "--worker-connections",
            "1000",
        ],
    );
    let r = client(&[
        "idle",
        "127.0.0.1",
        &s.addr().port().to_string(),
        "400",
        "--ca",
        &pki.arg("ca.pem"),
    ]);
    assert_eq!(r["connections"], 400, "{r}");
    assert_eq!(r["failed_second"], 0, "{r}");
}

/// At the connection limit with no connection idle, a TLS client gets its
/// 503 inside TLS (in plain text it could not read it).
#[test]
#[cfg_attr(not(feature = "full"), ignore = "full tier: needs the test virtualenv")]
fn at_the_connection_limit_a_tls_client_gets_its_503_over_tls() {
    let pki = Pki::new();
    let s = tls_server(
        &pki,
        "conformance:app",
        &[
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "4",
            "--worker-connections",
            "4",
        ],
    );
    let slow = url(&s, "/sleep-logged?5");
    let busy: Vec<_> = (0..4)
        .map(|_| client_in_background(&["get", &slow, "--ca", &pki.arg("ca.pem")]))
        .collect();
    // Every slot holds a request in progress.
    s.wait_count("sleeping 5", 4, Duration::from_secs(10));
    let t0 = std::time::Instant::now();
    let r = client(&["get", &url(&s, "/pid"), "--ca", &pki.arg("ca.pem")]);
    assert_eq!(r["status"], 503, "{r}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    for b in busy {
        assert_eq!(finish(b)["status"], 200);
    }
}
