//! The per-request service: enforce gunicorn's limits, then hand the request
//! to an app thread and wait for its response head.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body, Incoming};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::sync::{oneshot, watch};

use super::body::{BusyGuard, ResponseBody};
use super::idle::ConnState;
use super::websocket;
use crate::worker::Stats;
use crate::wsgi::{Job, Local, Peer};

/// gunicorn's request limits, resolved from the settings.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub request_line: usize,
    pub fields: usize,
    pub field_size: usize,
}

/// What every connection of a worker shares.
pub struct Shared {
    pub jobs: crate::worker::Jobs,
    pub limits: Limits,
    pub stats: Arc<Stats>,
    /// asgi: WebSocket upgrades are served, messages up to this size.
    pub websocket_max_message: Option<usize>,
    pub shutdown: watch::Receiver<bool>,
}

/// Start on a request: refuse it at once, or hand it to an app thread and
/// return the wait for its response head.
///
/// The work happens here, when hyper calls the service, not in the returned
/// future: hyper moves that future into its connection state, and a future
/// carrying the request (as an `async fn` would) cost a dozen copies of a
/// few hundred bytes per request.
pub fn handle(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState>,
    peer: Peer,
    local: &Arc<Local>,
    mut req: Request<Incoming>,
) -> Reply {
    let index = conn.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(why) = conn.refusal(index) {
        crate::warning!(
            "Invalid request from {}: {}",
            peer.ip_string(),
            why.message()
        );
        return Reply::now(error_response(StatusCode::BAD_REQUEST, why.message()));
    }
    if let Some((status, why)) = check_limits(&shared.limits, &req) {
        crate::warning!("Invalid request from {}: {why}", peer.ip_string());
        return Reply::now(error_response(status, &why));
    }
    let started = Instant::now();
    let websocket = match shared.websocket_max_message {
        Some(_) if websocket::is_upgrade(req.method(), req.headers()) => {
            Some(websocket::channels(hyper::upgrade::on(&mut req)))
        }
        _ => None,
    };
    let (app_side, io_side) = match websocket {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    let (parts, body) = req.into_parts();
    let body = (!body.is_end_stream()).then(|| super::request_body::spawn(body));
    let (reply, response) = oneshot::channel();
    if shared.stats.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
        shared.jobs.busy();
    }
    shared.jobs.send(Job {
        parts,
        body,
        peer,
        local: local.clone(),
        reply,
        busy: BusyGuard::new(conn.clone()),
        started,
        websocket: app_side,
    });
    Reply::Waiting {
        response,
        websocket: io_side.map(|io| {
            Box::new(Upgrade {
                io,
                shared: shared.clone(),
                conn: conn.clone(),
            })
        }),
    }
}

/// The response head for hyper: at once, or from an app thread.
pub enum Reply {
    /// Refused before the app saw it (boxed: rare, and large).
    Now(Option<Box<Response<ResponseBody>>>),
    Waiting {
        response: oneshot::Receiver<Response<ResponseBody>>,
        /// A WebSocket the app may accept.
        websocket: Option<Box<Upgrade>>,
    },
}

/// What serving an accepted WebSocket needs on the I/O thread.
pub struct Upgrade {
    io: websocket::IoSide,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
}

impl Reply {
    fn now(response: Response<ResponseBody>) -> Reply {
        Reply::Now(Some(Box::new(response)))
    }
}

impl Future for Reply {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, websocket) = match &mut *self {
            Reply::Now(response) => {
                let response = response.take().expect("polled after it answered");
                return Poll::Ready(Ok(*response));
            }
            Reply::Waiting {
                response,
                websocket,
            } => (ready!(Pin::new(response).poll(cx)), websocket.take()),
        };
        let response = response.unwrap_or_else(|_| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        });
        // The app accepted a WebSocket: serve it once hyper hands the socket over.
        if let Some(ws) = websocket
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let Upgrade { io, shared, conn } = *ws;
            if let Some(max) = shared.websocket_max_message {
                tokio::spawn(websocket::run(io, conn, max, shared.shutdown.clone()));
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// The request line and header limits hyper does not enforce itself.
fn check_limits(limits: &Limits, req: &Request<Incoming>) -> Option<(StatusCode, String)> {
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path().len(), |pq| pq.as_str().len());
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len();
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
            format!(
                "Too many header fields ({} > {})",
                req.headers().len(),
                limits.fields
            ),
        ));
    }
    for (name, value) in req.headers() {
        let size = name.as_str().len() + 2 + value.len();
        if size > limits.field_size {
            return Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "Header field {} is too large ({size} > {})",
                    name, limits.field_size
                ),
            ));
        }
    }
    None
}

/// A plain-text error page that also closes the connection.
pub fn error_response(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(bytes::Bytes::from(format!(
        "{message}\n"
    ))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::SERVER, crate::wsgi::SERVER_HEADER.clone());
    resp
}
