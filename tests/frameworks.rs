//! Real frameworks from PyPI, in a virtualenv the test suite makes.

mod common;

use common::*;

fn post(s: &Server, path: &str, ctype: &str, body: &str) -> Response {
    request(
        s.addr(),
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn flask_app_answers_correctly() {
    let venv = test_venv();
    for class in ["sync", "gthread", "gevent"] {
        let s = server("flaskapp:app")
            .args(["--virtualenv", venv.to_str().unwrap(), "-k", class])
            .start();
        let r = s.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "Hello from Flask"));
        let r = s.get("/items/42?q=hello%20world").json();
        assert_eq!(
            r,
            serde_json::json!({"id": 42, "name": "item 42", "q": "hello world"})
        );
        let r = post(
            &s,
            "/form",
            "application/x-www-form-urlencoded",
            "name=Ada+Lovelace&age=36",
        );
        assert_eq!(r.text(), "name=Ada Lovelace age=36");
        let r = post(
            &s,
            "/json",
            "application/json",
            r#"{"a": [1, 2, 3], "b": "c"}"#,
        )
        .json();
        assert_eq!(
            r,
            serde_json::json!({"received": {"a": [1, 2, 3], "b": "c"}, "count": 2})
        );
        let r = s.get("/big");
        assert_eq!(r.header("content-length"), Some("100000"));
        assert_eq!(r.body.len(), 100000);
        assert_eq!(s.get("/missing").status, 404);
        let r = post(&s, "/", "text/plain", "x");
        assert_eq!(r.status, 405);
    }
}

/// Flask answers with an iterator over its body and a Content-Length: the
/// body goes out with the head, so under load the app thread can hand
/// responses back to the I/O thread a few at a time (as a streamed body,
/// each response woke the I/O thread for its head, its chunk and its end).
#[test]
fn flask_responses_are_handed_back_in_batches_under_load() {
    let venv = test_venv();
    let s = server("flaskapp:app")
        .args(["--virtualenv", venv.to_str().unwrap()])
        .args(["-w", "1", "-k", "gthread", "--threads", "2"])
        .start();
    let r = s.get("/");
    assert_eq!(r.header("content-length"), Some("16"));
    assert_responses_batched(&s, "/");
}

#[test]
fn virtualenv_is_sys_prefix_and_its_packages_import() {
    let venv = test_venv();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("prefix_app.py"),
        "import sys, flask\ndef app(e, sr):\n    sr('200 OK', [])\n    return [sys.prefix.encode()]\n",
    )
    .unwrap();
    let s = server("prefix_app:app")
        .args(["--chdir", dir.path().to_str().unwrap()])
        .env("VIRTUAL_ENV", venv.to_str().unwrap())
        .start();
    assert_eq!(s.get("/").text(), venv.to_str().unwrap());
}

fn django(app: &str, extra: &[&str]) -> Server {
    let venv = test_venv();
    let dir = apps_dir().join("djangoproj");
    server(app)
        .args([
            "--virtualenv",
            venv.to_str().unwrap(),
            "--chdir",
            dir.to_str().unwrap(),
        ])
        .args(extra.iter().copied())
        .start()
}

#[test]
fn django_async_views_under_asgi() {
    let s = django("mysite:asgi_application", &["-k", "asgi", "-w", "1"]);
    django_answers_correctly(&s);
    // Django has no lifespan support: auto notices and carries on.
    s.wait_log("appears unsupported", std::time::Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    let naps = concurrent_gets(s.addr(), "/nap/?s=1", 20);
    for n in naps {
        assert_eq!(n.join().unwrap().text(), "async nap");
    }
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(4),
        "20 async naps of 1 s on one worker took {:?}",
        t0.elapsed()
    );
}

#[test]
fn django_project_answers_correctly() {
    django_answers_correctly(&django("mysite", &[]));
}

fn django_answers_correctly(s: &Server) {
    let r = s.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello from Django"));
    let r = s.get("/items/7/").json();
    assert_eq!(
        r,
        serde_json::json!({"id": 7, "path": "/items/7/", "scheme": "http"})
    );
    let r = post(
        s,
        "/echo/",
        "application/x-www-form-urlencoded",
        "a=1&b=two",
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"form": {"a": "1", "b": "two"}, "method": "POST"})
    );
    let r = post(s, "/echo/", "application/json", r#"{"k": [true, null]}"#);
    assert_eq!(r.json(), serde_json::json!({"json": {"k": [true, null]}}));
    // CommonMiddleware's APPEND_SLASH redirect.
    let r = s.get("/items/7");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/items/7/"));
}
