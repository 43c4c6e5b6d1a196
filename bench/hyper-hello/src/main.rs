//! A bare hyper "Hello, World!" server: the speed ceiling for ferricorn.
//! Usage: hyper-hello ADDR PROCESSES   (ADDR: HOST:PORT or unix:PATH)

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
    enum Listener {
        Tcp(std::net::TcpListener),
        Unix(std::os::unix::net::UnixListener),
    }
    let listener = match addr.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let l = std::os::unix::net::UnixListener::bind(path).expect("bind");
            l.set_nonblocking(true).unwrap();
            Listener::Unix(l)
        }
        None => {
            let l = std::net::TcpListener::bind(&addr).expect("bind");
            l.set_nonblocking(true).unwrap();
            Listener::Tcp(l)
        }
    };
    for _ in 1..procs {
        // SAFETY: single-threaded before any runtime starts; the child asks
        // to be terminated with its parent so stopping one stops both.
        if unsafe { libc::fork() } == 0 {
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };
            break;
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match listener {
            Listener::Tcp(l) => {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    let Ok((stream, _)) = l.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream));
                }
            }
            Listener::Unix(l) => {
                let l = tokio::net::UnixListener::from_std(l).unwrap();
                loop {
                    let Ok((stream, _)) = l.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(stream));
                }
            }
        }
    });
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(hello))
        .await;
}
