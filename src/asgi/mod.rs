//! ASGI 3 over the hub: the `http` scope, `receive()` and `send()` for one
//! request, driven by a task on the worker's asyncio loop (`worker/asgi.py`).
//!
//! Nothing here blocks the loop. When `receive()` or `send()` must wait (body
//! data not there yet, the client reading slower than the app writes), the
//! call returns a token instead; the task awaits a future for it, and the I/O
//! thread wakes it through the hub when the wait is over.

mod held;
use held::{Held, Sent};
mod scope;
mod websocket;

pub use websocket::Socket;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Response, StatusCode, header};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::sync::mpsc::{self};
use tokio::sync::oneshot;

use crate::request::body_reader::{BodyReader, Received};
use crate::request::forwarded::Forwarded;
use crate::request::response::{
    SERVER_HEADER, STREAM_DEPTH, error_response, header_pair, hop_by_hop,
};
use crate::request::response_body::{Aborted, Chunk};
use crate::request::{
    Answer, BusyGuard, Deadline, Finished, Hub, Job, Ledger, Local, Peer, ResponseBody,
};

/// What a worker's requests share.
pub struct AsgiApp {
    pub app: Py<PyAny>,
    asgi: Py<PyDict>,
    root_path: String,
    forwarded: Forwarded,
    ledger: Arc<Ledger>,
}

impl AsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        forwarded: Forwarded,
        root_path: &str,
        ledger: Arc<Ledger>,
    ) -> PyResult<AsgiApp> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        Ok(AsgiApp {
            app,
            asgi: asgi.unbind(),
            root_path: root_path.trim_end_matches('/').to_string(),
            forwarded,
            ledger,
        })
    }
}

type Gone = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One request's conversation between the app and hyper.
#[pyclass(module = "ferricorn")]
pub struct Exchange {
    app: Arc<AsgiApp>,
    hub: Arc<Hub>,
    st: Mutex<State>,
}

struct State {
    parts: http::request::Parts,
    peer: Peer,
    local: Arc<Local>,
    started: Instant,
    body: Option<BodyReader>,
    body_done: bool,
    /// The client sent a malformed body: answer 400 if nothing went out.
    bad_body: bool,
    reply: Option<oneshot::Sender<Response<ResponseBody>>>,
    busy: Option<BusyGuard>,
    status: Option<StatusCode>,
    headers: HeaderMap,
    logged_headers: Vec<(String, String)>,
    content_length: Option<u64>,
    stream: Option<mpsc::Sender<Chunk>>,
    /// Resolves when the client has gone (the stream's receiver dropped).
    gone: Option<Gone>,
    /// `--request-timeout`, when set.
    deadline: Option<Arc<Deadline>>,
    /// A chunk waiting for room in the stream.
    held: Held<Chunk>,
    end_after_held: bool,
    complete: bool,
    client_gone: bool,
    sent: u64,
    finished: bool,
}

