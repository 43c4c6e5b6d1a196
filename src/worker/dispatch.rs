//! Where the I/O thread sends a request: the app threads' queue, or the gevent hub.

use std::sync::Arc;

use super::hub::Hub;
use crate::wsgi::Job;

pub enum Jobs {
    Threads(crossbeam_channel::Sender<Job>),
    Hub(Arc<Hub>),
}

impl Jobs {
    /// False when nothing will run the job any more (the worker is going away).
    pub fn send(&self, job: Job) -> bool {
        match self {
            Jobs::Threads(tx) => tx.send(job).is_ok(),
            Jobs::Hub(hub) => {
                hub.submit(job);
                true
            }
        }
    }
}
