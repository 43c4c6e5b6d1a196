//! A bare hyper "Hello, World!" server: the speed ceiling for ferricorn.
//! Usage: hyper-hello ADDR PROCESSES

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(b"Hello, World!")))
        .unwrap())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8000".into());
    let procs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
    let listener = std::net::TcpListener::bind(&addr).expect("bind");
    listener.set_nonblocking(true).unwrap();
    for _ in 1..procs {
        // SAFETY: single-threaded before any runtime starts; the child asks
        // to be terminated with its parent so stopping one stops both.
        if unsafe { libc::fork() } == 0 {
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
            break;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    });
}
