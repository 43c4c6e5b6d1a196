//! An HTTP/2 connection (ALPN `h2` over TLS, or cleartext by prior
//! knowledge): hyper's HTTP/2 server with the same per-request service as
//! HTTP/1.1, so each stream reaches the app as one request with the
//! environ or scope HTTP/1.1 would give it.
//!
//! hyper's HTTP/2 side carries what HTTP/1.1 needs `IdleIo` and the
//! framing authority for: framing and flow control are the protocol's own
//! (one stream's unread body holds only its own window). What it lacks is
//! an idle limit and a drain, added here: a connection without a stream in
//! progress for `--keep-alive` seconds (a sync worker's: a moment), or in a
//! stopping worker, gets a GOAWAY; streams already begun are answered first.

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

use super::serve::Serving;
use crate::config::WorkerClass;
use crate::http::idle::{ConnState, Open};
use crate::http::service::{self, Limits};
use crate::http::shutdown::stopping;
use crate::request::Peer;
use crate::request::response::error_response;
use crate::tls::TlsInfo;
use http::StatusCode;

/// How long a sync worker's HTTP/2 connection may sit without a stream
/// before its GOAWAY (it closes one to two of these after its last one).
/// Not at once: a client that reads the end of an answer and the GOAWAY in
/// one go may take the GOAWAY as its request's failure (Python's h2 does).
const SYNC_IDLE: Duration = Duration::from_millis(250);

/// `--http2-*`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub max_streams: u32,
    pub window: u32,
    pub max_frame: u32,
    pub max_header_list: u32,
}

impl Settings {
    fn builder(&self) -> http2::Builder<TokioExecutor> {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.max_concurrent_streams(self.max_streams)
            .initial_stream_window_size(self.window)
            // The connection's window holds every stream's: one stream that
            // fills its own leaves the others room.
            .initial_connection_window_size(self.window.saturating_mul(4).max(1 << 20))
            .max_frame_size(self.max_frame)
            .max_header_list_size(self.max_header_list);
        b
    }
}

pub(super) async fn connection<S>(
    stream: S,
    peer: Peer,
    tls: Option<Arc<TlsInfo>>,
    serving: Serving,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Serving {
        shared,
        conf,
        local,
        mut shutdown,
    } = serving;
    let Some(settings) = conf.h2 else {
        return;
    };
    let _open = Open::count();
    let state = Arc::new(ConnState::default());
    let svc = {
        let (shared, state) = (shared.clone(), state.clone());
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            origin_form(&mut req);
            if let Some((status, why)) = over_limits(&req, &shared.limits) {
                crate::warning!("Invalid request from {}: {why}", peer.ip_string());
                return service::Reply::Now(Some(Box::new(error_response(status, &why))));
            }
            if let Some(info) = &tls {
                req.extensions_mut().insert(info.clone());
            }
            service::handle(&shared, &state, peer, &local, req)
        })
    };
    let conn = settings
        .builder()
        .serve_connection(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    let mut room = conf.room.subscribe();
    // A sync worker serves one connection at a time: it keeps one only
    // while its client is busy with it, not for --keep-alive.
    let limit = match conf.class {
        WorkerClass::Sync => SYNC_IDLE,
        _ => conf.idle,
    };
    let mut idle = tokio::time::interval(limit);
    idle.tick().await;
    let mut seen = 0;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stopping(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                break conn.as_mut().await;
            }
            _ = room.changed() => {
                if state.busy.load(Ordering::Relaxed) == 0 {
                    conn.as_mut().graceful_shutdown();
                    break conn.as_mut().await;
                }
            }
            _ = idle.tick() => {
                let requests = state.requests.load(Ordering::Relaxed);
                if state.busy.load(Ordering::Relaxed) == 0 && requests == seen {
                    conn.as_mut().graceful_shutdown();
                    break conn.as_mut().await;
                }
                seen = requests;
            }
        }
    };
    if let Err(e) = result {
        crate::debug!("HTTP/2 connection from {} ended: {e}", peer.ip_string());
    }
}

/// gunicorn's request limits (`--limit-request-line`, `-fields`,
/// `-field_size`), which HTTP/1.1's framing authority applies to the head
/// as sent: here to the stream's decoded fields, counted as the same
/// request would be on HTTP/1.1. (`--http2-max-header-list-size` bounds
/// only their total, in hyper.)
fn over_limits<B>(req: &hyper::Request<B>, limits: &Limits) -> Option<(StatusCode, String)> {
    let target = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    // "METHOD TARGET HTTP/2.0"
    let line = req.method().as_str().len() + 1 + target + 9;
    if line > limits.request_line {
        return Some((
            StatusCode::URI_TOO_LONG,
            format!(
                "Request Line is too large ({line} > {})",
                limits.request_line
            ),
        ));
    }
    if req.headers().len() > limits.fields {
        return Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("Too many header fields (over {})", limits.fields),
        ));
    }
    for (name, value) in req.headers() {
        // "name: value" and its CRLF.
        let size = name.as_str().len() + 2 + value.len() + 2;
        if size > limits.field_size {
            return Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("Header field is too large ({size} > {})", limits.field_size),
            ));
        }
    }
    None
}

/// An HTTP/2 request names its host in `:authority` and its scheme in
/// `:scheme`; the app sees them as an HTTP/1.1 request's: a Host header and
/// an origin-form target.
fn origin_form<B>(req: &mut hyper::Request<B>) {
    let Some(authority) = req.uri().authority().cloned() else {
        return;
    };
    if !req.headers().contains_key(http::header::HOST)
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_becomes_the_host_and_the_target_origin_form() {
        let mut req = hyper::Request::builder()
            .uri("https://example.com:8443/a/b?c=d")
            .body(())
            .unwrap();
        origin_form(&mut req);
        assert_eq!(req.uri().to_string(), "/a/b?c=d");
        assert_eq!(req.headers()["host"], "example.com:8443");
    }

    #[test]
    fn gunicorns_request_limits_apply_to_a_stream() {
        let limits = Limits {
            request_line: 30,
            fields: 2,
            field_size: 20,
        };
        let req = |uri: &str, headers: &[(&str, &str)]| {
            let mut b = hyper::Request::builder().uri(uri);
            for (n, v) in headers {
                b = b.header(*n, *v);
            }
            b.body(()).unwrap()
        };
        assert!(over_limits(&req("/short", &[("a", "b")]), &limits).is_none());
        let long = format!("/{}", "x".repeat(30));
        assert_eq!(
            over_limits(&req(&long, &[]), &limits).unwrap().0,
            StatusCode::URI_TOO_LONG
        );
        let many = [("a", "1"), ("b", "2"), ("c", "3")];
        assert_eq!(
            over_limits(&req("/", &many), &limits).unwrap().0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = "v".repeat(20);
        assert_eq!(
            over_limits(&req("/", &[("x", &big)]), &limits).unwrap().0,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn a_host_header_sent_stays() {
        let mut req = hyper::Request::builder()
            .uri("https://example.com/")
            .header("host", "other")
            .body(())
            .unwrap();
        origin_form(&mut req);
        assert_eq!(req.headers()["host"], "other");
    }
}
