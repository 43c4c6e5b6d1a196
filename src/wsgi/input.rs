//! `wsgi.input`: the request body streamed from hyper; waiting for it lets
//! other requests run (GIL released, or the greenlet parked).

use bytes::{Buf, Bytes};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::request::Wait;
use crate::request::body_reader::{BodyReader, Received};

#[pyclass(module = "ferricorn")]
pub struct Input {
    state: Mutex<State>,
    /// The client sent a malformed body (bad chunk size, short body: 400)
    /// or sent it too slowly (408): the status to answer, 0 if none.
    pub client_error: AtomicU16,
    wait: Wait,
}

struct State {
    /// Shared so that a reader can wait on it without holding the lock.
    body: Option<Arc<BodyReader>>,
    chunks: VecDeque<Bytes>,
    buffered: usize,
}

impl Input {
    pub fn new(body: Option<BodyReader>, wait: Wait) -> Input {
        Input {
            state: Mutex::new(State {
                body: body.map(Arc::new),
                chunks: VecDeque::new(),
                buffered: 0,
            }),
            client_error: AtomicU16::new(0),
            wait,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait (as this worker class waits) until more of the body has arrived
    /// and take all of it; false at the end of the body.
    ///
    /// The lock is not held while waiting: a second thread reading the same
    /// input would block on it while holding the GIL, which the waiting one
    /// needs back to return (a greenlet would block the whole hub).
    fn fill<'a>(
        &'a self,
        py: Python<'_>,
        st: MutexGuard<'a, State>,
    ) -> PyResult<(MutexGuard<'a, State>, bool)> {
        let Some(body) = st.body.clone() else {
            return Ok((st, false));
        };
        drop(st);
        let received = self.wait.until(py, body.recv());
        let mut st = self.lock();
        match received? {
            Received::Data(chunks, n) => {
                st.chunks.extend(chunks);
                st.buffered += n;
                Ok((st, true))
            }
            Received::End => {
                st.body = None;
                Ok((st, false))
            }
            Received::Failed(e) => {
                st.body = None;
                self.client_error.store(e.status, Ordering::Relaxed);
                Err(PyOSError::new_err(format!(
                    "invalid request body: {}",
                    e.message
                )))
            }
        }
    }

    /// Move `n` buffered bytes into one new Python bytes object (the only copy).
    fn take<'py>(py: Python<'py>, st: &mut State, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let n = n.min(st.buffered);
        st.buffered -= n;
        PyBytes::new_with(py, n, |dst| {
            let mut off = 0;
            while off < n {
                let front = st
                    .chunks
                    .front_mut()
                    .expect("buffered count matches chunks");
                let k = front.len().min(n - off);
                dst[off..off + k].copy_from_slice(&front[..k]);
                front.advance(k);
                if front.is_empty() {
                    st.chunks.pop_front();
                }
                off += k;
            }
            Ok(())
        })
    }

    /// Position just past the first newline within the first `limit` buffered bytes.
    fn newline_within(st: &State, limit: usize) -> Option<usize> {
        let mut seen = 0;
        for c in &st.chunks {
            let window = &c[..c.len().min(limit - seen)];
            if let Some(i) = memchr(b'\n', window) {
                return Some(seen + i + 1);
            }
            seen += window.len();
            if seen >= limit {
                break;
            }
        }
        None
    }

    fn readline_inner<'py>(
        &self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        let mut st = self.lock();
        loop {
            if let Some(end) = Self::newline_within(&st, limit) {
                return Self::take(py, &mut st, end);
            }
            if st.buffered >= limit {
                return Self::take(py, &mut st, limit);
            }
            let (guard, more) = self.fill(py, st)?;
            st = guard;
            if !more {
                let n = st.buffered;
                return Self::take(py, &mut st, n);
            }
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let mut st = self.lock();
        let want = match size {
            Some(n) if n >= 0 => n as usize,
            _ => usize::MAX,
        };
        while st.buffered < want {
            let (guard, more) = self.fill(py, st)?;
            st = guard;
            if !more {
                break;
            }
        }
        let n = st.buffered.min(want);
        Self::take(py, &mut st, n)
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.readline_inner(py, size)
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.readline_inner(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            out.append(line)?;
            total += n;
            if let Some(h) = hint
                && h > 0
                && total >= h as usize
            {
                break;
            }
        }
        Ok(out)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline_inner(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