impl Exchange {
    pub fn new(app: Arc<AsgiApp>, hub: Arc<Hub>, job: Job) -> Exchange {
        let Job {
            parts,
            body,
            peer,
            local,
            reply,
            busy,
            started,
            websocket: _,
            deadline,
        } = job;
        app.ledger.began(started);
        Exchange {
            app,
            hub,
            st: Mutex::new(State {
                body_done: false,
                body,
                parts,
                peer,
                local,
                started,
                bad_body: false,
                reply: Some(reply),
                busy: Some(busy),
                status: None,
                headers: HeaderMap::new(),
                logged_headers: Vec::new(),
                content_length: None,
                stream: None,
                gone: None,
                held: Held::new(),
                end_after_held: false,
                complete: false,
                client_gone: false,
                sent: 0,
                finished: false,
                deadline,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The response's head (and a complete body, which waits for the loop's
    /// next pass: see `request::outbox`).
    fn send_head(&self, st: &mut State, body: ResponseBody, complete: bool) {
        let Some(reply) = st.reply.take() else { return };
        let body = match st.busy.take() {
            Some(b) => body.with_busy(b),
            None => body,
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = st.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.app.ledger.wants_response_headers {
            st.logged_headers = log_headers(&st.headers);
        }
        *resp.headers_mut() = std::mem::take(&mut st.headers);
        if complete {
            self.hub.outbox.hold(Finished {
                reply,
                response: resp,
            });
        } else if reply.send(resp).is_err() {
            st.client_gone = true;
        }
    }

    fn end(st: &mut State) {
        st.complete = true;
        st.stream = None;
        st.gone = None;
    }

    /// `http.response.body`: None when done, a token to await otherwise.
    fn push(&self, st: &mut State, data: Bytes, more: bool) -> Option<u64> {
        let data = match st.content_length {
            Some(cl) if st.sent >= cl => Bytes::new(),
            Some(cl) if st.sent + data.len() as u64 > cl => data.slice(..(cl - st.sent) as usize),
            _ => data,
        };
        if st.reply.is_some() {
            if !more {
                st.sent = data.len() as u64;
                self.send_head(st, ResponseBody::full(data), true);
                Self::end(st);
                return None;
            }
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            st.stream = Some(tx);
            self.send_head(st, ResponseBody::stream(rx), false);
        }
        if !data.is_empty() && !st.client_gone {
            st.sent += data.len() as u64;
            if let Some(tx) = st.stream.clone() {
                match st.held.send(&self.hub, &tx, Ok(data)) {
                    Sent::Done => {}
                    Sent::Wait(token) => {
                        st.end_after_held = !more;
                        return Some(token);
                    }
                    Sent::Gone => st.client_gone = true,
                }
            }
        }
        if !more {
            Self::end(st);
        }
        None
    }

    fn flush_held(&self, st: &mut State) -> Option<u64> {
        match st.held.flush(&self.hub) {
            Sent::Wait(token) => return Some(token),
            Sent::Gone => st.client_gone = true,
            Sent::Done => {}
        }
        if std::mem::take(&mut st.end_after_held) {
            Self::end(st);
        }
        None
    }

    fn start(&self, st: &mut State, message: &Bound<'_, PyDict>) -> PyResult<()> {
        if st.status.is_some() {
            return Err(PyRuntimeError::new_err(
                "Expected ASGI message 'http.response.body', but got 'http.response.start'.",
            ));
        }
        let py = message.py();
        let code: u16 = message
            .get_item(intern!(py, "status"))?
            .ok_or_else(|| PyValueError::new_err("http.response.start needs a 'status'"))?
            .extract()?;
        let status = StatusCode::from_u16(code)
            .ok()
            .filter(|s| s.as_u16() >= 200)
            .ok_or_else(|| PyValueError::new_err(format!("invalid status {code}")))?;
        let mut map = HeaderMap::new();
        if let Some(headers) = message.get_item(intern!(py, "headers"))? {
            for pair in headers.try_iter()? {
                let pair = pair?;
                let (name, value) = header_pair(
                    &bytes_of(&pair.get_item(0)?)?,
                    &bytes_of(&pair.get_item(1)?)?,
                )?;
                if hop_by_hop(&name) {
                    continue;
                }
                if name == header::CONTENT_LENGTH {
                    st.content_length = value.to_str().ok().and_then(|v| v.trim().parse().ok());
                }
                map.append(name, value);
            }
        }
        if !map.contains_key(header::SERVER) {
            map.insert(header::SERVER, SERVER_HEADER.clone());
        }
        st.status = Some(status);
        st.headers = map;
        Ok(())
    }
}

/// Poll once; when it is not ready, poll again with a waker for a fresh
/// token, which the caller returns to the task to await.
fn poll_token<T>(hub: &Arc<Hub>, mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Result<T, u64> {
    if let Poll::Ready(v) = f(&mut Context::from_waker(Waker::noop())) {
        return Ok(v);
    }
    let token = hub.token();
    let waker = hub.waker(token);
    match f(&mut Context::from_waker(&waker)) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(token),
    }
}

/// Header bytes from the app: bytes or bytearray.
fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "ASGI header names and values must be bytes, not {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

/// A body from the app as Bytes; large bytes objects are handed over without a copy.
fn body_of(obj: Option<Bound<'_, PyAny>>) -> PyResult<Bytes> {
    let Some(obj) = obj else {
        return Ok(Bytes::new());
    };
    if let Ok(b) = obj.cast::<PyBytes>() {
        if b.as_bytes().len() < 4096 {
            return Ok(Bytes::copy_from_slice(b.as_bytes()));
        }
        let backed: pyo3::pybacked::PyBackedBytes = obj.extract()?;
        return Ok(Bytes::from_owner(backed));
    }
    Ok(Bytes::from(bytes_of(&obj)?))
}

fn log_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn event<'py>(
    py: Python<'py>,
    kind: &Bound<'py, pyo3::types::PyString>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), kind)?;
    Ok(d)
}

#[pymethods]
impl Exchange {
    /// The `http` scope (the task adds `state`).
    fn scope<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = self.lock();
        scope::http(py, &self.app, &st.parts, &st.peer, &st.local)
    }

    /// The next event for `receive()`, or a token to await first.
    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut st = self.lock();
        if !st.body_done {
            let polled = match &st.body {
                Some(body) => poll_token(&self.hub, |cx| body.poll_recv(cx)),
                None => Ok(Received::End),
            };
            let (data, more) = match polled {
                Err(token) => return Ok(token.into_pyobject(py)?.into_any()),
                Ok(Received::Data(mut chunks, n)) => {
                    let data = PyBytes::new_with(py, n, |dst| {
                        let mut off = 0;
                        while let Some(mut c) = chunks.pop_front() {
                            let k = c.len();
                            dst[off..off + k].copy_from_slice(&c);
                            c.advance(k);
                            off += k;
                        }
                        Ok(())
                    })?;
                    (data, true)
                }
                Ok(Received::End) => {
                    st.body = None;
                    st.body_done = true;
                    (PyBytes::new(py, b""), false)
                }
                Ok(Received::Failed(e)) => {
                    st.body = None;
                    st.body_done = true;
                    st.bad_body = true;
                    crate::warning!(
                        "Invalid request from {}: {}",
                        st.peer.ip_string(),
                        e.message
                    );
                    return Ok(event(py, intern!(py, "http.disconnect"))?.into_any());
                }
            };
            let ev = event(py, intern!(py, "http.request"))?;
            ev.set_item(intern!(py, "body"), data)?;
            ev.set_item(intern!(py, "more_body"), more)?;
            return Ok(ev.into_any());
        }
        // The body is read: the next event is the client leaving.
        if !st.complete && !st.client_gone {
            let st = &mut *st;
            let waited = if let Some(reply) = st.reply.as_mut() {
                poll_token(&self.hub, |cx| reply.poll_closed(cx))
            } else {
                if st.gone.is_none()
                    && let Some(tx) = &st.stream
                {
                    let tx = tx.clone();
                    st.gone = Some(Box::pin(async move { tx.closed().await }));
                }
                match st.gone.as_mut() {
                    Some(gone) => poll_token(&self.hub, |cx| gone.as_mut().poll(cx)),
                    None => Ok(()),
                }
            };
            match waited {
                Err(token) => return Ok(token.into_pyobject(py)?.into_any()),
                Ok(()) => {
                    st.gone = None;
                    st.client_gone = true;
                }
            }
        }
        Ok(event(py, intern!(py, "http.disconnect"))?.into_any())
    }

    /// `send(message)`: None when done, or a token to await before `flush()`.
    fn send(&self, message: &Bound<'_, PyDict>) -> PyResult<Option<u64>> {
        let py = message.py();
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without a 'type'"))?;
        let kind: pyo3::pybacked::PyBackedStr = kind.extract()?;
        let mut st = self.lock();
        match &*kind {
            "http.response.start" => {
                self.start(&mut st, message)?;
                Ok(None)
            }
            "http.response.body" => {
                if st.status.is_none() {
                    return Err(PyRuntimeError::new_err(
                        "Expected ASGI message 'http.response.start', but got 'http.response.body'.",
                    ));
                }
                if st.complete {
                    if st.client_gone {
                        return Ok(None);
                    }
                    return Err(PyRuntimeError::new_err(
                        "Unexpected ASGI message 'http.response.body' sent, after response already completed.",
                    ));
                }
                let data = body_of(message.get_item(intern!(py, "body"))?)?;
                let more = match message.get_item(intern!(py, "more_body"))? {
                    Some(m) => m.is_truthy()?,
                    None => false,
                };
                Ok(self.push(&mut st, data, more))
            }
            other => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{other}' for an http connection."
            ))),
        }
    }

    /// After a token from `send()` was woken: None when the chunk went out.
    fn flush(&self) -> Option<u64> {
        let mut st = self.lock();
        self.flush_held(&mut st)
    }

    /// The app's coroutine is over (`error`: its traceback): answer what is
    /// still unanswered, log the request, count it. True when the loop
    /// should schedule `flush_held` (a complete response waits for it).
    #[pyo3(signature = (error=None))]
    fn finish(&self, error: Option<String>) -> bool {
        self.end_of_task(error);
        self.hub.flush_wanted()
    }
}

