//! Where the I/O thread sends a request: the app threads' queue, or the gevent hub.

use std::sync::Arc;

use super::hub::Hub;
use super::pool::Queue;
use crate::wsgi::Job;

pub enum Jobs {
    Threads(Arc<Queue>),
    Hub(Arc<Hub>),
}

impl Jobs {
    /// False when nothing will run the job any more (the worker is going away).
    pub fn send(&self, job: Job) -> bool {
        match self {
            Jobs::Threads(queue) => {
                queue.push(job);
                true
            }
            Jobs::Hub(hub) => {
                hub.submit(job);
                true
            }
        }
    }
}
