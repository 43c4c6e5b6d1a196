//! The ASGI `websocket` protocol for one connection: the handshake answered
//! by the app (`websocket.accept` or `websocket.close`), then messages both
//! ways through the I/O thread's task (`http::websocket`). As for HTTP,
//! nothing blocks the loop: a call that must wait returns a token.

use http::{HeaderValue, Response, StatusCode, header};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::{self};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::held::{Held, Sent};
use super::{AsgiApp, body_of, bytes_of, event, poll_token, scope};
use crate::request::response::{SERVER_HEADER, error_response, header_pair};
use crate::request::websocket::{AppSide, Incoming, Outgoing};
use crate::request::{Answer, BusyGuard, Hub, Job, Local, Peer, ResponseBody};

#[pyclass(module = "ferricorn")]
pub struct Socket {
    app: Arc<AsgiApp>,
    hub: Arc<Hub>,
    st: Mutex<State>,
}

struct State {
    parts: http::request::Parts,
    peer: Peer,
    local: Arc<Local>,
    started: Instant,
    reply: Option<oneshot::Sender<Response<ResponseBody>>>,
    busy: Option<BusyGuard>,
    incoming: mpsc::Receiver<Incoming>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
    connect_delivered: bool,
    accepted: bool,
    /// The close code once the connection is over (either side).
    closed: Option<(u16, String)>,
    held: Held<Outgoing>,
    status: u16,
    finished: bool,
}

impl Socket {
    pub fn new(app: Arc<AsgiApp>, hub: Arc<Hub>, job: Job, side: AppSide) -> Socket {
        let Job {
            parts,
            peer,
            local,
            reply,
            busy,
            started,
            ..
        } = job;
        Socket {
            app,
            hub,
            st: Mutex::new(State {
                parts,
                peer,
                local,
                started,
                reply: Some(reply),
                busy: Some(busy),
                incoming: side.incoming,
                outgoing: Some(side.outgoing),
                connect_delivered: false,
                accepted: false,
                closed: None,
                held: Held::new(),
                status: 0,
                finished: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(st: &mut State, resp: Response<ResponseBody>) {
        let Some(reply) = st.reply.take() else { return };
        st.status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let body = match st.busy.take() {
            Some(b) => body.with_busy(b),
            None => body,
        };
        let _ = reply.send(Response::from_parts(parts, body));
    }

    fn accept(st: &mut State, message: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = message.py();
        let key = st
            .parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&key).map_err(|e| PyValueError::new_err(e.to_string()))?,
        );
        if let Some(proto) = message.get_item(intern!(py, "subprotocol"))?
            && !proto.is_none()
        {
            let proto: String = proto.extract()?;
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(&proto)
                    .map_err(|_| PyValueError::new_err("invalid subprotocol"))?,
            );
        }
        if let Some(headers) = message.get_item(intern!(py, "headers"))? {
            for pair in headers.try_iter()? {
                let pair = pair?;
                let (name, value) = header_pair(
                    &bytes_of(&pair.get_item(0)?)?,
                    &bytes_of(&pair.get_item(1)?)?,
                )?;
                h.append(name, value);
            }
        }
        if !h.contains_key(header::SERVER) {
            h.insert(header::SERVER, SERVER_HEADER.clone());
        }
        Self::answer(st, resp);
        st.accepted = true;
        Ok(())
    }

    /// Queue one message for the socket: None when queued, a token to await otherwise.
    fn queue(&self, st: &mut State, msg: Outgoing) -> Option<u64> {
        let tx = st.outgoing.clone()?;
        match st.held.send(&self.hub, &tx, msg) {
            Sent::Wait(token) => Some(token),
            Sent::Done | Sent::Gone => None,
        }
    }
}

fn text_or_bytes(message: &Bound<'_, PyDict>) -> PyResult<Outgoing> {
    let py = message.py();
    if let Some(b) = message.get_item(intern!(py, "bytes"))?
        && !b.is_none()
    {
        return Ok(Outgoing::Binary(body_of(Some(b))?));
    }
    if let Some(t) = message.get_item(intern!(py, "text"))?
        && !t.is_none()
    {
        return Ok(Outgoing::Text(t.cast::<PyString>()?.to_str()?.to_string()));
    }
    Err(PyValueError::new_err(
        "websocket.send needs 'bytes' or 'text'",
    ))
}

#[pymethods]
impl Socket {
    /// The `websocket` scope (the task adds `state`).
    fn scope<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.lock();
        scope::websocket(py, &self.app, &st.parts, &st.peer, &st.local)
    }

