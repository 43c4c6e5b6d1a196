//! Workers replaced by memory and by age: a new worker boots first, the old
//! one finishes what it serves, and no request fails.

mod common;

use common::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn rss_mb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 10)
}

/// A route that keeps 20 MB per call, five calls a second, on one worker:
/// without a limit it reaches 1.2 GB in 60 calls. With 150 MB the worker is
/// replaced whenever three checks in a row find it over, so it never gets
/// far past the limit, and every call is answered.
#[test]
fn a_leaking_worker_is_replaced_and_its_memory_stays_bounded() {
    let s = server("conformance:app")
        .args(["-w", "1", "--max-worker-memory", "150"])
        .start();
    let mut peak = 0;
    for i in 0..60 {
        let r = s.get("/leak?20");
        assert_eq!(r.status, 200, "call {i}; log:\n{}", s.log_text());
        for w in s.workers() {
            peak = peak.max(rss_mb(w));
        }
        std::thread::sleep(Duration::from_millis(200)); // the leak's pace
    }
    let log = s.log_text();
    let replaced = log.matches("over max_worker_memory (150 MB)").count();
    assert!(replaced >= 2, "replaced {replaced} times:\n{log}");
    // Three checks a second apart at 100 MB/s, and a new worker's own size.
    assert!(peak < 600, "a worker reached {peak} MB:\n{log}");
}

/// Four lifetimes of 2 s (+ up to 1 s) under load: each worker is replaced
/// in turn, never two at once, and the load sees no error.
#[test]
fn lifetimes_replace_one_worker_at_a_time_under_load() {
    let s = server("conformance:app")
        .args([
            "-w",
            "2",
            "-k",
            "gthread",
            "--max-worker-lifetime",
            "2",
            "--max-worker-lifetime-jitter",
            "1",
        ])
        .wait_workers(2)
        .start();
    let load = Load::start(s.addr(), "/pid");
    s.wait_count("reached max_worker_lifetime", 4, LONG);
    load.wait_answered(20);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok; log:\n{}", s.log_text());
    // Between one replacement and the exit of the worker it replaced, no
    // other replacement starts.
    let log = s.log_text();
    let mut open: Option<String> = None;
    for line in log.lines() {
        if let Some(rest) = line.split("Worker (pid:").nth(1)
            && line.contains("reached max_worker_lifetime")
        {
            let pid = rest.split(')').next().unwrap().to_string();
            assert!(open.is_none(), "two replacements at once:\n{log}");
            open = Some(pid);
        } else if let Some(pid) = &open
            && line.contains(&format!("Worker exiting (pid: {pid})"))
        {
            open = None;
        }
    }
    // Two workers, and at most one replacement beside them.
    let n = s.workers().len();
    assert!((2..=3).contains(&n), "{n} workers:\n{log}");
}
