//! A worker survives what an app or a client does to it.

mod common;

use common::*;

#[test]
fn an_app_writing_to_a_closed_pipe_gets_broken_pipe_error_and_the_worker_lives() {
    let venv = test_venv().display().to_string();
    for class in ["sync", "gthread", "gevent"] {
        let s = server("conformance:app")
            .args(["-k", class, "--virtualenv", &venv])
            .start();
        let before = s.workers();
        let r = request(
            s.addr(),
            "GET /broken-pipe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{class}");
        if class != "gevent" {
            // (gevent's patched os.write reports no error here, under gunicorn too.)
            assert_eq!(r.text(), "BrokenPipeError", "{class}");
        }
        assert_eq!(s.workers(), before, "{class}: the worker was not replaced");
    }
}
