//! `start_response`, `write()`, and the hand-over of the response to hyper.
//!
//! Headers go out with the first non-empty body chunk (or at the end), so an
//! app may call start_response lazily inside its first iteration, and a second
//! call with `exc_info` can still replace them.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use hyper::ext::ReasonPhrase;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

use crate::request::outbox::Outbox;
use crate::request::response::{SERVER_HEADER, STREAM_DEPTH};
use crate::request::response_body::{Aborted, Chunk};
use crate::request::{Answer, BusyGuard, Finished, ResponseBody, Wait};

/// Below this size a body is copied; above it the Python bytes object itself is handed over.
const COPY_BELOW: usize = 4096;
/// Chunks an app may run ahead of its client before it waits.

#[pyclass(module = "ferricorn")]
pub struct StartResponse {
    state: Mutex<State>,
    wait: Wait,
}

struct State {
    status: Option<StatusCode>,
    /// The app's reason phrase where it is not the status code's usual one.
    reason: Option<ReasonPhrase>,
    /// A HEAD request: whatever Content-Length says, no body follows.
    head_request: bool,
    /// The status of the response handed over to be sent (the app's, or
    /// an error page's in its place): what the access log records.
    sent_status: Option<StatusCode>,
    headers: HeaderMap,
    content_length: Option<u64>,
    reply: Option<oneshot::Sender<Response<ResponseBody>>>,
    busy: Option<BusyGuard>,
    stream: Option<mpsc::Sender<Chunk>>,
    sent: u64,
    client_gone: bool,
    /// The access log shows response headers: keep a copy after sending.
    keep_headers: bool,
    /// Where a complete response waits to be sent with others (see
    /// request::outbox): at once, while the app goes on to close() its
    /// iterable and run its hooks.
    hold: Option<Arc<Outbox>>,
    /// This object's `write`, bound once for the life of a reused object
    /// (see `StartResponse::release`).
    write: Option<Py<PyAny>>,
}

impl State {
    fn new(
        reply: Option<oneshot::Sender<Response<ResponseBody>>>,
        busy: Option<BusyGuard>,
        keep_headers: bool,
        hold: Option<Arc<Outbox>>,
        write: Option<Py<PyAny>>,
    ) -> State {
        State {
            status: None,
            reason: None,
            head_request: false,
            sent_status: None,
            headers: HeaderMap::new(),
            content_length: None,
            reply,
            busy,
            stream: None,
            sent: 0,
            client_gone: false,
            keep_headers,
            hold,
            write,
        }
    }
}

thread_local! {
    /// The last request's start_response on this app thread, when nothing
    /// else held it or its `write` afterwards: the next request's. Making
    /// one and binding its `write` cost about 700 instructions a request.
    static SPARE: RefCell<Option<Py<StartResponse>>> = const { RefCell::new(None) };
}

