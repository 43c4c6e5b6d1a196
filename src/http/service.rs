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
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

use super::idle::ConnState;
use super::websocket;
use crate::request::deadline::Timer;
use crate::request::response::error_response;
use crate::request::target::RawTarget;
use crate::request::{BusyGuard, Deadline, Dispatch, Job, Local, Peer, ResponseBody, Stats};

pub use super::framing::head::{Leniency, Limits};

/// What every connection of a worker shares.
pub struct Shared {
    pub jobs: Arc<dyn Dispatch>,
    /// `--request-timeout`, when set.
    pub request_timeout: Option<Duration>,
    pub limits: Limits,
    pub lenient: Leniency,
    pub stats: Arc<Stats>,
    /// asgi: WebSocket upgrades are served, messages up to this size.
    pub websocket_max_message: Option<usize>,
    /// The end of a client's stream is its write side shut, not its leaving:
    /// its requests are answered (every class but asgi, whose apps wait on
    /// `http.disconnect`).
    pub half_close: bool,
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
    if let Some(refusal) = conn.refusal(index) {
        crate::warning!(
            "Invalid request from {}: {}",
            peer.ip_string(),
            refusal.reason
        );
        return Reply::now(error_response(refusal.status, &refusal.reason));
    }
    if let Some(raw) = conn.raw_target(index) {
        req.extensions_mut().insert(RawTarget(raw));
    }
    let started = Instant::now();
    let websocket = match shared.websocket_max_message {
        Some(_) if websocket::is_upgrade(req.method(), req.headers()) => {
            Some(websocket::channels(hyper::upgrade::on(&mut req)))
        }
        _ => None,
    };
    if websocket.is_none() && conn.decides_switch(index) {
        // Not a WebSocket this worker serves: the stream stays HTTP.
        conn.decide_switch(false);
    }
    let connect = req.method() == http::Method::CONNECT;
    let close = conn.closes_after(index);
    let (app_side, io_side) = match websocket {
        Some((a, i)) => (Some(a), Some(i)),
        None => (None, None),
    };
    // A WebSocket lives as long as its peers want: no request deadline.
    let deadline = match shared.request_timeout {
        Some(limit) if app_side.is_none() => Some(Deadline::new(
            format!("{} {}", req.method(), req.uri().path()),
            limit,
        )),
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let body = (!body.is_end_stream()).then(|| {
        // A Content-Length body cut short by a half-close is read as far as
        // it goes (gunicorn's LengthReader); where the end means the client
        // left, or the body is chunked (its end is explicit), it is an error.
        let cut_is_end =
            shared.half_close && !parts.headers.contains_key(header::TRANSFER_ENCODING);
        super::request_body::spawn(body, conn.clone(), cut_is_end)
    });
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
        deadline: deadline.clone(),
    });
    Reply::Waiting {
        response,
        timer: deadline.map(|d| Timer::new(started, d, shared.jobs.clone())),
        connect,
        close,
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
        /// `--request-timeout`: a 504 if the head is not here in time.
        timer: Option<Timer>,
        /// A CONNECT: a 2xx answer would open a tunnel.
        connect: bool,
        /// Nothing is read after this request: the answer closes the connection.
        close: bool,
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
        let (mut response, websocket, connect, close) = match &mut *self {
            Reply::Now(response) => {
                let response = response.take().expect("polled after it answered");
                return Poll::Ready(Ok(*response));
            }
            Reply::Waiting {
                response,
                timer,
                websocket,
                connect,
                close,
            } => {
                if let Some(t) = timer
                    && t.poll_expired(cx, false).is_ready()
                {
                    // The app may still answer; nobody will read it.
                    let mut response =
                        error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout");
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    return Poll::Ready(Ok(response));
                }
                let response = ready!(Pin::new(response).poll(cx));
                let mut response = response.unwrap_or_else(|_| {
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                });
                if let Some(t) = timer.take() {
                    response.body_mut().keep_timer(t);
                }
                (response, websocket.take(), *connect, *close)
            }
        };
        if connect && response.status().is_success() {
            // hyper would take a 2xx as the tunnel opened and drop the
            // connection after the head; there is no tunnel to give.
            crate::error!(
                "The application answered CONNECT with {}: no tunnel can be opened, sending 500 instead",
                response.status()
            );
            response = error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        if close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(ws) = websocket {
            // The framing authority holds the rest of the stream until this
            // answer says whether it is still HTTP.
            let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            ws.conn.decide_switch(switched);
            // The app accepted a WebSocket: serve it once hyper hands the socket over.
            if switched {
                let Upgrade { io, shared, conn } = *ws;
                if let Some(max) = shared.websocket_max_message {
                    tokio::spawn(websocket::run(io, conn, max, shared.shutdown.clone()));
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}
