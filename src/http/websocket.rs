//! WebSocket connections on the I/O thread (asgi workers): the upgrade
//! check, and the task that moves messages between the socket and the app
//! once the app has accepted. tungstenite answers pings and close frames.

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::idle::ConnState;
use super::shutdown::stopping;
use crate::request::BusyGuard;
use crate::request::websocket::{AppSide, Incoming, Outgoing};

/// Messages queued in either direction before the sender waits.
const DEPTH: usize = 64;
/// How long a closing side waits for the other's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The I/O thread's ends, kept until the app answers the handshake.
pub struct IoSide {
    to_app: mpsc::Sender<Incoming>,
    from_app: mpsc::Receiver<Outgoing>,
    on_upgrade: OnUpgrade,
}

/// A request that asks for a WebSocket (RFC 6455 §4.2.1).
pub fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    method == Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
        && headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

pub fn channels(on_upgrade: OnUpgrade) -> (AppSide, IoSide) {
    let (to_app, incoming) = mpsc::channel(DEPTH);
    let (outgoing, from_app) = mpsc::channel(DEPTH);
    (
        AppSide { incoming, outgoing },
        IoSide {
            to_app,
            from_app,
            on_upgrade,
        },
    )
}

/// Serve the connection after the 101 went out, until either side closes
/// or the worker stops (1001, "going away").
pub async fn run(
    io: IoSide,
    conn: Arc<ConnState>,
    max_message: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let IoSide {
        to_app,
        mut from_app,
        on_upgrade,
    } = io;
    // While the socket is a WebSocket, the connection is never "idle".
    let _busy = BusyGuard::new(conn.clone());
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            crate::debug!("WebSocket upgrade failed: {e}");
            let _ = to_app.send(Incoming::Closed(1006, String::new())).await;
            return;
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let mut ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    // A message the app has no room for yet: the socket is not read until
    // it is delivered (backpressure to the client), while the app's own
    // messages keep flowing out — blocking on either side alone could
    // deadlock an app that is itself waiting to send.
    let mut held: Option<Incoming> = None;
    let (code, reason) = loop {
        tokio::select! {
            permit = to_app.reserve(), if held.is_some() => match (permit, held.take()) {
                (Ok(permit), Some(msg)) => permit.send(msg),
                _ => break close(&mut ws, 1000, "").await,
            },
            msg = ws.next(), if held.is_none() => {
                let msg = match msg {
                    Some(Ok(Message::Text(t))) => Incoming::Text(t.to_string()),
                    Some(Ok(Message::Binary(b))) => Incoming::Binary(b),
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite has queued the reply; flush it and finish.
                        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(None)).await;
                        break frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                        break close(&mut ws, 1009, "message too big").await;
                    }
                    Some(Err(WsError::Protocol(e))) => {
                        crate::debug!("WebSocket protocol error: {e}");
                        break close(&mut ws, 1002, "protocol error").await;
                    }
                    Some(Err(_)) | None => break (1006, String::new()),
                };
                match to_app.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(msg)) => held = Some(msg),
                    Err(mpsc::error::TrySendError::Closed(_)) => break close(&mut ws, 1000, "").await,
                }
            },
            out = from_app.recv() => {
                let sent = match out {
                    Some(Outgoing::Text(t)) => ws.send(Message::text(t)).await,
                    Some(Outgoing::Binary(b)) => ws.send(Message::Binary(b)).await,
                    Some(Outgoing::Close(code, reason)) => break close(&mut ws, code, &reason).await,
                    // The app returned without closing.
                    None => break close(&mut ws, 1000, "").await,
                };
                if sent.is_err() {
                    break (1006, String::new());
                }
            }
            _ = stopping(&mut shutdown) => break close(&mut ws, 1001, "server shutting down").await,
        }
    };
    let _ = to_app.send(Incoming::Closed(code, reason)).await;
}

/// Send a close frame and wait briefly for the peer's; the code is the one sent.
async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    (code, reason.to_string())
}