impl Exchange {
    fn end_of_task(&self, error: Option<String>) {
        let mut st = self.lock();
        if std::mem::replace(&mut st.finished, true) {
            return;
        }
        let path = st.parts.uri.path().to_string();
        let mut logged_status = st.status.map_or(500, |s| s.as_u16());
        let deadline = st.deadline.take();
        // Past its deadline, the task was cancelled (or failed meanwhile):
        // the timeout's line tells the story.
        let expired = deadline.as_ref().is_some_and(|d| d.expired());
        let failure = match (&error, st.reply.is_some()) {
            _ if expired => None,
            (Some(tb), _) => Some(format!("Exception in ASGI application {path}\n{tb}")),
            (None, true) if st.bad_body => None,
            (None, true) => Some(format!(
                "ASGI callable returned without starting a response ({path})"
            )),
            (None, false) if !st.complete && !st.client_gone => Some(format!(
                "ASGI callable returned without completing the response ({path})"
            )),
            (None, false) => None,
        };
        if let Some(msg) = failure {
            crate::error!("{msg}");
        }
        if let Some(reply) = st.reply.take() {
            let (code, text) = if st.bad_body && error.is_none() {
                (StatusCode::BAD_REQUEST, "Bad Request")
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            };
            logged_status = code.as_u16();
            let (parts, body) = error_response(code, text).into_parts();
            let body = match st.busy.take() {
                Some(b) => body.with_busy(b),
                None => body,
            };
            let _ = reply.send(Response::from_parts(parts, body));
        } else if !st.complete
            && let Some(tx) = st.stream.take()
        {
            // Cut the connection rather than end the body as if complete.
            let _ = tx.try_send(Err(Aborted));
        }
        st.stream = None;
        st.gone = None;
        st.held.clear();
        st.body = None;

        if deadline.is_some_and(|d| d.answered_504()) {
            logged_status = 504;
            st.sent = 0;
        }
        self.app
            .ledger
            .served(&st.parts, &st.peer, st.started, || Answer {
                status: logged_status,
                bytes: st.sent,
                headers: st.logged_headers.clone(),
            });
    }
}
