//! `/metrics` in Prometheus' text format: request counts from the workers'
//! shared counters (`crate::metrics`), the pool from the supervisor.

use std::fmt::Write;
use std::os::fd::AsFd;
use std::time::SystemTime;

use super::supervisor::{State, Supervisor};
use crate::listen::Listener;
use crate::metrics::{BUCKETS, Histogram, Totals};

/// What the page is made from besides the supervisor.
pub struct Sources<'a, S> {
    /// The counts of workers that have exited.
    pub retired: &'a Totals,
    /// The slots of those alive.
    pub seats: S,
    pub class: &'a str,
    pub listeners: &'a [Listener],
    /// When this master started (its image, after an upgrade).
    pub started: SystemTime,
}

/// The page, now.
pub fn render<S: Iterator<Item = usize>>(sup: &Supervisor, from: Sources<'_, S>) -> String {
    let class = from.class;
    let mut t = from.retired.clone();
    for slot in from.seats.filter_map(crate::metrics::slot) {
        slot.add_to(&mut t);
    }
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    head(
        o,
        "ferricorn_requests_total",
        "counter",
        "Requests answered, by status class.",
    );
    for (i, n) in t.classes.iter().enumerate() {
        let _ = writeln!(
            o,
            "ferricorn_requests_total{{worker_class=\"{class}\",status=\"{}xx\"}} {n}",
            i + 1
        );
    }
    histogram(
        o,
        "ferricorn_request_duration_seconds",
        "From a request's arrival to the end of its answer.",
        &t.duration,
    );
    histogram(
        o,
        "ferricorn_request_wait_seconds",
        "From a request's arrival to its app code starting: waiting for an app thread and the GIL (sync, gthread) or for the event loop (gevent, asgi).",
        &t.wait,
    );

    head(
        o,
        "ferricorn_requests_in_flight",
        "gauge",
        "Requests being served (from the workers' last reports).",
    );
    let in_flight: u64 = sup.workers().iter().map(|w| u64::from(w.in_flight)).sum();
    let _ = writeln!(o, "ferricorn_requests_in_flight {in_flight}");

    head(
        o,
        "ferricorn_workers",
        "gauge",
        "Worker processes, by state.",
    );
    for (name, pick) in [("booting", State::Booting), ("serving", State::Serving)] {
        let n = sup.workers().iter().filter(|w| w.state == pick).count();
        let _ = writeln!(o, "ferricorn_workers{{state=\"{name}\"}} {n}");
    }
    let retiring = sup
        .workers()
        .iter()
        .filter(|w| {
            matches!(
                w.state,
                State::Retiring { .. } | State::Aborting { .. } | State::Killed
            )
        })
        .count();
    let _ = writeln!(o, "ferricorn_workers{{state=\"stopping\"}} {retiring}");
    head(
        o,
        "ferricorn_workers_target",
        "gauge",
        "Workers the master keeps.",
    );
    let _ = writeln!(o, "ferricorn_workers_target {}", sup.target());

    head(
        o,
        "ferricorn_worker_restarts_total",
        "counter",
        "Workers replaced, by reason.",
    );
    for (reason, n) in sup.restarts() {
        let _ = writeln!(
            o,
            "ferricorn_worker_restarts_total{{reason=\"{reason}\"}} {n}"
        );
    }

    let (sum, count) = sup.boot_seconds();
    head(
        o,
        "ferricorn_worker_boot_seconds",
        "summary",
        "From a worker's fork to its app imported and accepting.",
    );
    let _ = writeln!(o, "ferricorn_worker_boot_seconds_sum {sum}");
    let _ = writeln!(o, "ferricorn_worker_boot_seconds_count {count}");
    head(
        o,
        "ferricorn_start_time_seconds",
        "gauge",
        "When the master started, in seconds since the Unix epoch.",
    );
    let started = from
        .started
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(o, "ferricorn_start_time_seconds {started}");

    // TCP only: the kernel reports no queue for a unix socket this way.
    let queues: Vec<_> = from
        .listeners
        .iter()
        .filter_map(|l| crate::sys::accept_queue(l.fd.as_fd()).map(|q| (l.addr.to_string(), q)))
        .collect();
    head(
        o,
        "ferricorn_listen_queue",
        "gauge",
        "Connections the kernel accepted that no worker has taken yet (TCP listeners).",
    );
    for (addr, (queued, _)) in &queues {
        let _ = writeln!(o, "ferricorn_listen_queue{{listener=\"{addr}\"}} {queued}");
    }
    head(
        o,
        "ferricorn_listen_queue_limit",
        "gauge",
        "The listen backlog: connections the kernel queues before it drops new ones.",
    );
    for (addr, (_, limit)) in &queues {
        let _ = writeln!(
            o,
            "ferricorn_listen_queue_limit{{listener=\"{addr}\"}} {limit}"
        );
    }
    out
}

fn histogram(o: &mut String, name: &str, help: &str, h: &Histogram) {
    head(o, name, "histogram", help);
    for (b, n) in BUCKETS.iter().zip(h.buckets) {
        let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(o, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(o, "{name}_count {}", h.count());
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