    /// The next event for `receive()`, or a token to await first.
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut st = self.lock();
        if !st.connect_delivered {
            st.connect_delivered = true;
            return Ok(event(py, intern!(py, "websocket.connect"))?.into_any());
        }
        if st.closed.is_none() {
            if !st.accepted {
                return Err(PyRuntimeError::new_err(
                    "receive() before websocket.accept or websocket.close",
                ));
            }
            let st = &mut *st;
            let incoming = &mut st.incoming;
            match poll_token(&self.hub, |cx| incoming.poll_recv(cx)) {
                Err(token) => return Ok(token.into_pyobject(py)?.into_any()),
                Ok(Some(Incoming::Text(t))) => {
                    let ev = event(py, intern!(py, "websocket.receive"))?;
                    ev.set_item(intern!(py, "text"), t)?;
                    return Ok(ev.into_any());
                }
                Ok(Some(Incoming::Binary(b))) => {
                    let ev = event(py, intern!(py, "websocket.receive"))?;
                    ev.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?;
                    return Ok(ev.into_any());
                }
                Ok(Some(Incoming::Closed(code, reason))) => st.closed = Some((code, reason)),
                Ok(None) => st.closed = Some((1006, String::new())),
            }
            st.outgoing = None;
        }
        let (code, reason) = st.closed.clone().unwrap_or((1006, String::new()));
        let ev = event(py, intern!(py, "websocket.disconnect"))?;
        ev.set_item(intern!(py, "code"), code)?;
        ev.set_item(intern!(py, "reason"), reason)?;
        Ok(ev.into_any())
    }

    /// `send(message)`: None when done, or a token to await before `flush()`.
    fn send(&self, message: &Bound<'_, PyDict>) -> PyResult<Option<u64>> {
        let py = message.py();
        let kind: pyo3::pybacked::PyBackedStr = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without a 'type'"))?
            .extract()?;
        let mut st = self.lock();
        match &*kind {
            "websocket.accept" => {
                if st.accepted || st.reply.is_none() {
                    return Err(PyRuntimeError::new_err(
                        "websocket.accept after the handshake was answered",
                    ));
                }
                Self::accept(&mut st, message)?;
                Ok(None)
            }
            "websocket.send" => {
                if !st.accepted {
                    return Err(PyRuntimeError::new_err(
                        "websocket.send before websocket.accept",
                    ));
                }
                if st.closed.is_some() {
                    return Ok(None);
                }
                let msg = text_or_bytes(message)?;
                Ok(self.queue(&mut st, msg))
            }
            "websocket.close" => {
                let code: u16 = match message.get_item(intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract()?,
                    _ => 1000,
                };
                let reason: String = match message.get_item(intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract()?,
                    _ => String::new(),
                };
                if !st.accepted {
                    // Refusing the handshake is an HTTP 403, as uvicorn answers.
                    Self::answer(&mut st, error_response(StatusCode::FORBIDDEN, "Forbidden"));
                    st.closed = Some((code, reason));
                    return Ok(None);
                }
                if st.closed.is_some() {
                    return Ok(None);
                }
                let token = self.queue(&mut st, Outgoing::Close(code, reason));
                Ok(token)
            }
            other => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{other}' for a websocket connection."
            ))),
        }
    }

    fn flush(&self) -> Option<u64> {
        match self.lock().held.flush(&self.hub) {
            Sent::Wait(token) => Some(token),
            Sent::Done | Sent::Gone => None,
        }
    }

    /// The app's coroutine is over: refuse or close what is still open, log, count.
    #[pyo3(signature = (error=None))]
    fn finish(&self, error: Option<String>) {
        let mut st = self.lock();
        if std::mem::replace(&mut st.finished, true) {
            return;
        }
        let path = st.parts.uri.path().to_string();
        if let Some(tb) = &error {
            crate::error!("Exception in ASGI application {path}\n{tb}");
        }
        if st.reply.is_some() {
            let status = if error.is_some() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::FORBIDDEN
            };
            Self::answer(&mut st, error_response(status, "WebSocket refused"));
        } else if st.accepted && st.closed.is_none() {
            // 1011: the app failed; 1000: it returned without closing.
            let code = if error.is_some() { 1011 } else { 1000 };
            if let Some(tx) = &st.outgoing {
                let _ = tx.try_send(Outgoing::Close(code, String::new()));
            }
        }
        st.outgoing = None;
        st.held.clear();

        self.app
            .ledger
            .served(&st.parts, &st.peer, st.started, || Answer {
                status: st.status,
                bytes: 0,
                headers: Vec::new(),
            });
    }
}
