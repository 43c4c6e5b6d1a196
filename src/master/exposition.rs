//! `/metrics` in Prometheus' text format: request counts from the workers'
//! shared counters (`crate::metrics`), the pool from the supervisor.

use std::fmt::Write;

use super::supervisor::{State, Supervisor};
use crate::metrics::{BUCKETS, Totals};

/// The page, now: `retired` are the counts of workers that have exited,
/// `seats` the slots of those alive.
pub fn render(
    sup: &Supervisor,
    retired: &Totals,
    seats: impl Iterator<Item = usize>,
    class: &str,
) -> String {
    let mut t = retired.clone();
    for slot in seats.filter_map(crate::metrics::slot) {
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
    head(
        o,
        "ferricorn_request_duration_seconds",
        "histogram",
        "From a request's arrival to the end of its answer.",
    );
    for (b, n) in BUCKETS.iter().zip(t.buckets) {
        let _ = writeln!(
            o,
            "ferricorn_request_duration_seconds_bucket{{le=\"{b}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "ferricorn_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        t.count()
    );
    let _ = writeln!(
        o,
        "ferricorn_request_duration_seconds_sum {}",
        t.sum_seconds
    );
    let _ = writeln!(o, "ferricorn_request_duration_seconds_count {}", t.count());

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
    out
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