impl StartResponse {
    /// A start_response for one request: this thread's spare, or a new one.
    pub fn obtain<'py>(
        py: Python<'py>,
        reply: oneshot::Sender<Response<ResponseBody>>,
        busy: BusyGuard,
        wait: &Wait,
        keep_headers: bool,
        hold: Option<Arc<Outbox>>,
        head_request: bool,
    ) -> PyResult<Bound<'py, StartResponse>> {
        if let Some(spare) = SPARE.take() {
            let sr = spare.into_bound(py);
            {
                // `release` left the state blank but for `write`.
                let this = sr.borrow();
                let mut st = this.lock();
                st.reply = Some(reply);
                st.busy = Some(busy);
                st.keep_headers = keep_headers;
                st.hold = hold;
                st.head_request = head_request;
            }
            return Ok(sr);
        }
        let mut state = State::new(Some(reply), Some(busy), keep_headers, hold, None);
        state.head_request = head_request;
        Bound::new(
            py,
            StartResponse {
                state: Mutex::new(state),
                wait: wait.clone(),
            },
        )
    }

    /// The request is over: keep `sr` as this thread's spare if nothing but
    /// us holds it or its `write` (an app may keep either, and must never
    /// reach the next request through them).
    pub fn release(sr: Bound<'_, StartResponse>) {
        let py = sr.py();
        // Out of the state first: the bound method refers back to `sr`, a
        // cycle that only this breaks when `sr` is not kept.
        let (write, spent) = {
            let this = sr.borrow();
            let mut st = this.lock();
            let write = st.write.take();
            // What is left of the response goes now, not with the next
            // request (a stream's sender ends the client's body).
            let spent = std::mem::replace(&mut *st, State::new(None, None, false, None, None));
            (write, spent)
        };
        drop(spent);
        let ours_alone = match &write {
            Some(w) => w.get_refcnt(py) == 1 && sr.get_refcnt() == 2,
            None => sr.get_refcnt() == 1,
        };
        if ours_alone && SPARE.with_borrow(Option::is_none) {
            sr.borrow().lock().write = write;
            SPARE.set(Some(sr.unbind()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn head_sent(&self) -> bool {
        self.lock().reply.is_none()
    }

    pub fn client_gone(&self) -> bool {
        self.lock().client_gone
    }

    /// Send one body chunk (starting the response if needed).
    pub fn push(&self, py: Python<'_>, chunk: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push_bytes(py, to_bytes(chunk)?)
    }

    pub fn push_bytes(&self, py: Python<'_>, data: Bytes) -> PyResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        if st.status.is_none() {
            return Err(PyAssertionError::new_err(
                "the app sent body data before calling start_response()",
            ));
        }
        let data = match st.content_length {
            Some(cl) if st.sent >= cl => return Ok(()),
            Some(cl) if st.sent + data.len() as u64 > cl => data.slice(..(cl - st.sent) as usize),
            _ => data,
        };
        if st.reply.is_some() && st.content_length == Some(data.len() as u64) {
            // The first chunk is the whole declared body (Flask's and
            // Django's usual answer, an iterator over one string): send it
            // with the head. A stream would cost a channel and a wake-up
            // for the chunk and another for its end.
            st.sent = data.len() as u64;
            Self::send_head(&mut st, ResponseBody::full(data));
            return Ok(());
        }
        if st.reply.is_some() {
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            st.stream = Some(tx);
            Self::send_head(&mut st, ResponseBody::stream(rx));
        }
        st.sent += data.len() as u64;
        let Some(tx) = st.stream.clone() else {
            return Ok(());
        };
        drop(st);
        let delivered = match tx.try_send(Ok(data)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(item)) => {
                // The client reads slower than the app writes.
                self.wait.until(py, tx.send(item))?.is_ok()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !delivered {
            self.lock().client_gone = true;
        }
        Ok(())
    }

    fn send_head(st: &mut State, body: ResponseBody) {
        let Some(reply) = st.reply.take() else { return };
        let mut body = body;
        if let Some(busy) = st.busy.take() {
            body = body.with_busy(busy);
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = st.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        st.sent_status = Some(resp.status());
        if let Some(reason) = st.reason.take() {
            resp.extensions_mut().insert(reason);
        }
        *resp.headers_mut() = if st.keep_headers {
            st.headers.clone()
        } else {
            std::mem::take(&mut st.headers)
        };
        // A complete body (no stream to feed) can wait for others.
        if let Some(outbox) = &st.hold
            && st.stream.is_none()
        {
            outbox.hold(Finished {
                reply,
                response: resp,
            });
            return;
        }
        if reply.send(resp).is_err() {
            st.client_gone = true;
        }
    }

    /// The whole body in one piece (a list of one item): hyper sets Content-Length.
    pub fn finish_with(&self, chunk: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = to_bytes(chunk)?;
        let mut st = self.lock();
        if st.reply.is_none() {
            drop(st);
            return self.push(chunk.py(), chunk);
        }
        if st.status.is_none() {
            return Err(PyAssertionError::new_err(
                "the app returned without calling start_response()",
            ));
        }
        let data = match st.content_length {
            Some(cl) if (data.len() as u64) > cl => data.slice(..cl as usize),
            Some(_) if (data.len() as u64) < st.declared_body() => {
                // Shorter than declared: sent as a stream that `finish` cuts off.
                drop(st);
                self.push(chunk.py(), chunk)?;
                return self.finish();
            }
            _ => data,
        };
        st.sent = data.len() as u64;
        Self::send_head(&mut st, ResponseBody::full(data));
        Ok(())
    }

    /// End of the body: send the head if nothing was sent, close the stream.
    pub fn finish(&self) -> PyResult<()> {
        let mut st = self.lock();
        if st.reply.is_some() {
            if st.status.is_none() {
                return Err(PyAssertionError::new_err(
                    "the app returned without calling start_response()",
                ));
            }
            if st.declared_body() > 0 {
                // Declared a body and sent none: what it sends is cut short.
                let (tx, rx) = mpsc::channel(1);
                st.stream = Some(tx);
                Self::send_head(&mut st, ResponseBody::stream(rx));
            } else {
                Self::send_head(&mut st, ResponseBody::empty());
            }
        }
        let cl = st.declared_body();
        if st.sent < cl
            && let Some(tx) = st.stream.take()
        {
            // Ending it here would let the client read the next response
            // as the rest of this one: the connection must close instead.
            crate::error!(
                "Response body ended after {} of the {cl} bytes its Content-Length declares: closing the connection",
                st.sent
            );
            let _ = tx.try_send(Err(Aborted));
        }
        st.stream = None;
        Ok(())
    }

    /// The app failed after the head went out: make hyper drop the connection.
    pub fn abort(&self) {
        let mut st = self.lock();
        if let Some(tx) = st.stream.take() {
            let _ = tx.try_send(Err(Aborted));
        }
    }

    /// Answer with an error page instead (nothing was sent yet).
    pub fn fail(&self, resp: Response<ResponseBody>) -> u16 {
        let mut st = self.lock();
        let status = resp.status().as_u16();
        if let Some(reply) = st.reply.take() {
            st.sent_status = Some(resp.status());
            let (parts, body) = resp.into_parts();
            let body = match st.busy.take() {
                Some(b) => body.with_busy(b),
                None => body,
            };
            let _ = reply.send(Response::from_parts(parts, body));
        }
        status
    }

    /// What went on the wire, for the access log.
    pub fn answer(&self, want_headers: bool) -> Answer {
        let st = self.lock();
        Answer {
            // Nothing handed over (the client left first): gunicorn's 500.
            status: st.sent_status.map_or(500, |s| s.as_u16()),
            bytes: st.sent,
            headers: if want_headers {
                st.log_headers()
            } else {
                Vec::new()
            },
        }
    }
}

impl State {
    /// The body the head promises: its Content-Length, where one is sent at all.
    fn declared_body(&self) -> u64 {
        let bodiless = self.head_request
            || self
                .status
                .is_some_and(|s| s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED);
        if bodiless {
            0
        } else {
            self.content_length.unwrap_or(0)
        }
    }

    fn log_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

/// A WSGI status line (`"200 OK"`): a final status (200 to 599; hyper
/// sends 1xx itself, and RFC 9110 gives nothing above 599), and its reason
/// phrase when it is not the code's usual one, to send as the app wrote it.
fn parse_status(status: &str) -> Result<(StatusCode, Option<ReasonPhrase>), &'static str> {
    let code = status
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status.len() == 3 || status.as_bytes()[3] == b' ')
        .ok_or("expected a three-digit code and a reason, like '200 OK'")?;
    if !(200..=599).contains(&code) {
        return Err("the code must be a final status, 200 to 599");
    }
    let code = StatusCode::from_u16(code).map_err(|_| "not a status code")?;
    let reason = status.get(4..).unwrap_or("");
    // RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text )
    if reason
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err("the reason phrase holds a control character");
    }
    if reason.is_empty() || code.canonical_reason() == Some(reason) {
        return Ok((code, None));
    }
    let phrase =
        ReasonPhrase::try_from(reason.as_bytes()).map_err(|_| "the reason phrase is not valid")?;
    Ok((code, Some(phrase)))
}

/// A body chunk as Bytes: small ones copied, large ones handed over without a copy.
fn to_bytes(chunk: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = chunk.cast::<PyBytes>() {
        let slice = b.as_bytes();
        if slice.len() < COPY_BELOW {
            return Ok(Bytes::copy_from_slice(slice));
        }
        let backed: PyBackedBytes = chunk.extract()?;
        return Ok(Bytes::from_owner(backed));
    }
    Err(PyTypeError::new_err(format!(
        "response body items must be bytes, not {}",
        chunk
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    )))
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.borrow();
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let st = this.lock();
            if let Some(exc) = exc_info {
                if st.reply.is_none() {
                    // Too late to change the response: re-raise the app's error (PEP 3333).
                    let value = exc.cast::<PyTuple>()?.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
            } else if st.status.is_some() {
                return Err(PyAssertionError::new_err("Response headers already set!"));
            }
        }
        let status_str = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str like '200 OK'"))?
            .to_cow()?;
        let (code, reason) = parse_status(&status_str).map_err(|why| {
            PyValueError::new_err(format!("invalid status {status_str:?}: {why}"))
        })?;

        let mut map = HeaderMap::new();
        let mut content_length = None;
        for item in headers.try_iter()? {
            let converted = super::headers::convert(&item?)?;
            if converted.content_length.is_some() {
                content_length = converted.content_length;
            }
            if let Some((name, value)) = converted.header {
                map.append(name, value);
            }
        }
        if !map.contains_key(header::SERVER) {
            map.insert(header::SERVER, SERVER_HEADER.clone());
        }
        let py = slf.py();
        let mut st = this.lock();
        st.status = Some(code);
        st.reason = reason;
        st.headers = map;
        st.content_length = content_length;
        if let Some(write) = &st.write {
            return Ok(write.bind(py).clone());
        }
        // Bound once per object: kept only while the request runs (after
        // it, `release` owns the cycle this makes).
        let write = slf.getattr(pyo3::intern!(py, "write"))?;
        if st.reply.is_some() {
            st.write = Some(write.clone().unbind());
        }
        Ok(write)
    }

    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push(py, data)
    }
}
