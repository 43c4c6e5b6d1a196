//! What every served request leaves behind, whatever the worker class: the
//! access log line, the worker's counters, and recycling after
//! `--max-requests`.

use http::request::Parts;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::Peer;
use crate::log::access::{AccessLog, Record};

/// How a request was answered: what went on the wire (the status the
/// client got, not the one the app asked for), for the access log.
pub struct Answer {
    pub status: u16,
    pub bytes: u64,
    /// Only when the format shows response headers.
    pub headers: Vec<(String, String)>,
}

/// Counters shared by the accept loop, the connections and the app threads.
#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub in_flight: AtomicU32,
    /// Of those in flight, requests whose app thread is stuck past
    /// `--request-timeout`: a draining worker does not wait for them.
    pub stuck: AtomicU32,
}

pub struct Ledger {
    access: Option<AccessLog>,
    /// The access log format shows response headers (`{name}o`).
    pub wants_response_headers: bool,
    stats: Arc<Stats>,
    /// Recycle the worker after this many requests (0: never).
    max_requests: u64,
    on_max_requests: Box<dyn Fn() + Send + Sync>,
    /// This worker's counters for `/metrics` (`--metrics-bind`).
    tally: Option<crate::metrics::Slot>,
    /// `--statsd-host`.
    statsd: Option<crate::statsd::Statsd>,
}

impl Ledger {
    pub fn new(
        access: Option<AccessLog>,
        wants_response_headers: bool,
        stats: Arc<Stats>,
        max_requests: u64,
        on_max_requests: Box<dyn Fn() + Send + Sync>,
        tally: Option<crate::metrics::Slot>,
        statsd: Option<crate::statsd::Statsd>,
    ) -> Ledger {
        Ledger {
            wants_response_headers: access.is_some() && wants_response_headers,
            access,
            stats,
            max_requests,
            on_max_requests,
            tally,
            statsd,
        }
    }

    pub fn reopen(&self) {
        if let Some(a) = &self.access {
            a.reopen();
        }
    }

    /// One request is over: log it and count it (`answer` is asked only
    /// when there is an access log or metrics), recycle the worker when due.
    pub fn served(
        &self,
        parts: &Parts,
        peer: &Peer,
        started: Instant,
        answer: impl FnOnce() -> Answer,
    ) {
        if self.access.is_none() && self.tally.is_none() && self.statsd.is_none() {
            return self.counted();
        }
        let answer = answer();
        if let Some(tally) = &self.tally {
            tally.record(answer.status, started.elapsed());
        }
        if let Some(statsd) = &self.statsd {
            statsd.request(answer.status, started.elapsed());
        }
        if let Some(access) = &self.access {
            let remote = peer.ip_string();
            access.write(&Record {
                remote: &remote,
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query: parts.uri.query().unwrap_or(""),
                protocol: match parts.version {
                    http::Version::HTTP_10 => "HTTP/1.0",
                    http::Version::HTTP_2 => "HTTP/2.0",
                    _ => "HTTP/1.1",
                },
                status: answer.status,
                bytes: answer.bytes,
                duration: started.elapsed(),
                request_headers: &parts.headers,
                response_headers: &answer.headers,
            });
        }
        self.counted();
    }

    /// The app starts on a request that arrived at `started` (`/metrics`:
    /// the time it waited for a thread, the GIL or the event loop).
    pub fn began(&self, started: Instant) {
        if let Some(tally) = &self.tally {
            tally.waited(started.elapsed());
        }
    }

    /// The counters a request's deadline keeps its stuck mark in.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn counted(&self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let served = self.stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && served == self.max_requests {
            crate::info!("Autorestarting worker after current request.");
            (self.on_max_requests)();
        }
    }
}
