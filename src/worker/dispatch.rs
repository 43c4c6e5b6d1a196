//! Where the I/O thread sends a request: the app threads' queue, or the gevent hub.

use std::sync::Arc;

use super::pool::Queue;
use crate::request::{Deadline, Dispatch, Hub, Job};

#[derive(Clone)]
pub enum Jobs {
    Threads(Arc<Queue>),
    Hub(Arc<Hub>),
}

impl Dispatch for Jobs {
    /// Both live as long as the worker: a job sent is always taken.
    fn send(&self, job: Job) {
        match self {
            Jobs::Threads(queue) => queue.push(job),
            Jobs::Hub(hub) => hub.submit(job),
        }
    }

    /// A request is in flight again after none was.
    fn busy(&self) {
        match self {
            Jobs::Threads(queue) => queue.outbox.busy(),
            Jobs::Hub(hub) => hub.outbox.busy(),
        }
    }

    /// An event loop stops the greenlet or task; an app thread cannot be
    /// stopped, so its worker is replaced.
    fn expired(&self, deadline: Arc<Deadline>) {
        match self {
            Jobs::Threads(queue) => queue.expired(deadline),
            Jobs::Hub(hub) => hub.expire(deadline),
        }
    }
}
