//! What every served request leaves behind, whatever the worker class: the
//! access log line, the worker's counters, and recycling after
//! `--max-requests`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Stats;
use crate::log::access::{AccessLog, Record};

pub struct Ledger {
    access: Option<AccessLog>,
    /// The access log format shows response headers (`{name}o`).
    pub wants_response_headers: bool,
    stats: Arc<Stats>,
    /// Recycle the worker after this many requests (0: never).
    max_requests: u64,
    on_max_requests: Box<dyn Fn() + Send + Sync>,
}

impl Ledger {
    pub fn new(
        access: Option<AccessLog>,
        wants_response_headers: bool,
        stats: Arc<Stats>,
        max_requests: u64,
        on_max_requests: Box<dyn Fn() + Send + Sync>,
    ) -> Ledger {
        Ledger {
            wants_response_headers: access.is_some() && wants_response_headers,
            access,
            stats,
            max_requests,
            on_max_requests,
        }
    }

    /// Whether `served` wants a record (build one only then).
    pub fn logs(&self) -> bool {
        self.access.is_some()
    }

    pub fn reopen(&self) {
        if let Some(a) = &self.access {
            a.reopen();
        }
    }

    /// One request is over: log it, count it, recycle the worker when due.
    pub fn served(&self, record: Option<&Record<'_>>) {
        if let (Some(access), Some(record)) = (&self.access, record) {
            access.write(record);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let served = self.stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && served == self.max_requests {
            crate::info!("Autorestarting worker after current request.");
            (self.on_max_requests)();
        }
    }
}
