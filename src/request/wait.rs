//! How app code waits for the I/O thread (request body data, room in a
//! response stream): an app thread sleeps without the GIL; a greenlet parks
//! and lets the gevent hub run the others. Both wait on the same futures, so
//! `wsgi.input` and `start_response` have one implementation for every class.

use pyo3::prelude::*;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::Hub;

#[derive(Clone)]
pub enum Wait {
    /// sync and gthread: block this app thread, GIL released.
    Thread,
    /// gevent: park the current greenlet until the I/O thread wakes it.
    Hub(Arc<Hub>),
}

impl Wait {
    /// Run `fut` to completion the way this worker class waits.
    pub fn until<F>(&self, py: Python<'_>, fut: F) -> PyResult<F::Output>
    where
        F: Future + Send,
        F::Output: Send,
    {
        match self {
            Wait::Thread => {
                let mut fut = pin!(fut);
                // Most waits are over before they start (the data is there):
                // answer those without giving up the GIL.
                if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    return Ok(v);
                }
                Ok(py.detach(|| block_on(fut)))
            }
            Wait::Hub(hub) => {
                // The future moves to the heap before it can wait: tokio's
                // channels link their waiters into intrusive lists by address,
                // and a parked greenlet's stack is copied away and its memory
                // reused by other greenlets. A waiter node on that stack would
                // be overwritten while the I/O thread still points at it.
                let mut fut = Box::pin(fut);
                loop {
                    let token = hub.token();
                    let waker = hub.waker(token);
                    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
                        return Ok(v);
                    }
                    hub.park(py, token)?;
                }
            }
        }
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
