//! PEP 3333 on the app threads: environ, wsgi.input, start_response, the
//! response iterable, file_wrapper, close(), and the access log line.

pub(crate) mod environ;
mod headers;
mod input;
pub(crate) mod response;

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::python::{Support, hooks, traceback_text};
use crate::request::forwarded::Forwarded;
use crate::request::outbox::Outbox;
use crate::request::response::{SERVER_HEADER, error_response};
use crate::request::{Answer, Job, Ledger, Local, Peer, Wait};
use environ::Keys;
use input::Input;
use response::StartResponse;

/// What a worker's app threads share.
pub struct WsgiApp {
    app: Py<PyAny>,
    keys: Keys,
    base: Py<PyDict>,
    file_wrapper: Py<PyAny>,
    forwarded: Forwarded,
    ledger: Arc<Ledger>,
    wait: Wait,
}

pub struct Options {
    /// `header_map = "dangerous"`: header names with an underscore reach the environ too.
    pub underscore_headers: bool,
    /// Underscore header names a trusted proxy may send, lowercase.
    pub forwarder_headers: Vec<String>,
    pub multithread: bool,
    pub multiprocess: bool,
    pub forwarded: Forwarded,
    pub wait: Wait,
}

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        support: &Support,
        opts: Options,
        ledger: Arc<Ledger>,
    ) -> PyResult<WsgiApp> {
        let mut keys = Keys::new(py);
        keys.underscore_headers = opts.underscore_headers;
        keys.forwarder_headers = opts.forwarder_headers.clone();
        let emit = pyo3::wrap_pyfunction!(crate::python::emit_log, py)?;
        let errors = support.attr(py, "ErrorStream")?.call1((emit,))?;
        let file_wrapper = support.attr(py, "FileWrapper")?;
        let base = PyDict::new(py);
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.errors", errors)?;
        base.set_item("wsgi.multithread", opts.multithread)?;
        base.set_item("wsgi.multiprocess", opts.multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.file_wrapper", &file_wrapper)?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item(
            "SERVER_SOFTWARE",
            SERVER_HEADER.to_str().unwrap_or("ferricorn"),
        )?;
        base.set_item("SCRIPT_NAME", keys.script_name())?;
        keys.reserve_slots(py, &base)?;
        let base = environ::make_room(base)?;
        Ok(WsgiApp {
            app,
            keys,
            base: base.unbind(),
            file_wrapper: file_wrapper.unbind(),
            forwarded: opts.forwarded,
            ledger,
            wait: opts.wait,
        })
    }

    /// Serve one request on this (app) thread, which holds the GIL. With
    /// `hold`, a complete response waits there to be sent with others.
    pub fn handle(&self, py: Python<'_>, job: Job, hold: Option<&Arc<Outbox>>) {
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
        let expired = || deadline.as_ref().is_some_and(|d| d.expired());
        if expired() {
            // Answered 504 while it waited for a thread: not worth starting.
            self.ledger.served(&parts, &peer, started, || Answer {
                status: 504,
                bytes: 0,
                headers: Vec::new(),
            });
            return;
        }
        self.ledger.began(started);
        // pre_request / post_request: gunicorn's `req`, and the environ and
        // headers kept for post_request.
        let hooks = hooks::installed().filter(|h| h.per_request);
        let input =
            Bound::new(py, Input::new(body, self.wait.clone())).expect("allocating wsgi.input");
        let sr = StartResponse::obtain(
            py,
            reply,
            busy,
            &self.wait,
            self.ledger.wants_response_headers || hooks.is_some(),
            hold.cloned(),
            parts.method == http::Method::HEAD,
        )
        .expect("allocating start_response");

        let mut kept_env = None;
        let hooked = hooks.map(|h| (h, hook_request(py, h, &parts, &peer)));
        let result = match &hooked {
            Some((h, Ok(req))) => h.pre_request(py, req).and_then(|()| {
                self.run(py, &parts, &peer, &local, &input, &sr, Some(&mut kept_env))
            }),
            Some((_, Err(e))) => Err(e.clone_ref(py)),
            None => self.run(py, &parts, &peer, &local, &input, &sr, None),
        };
        let sr_ref = sr.borrow();
        if let Err(e) = result {
            let path = parts.uri.path();
            let client_error = input.borrow().client_error.load(Ordering::Relaxed);
            if client_error != 0 {
                crate::warning!("Invalid request from {}: {}", peer.ip_string(), e);
                if !sr_ref.head_sent() {
                    let status =
                        StatusCode::from_u16(client_error).unwrap_or(StatusCode::BAD_REQUEST);
                    let reason = status.canonical_reason().unwrap_or("Bad Request");
                    sr_ref.fail(error_response(status, reason));
                }
            } else {
                // Past its deadline, it was stopped (the exception it got)
                // or failed meanwhile: the timeout's line tells the story.
                if !expired() {
                    crate::error!("Error handling request {path}\n{}", traceback_text(py, &e));
                }
                if sr_ref.head_sent() {
                    sr_ref.abort();
                } else {
                    sr_ref.fail(error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                    ));
                }
            }
        }

        self.ledger.served(&parts, &peer, started, || {
            let mut answer = sr_ref.answer(self.ledger.wants_response_headers);
            if deadline.as_ref().is_some_and(|d| d.answered_504()) {
                answer.status = 504;
                answer.bytes = 0;
            }
            answer
        });
        if let Some(d) = &deadline {
            d.take_stuck(&self.ledger.stats().stuck);
        }
        if let Some((h, Ok(req))) = &hooked {
            let answer = sr_ref.answer(true);
            let status = StatusCode::from_u16(answer.status).map_or_else(
                |_| answer.status.to_string(),
                |s| format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or("")),
            );
            let env = kept_env.map_or_else(|| PyDict::new(py).into_any(), |e| e.into_any());
            let posted = h
                .response(py, status, answer.headers, answer.bytes)
                .and_then(|resp| h.post_request(py, req, &env, &resp));
            if let Err(e) = posted {
                crate::error!("Exception in post_request hook\n{}", traceback_text(py, &e));
            }
        }
        drop(sr_ref);
        StartResponse::release(sr);
    }

    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        parts: &Parts,
        peer: &Peer,
        local: &Local,
        input: &Bound<'py, Input>,
        sr: &Bound<'py, StartResponse>,
        keep_env: Option<&mut Option<Bound<'py, PyDict>>>,
    ) -> PyResult<()> {
        let env = self.base.bind(py).copy()?;
        environ::fill(
            py,
            &self.keys,
            &env,
            parts,
            peer,
            local,
            &self.forwarded,
            input.as_any(),
        )?;
        if let Some(keep) = keep_env {
            *keep = Some(env.clone());
        }
        let result = self.app.bind(py).call1((env, sr))?;
        let sr = sr.borrow();

        // The common case: a list with the whole body.
        if let Ok(list) = result.cast::<PyList>() {
            match list.len() {
                0 => return sr.finish(),
                1 => return sr.finish_with(&list.get_item(0)?),
                _ => {
                    for item in list.iter() {
                        sr.push(py, &item)?;
                    }
                    return sr.finish();
                }
            }
        }

        let outcome = if result.is_instance(self.file_wrapper.bind(py))? {
            self.send_file(py, &result, &sr)
        } else {
            self.iterate(py, &result, &sr)
        };
        // PEP 3333: close() is called whatever happened, also if the client left.
        let closed = match result.getattr_opt(pyo3::intern!(py, "close"))? {
            Some(close) => close.call0().map(|_| ()),
            None => Ok(()),
        };
        outcome?;
        closed?;
        sr.finish()
    }

    fn iterate(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        sr: &StartResponse,
    ) -> PyResult<()> {
        for item in result.try_iter()? {
            sr.push(py, &item?)?;
            if sr.client_gone() {
                break;
            }
        }
        Ok(())
    }

    /// wsgi.file_wrapper over a real file: read it without the GIL.
    fn send_file(
        &self,
        py: Python<'_>,
        wrapper: &Bound<'_, PyAny>,
        sr: &StartResponse,
    ) -> PyResult<()> {
        let filelike = wrapper.getattr("filelike")?;
        let fd = filelike
            .call_method0("fileno")
            .and_then(|f| f.extract::<i32>())
            .ok();
        let Some(fd) = fd else {
            return self.iterate(py, wrapper, sr);
        };
        let offset: u64 = filelike
            .call_method0("tell")
            .and_then(|t| t.extract())
            .unwrap_or(0);
        let blksize: usize = wrapper.getattr("blksize")?.extract().unwrap_or(8192);
        // SAFETY: the app's file object owns `fd` and keeps it open while
        // we copy it (the GIL is held).
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(copy) = borrowed.try_clone_to_owned() else {
            return self.iterate(py, wrapper, sr);
        };
        let file = std::fs::File::from(copy);
        let chunk = blksize.clamp(64 * 1024, 1024 * 1024);
        let mut pos = offset;
        loop {
            let data = py.detach(|| {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; chunk];
                let n = file.read_at(&mut buf, pos)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(Bytes::from(buf))
            })?;
            if data.is_empty() {
                break;
            }
            pos += data.len() as u64;
            sr.push_bytes(py, data)?;
            if sr.client_gone() {
                break;
            }
        }
        Ok(())
    }
}

/// gunicorn's `req` for pre_request and post_request.
fn hook_request<'py>(
    py: Python<'py>,
    h: &hooks::Hooks,
    parts: &Parts,
    peer: &Peer,
) -> PyResult<Bound<'py, PyAny>> {
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_uppercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let version = match parts.version {
        http::Version::HTTP_10 => (1, 0),
        http::Version::HTTP_2 => (2, 0),
        _ => (1, 1),
    };
    h.request(
        py,
        parts.method.as_str(),
        &parts.uri.to_string(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        version,
        headers,
        peer.ip_string(),
    )
}
