//! Request counters the workers keep in memory shared with the master
//! (`--metrics-bind`): per worker slot, answers by status class, a duration
//! histogram and the durations' sum, and the same for the time requests
//! waited before their app code started (for a thread, the GIL, the loop). A worker adds with relaxed atomics (no
//! lock, no system call on the request path); the master reads the slots
//! for `/metrics` and folds a slot into its totals when the worker exits.
//!
//! Ours rather than the `prometheus` crate: its registry lives in one
//! process, and ours is spread over forked processes that come and go.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static TALLY: OnceLock<Tally> = OnceLock::new();

/// Make the shared counters (`--metrics-bind`), before any fork.
pub fn install() -> std::io::Result<()> {
    let tally = Tally::new()?;
    let _ = TALLY.set(tally);
    Ok(())
}

/// The slot of the worker in seat `index`, when metrics are on.
pub fn slot(index: usize) -> Option<Slot> {
    TALLY.get()?.slot(index)
}

/// Histogram bounds, seconds (Prometheus' default buckets).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const CLASSES: usize = 5;
/// A histogram's cells: the buckets and +Inf, then the sum in µs.
const HISTOGRAM: usize = BUCKETS.len() + 1 + 1;
/// Where the wait histogram starts in a slot.
const WAIT: usize = CLASSES + HISTOGRAM;
/// Per slot: 5 status classes, the duration histogram, the wait histogram,
/// padded to whole cache lines: two workers never write one line.
const WIDTH: usize = (CLASSES + 2 * HISTOGRAM).next_multiple_of(64 / 8);
/// As many slots as the connection board has seats.
pub const SLOTS: usize = 1024;

/// The counters of every slot, shared by the master and its workers.
#[derive(Clone, Copy)]
pub struct Tally {
    cells: &'static [AtomicU64],
}

/// One worker's counters.
#[derive(Clone, Copy)]
pub struct Slot {
    cells: &'static [AtomicU64],
}

/// Counts summed over slots.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Answers by status class: 1xx … 5xx.
    pub classes: [u64; CLASSES],
    /// Request durations.
    pub duration: Histogram,
    /// Waits before the app started on a request.
    pub wait: Histogram,
}

/// A histogram as Prometheus shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Cumulative counts per bucket, +Inf last.
    pub buckets: [u64; BUCKETS.len() + 1],
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.buckets[BUCKETS.len()]
    }

    fn add_cells(&mut self, cells: &[AtomicU64]) {
        let mut running = 0;
        for (b, cell) in self.buckets.iter_mut().zip(cells) {
            running += cell.load(Ordering::Relaxed);
            *b += running;
        }
        self.sum_seconds += cells[HISTOGRAM - 1].load(Ordering::Relaxed) as f64 / 1e6;
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

impl Tally {
    pub fn new() -> std::io::Result<Tally> {
        Ok(Tally {
            cells: crate::sys::shared_u64(SLOTS * WIDTH)?,
        })
    }

    pub fn slot(&self, index: usize) -> Option<Slot> {
        let start = index.checked_mul(WIDTH)?;
        self.cells
            .get(start..start + WIDTH)
            .map(|cells| Slot { cells })
    }
}

impl Slot {
    /// One answered request (worker side).
    pub fn record(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        self.cells[class].fetch_add(1, Ordering::Relaxed);
        observe(&self.cells[CLASSES..WAIT], took);
    }

    /// The app started on a request that waited this long (worker side).
    pub fn waited(&self, took: Duration) {
        observe(&self.cells[WAIT..WAIT + HISTOGRAM], took);
    }

    /// Add this slot's counts to `totals` (master side).
    pub fn add_to(&self, totals: &mut Totals) {
        for (c, cell) in totals.classes.iter_mut().zip(&self.cells[..CLASSES]) {
            *c += cell.load(Ordering::Relaxed);
        }
        totals.duration.add_cells(&self.cells[CLASSES..WAIT]);
        totals.wait.add_cells(&self.cells[WAIT..WAIT + HISTOGRAM]);
    }

    /// Start again from zero (the master, once a worker's counts are folded
    /// into its totals and before the slot is handed out again).
    pub fn clear(&self) {
        for c in self.cells {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// One observation into a histogram's cells (not cumulative: the master sums).
fn observe(cells: &[AtomicU64], took: Duration) {
    let secs = took.as_secs_f64();
    let bucket = BUCKETS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(BUCKETS.len());
    cells[bucket].fetch_add(1, Ordering::Relaxed);
    cells[HISTOGRAM - 1].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
}

impl Totals {
    pub fn count(&self) -> u64 {
        self.duration.count()
    }

    pub fn add(&mut self, other: &Totals) {
        for (a, b) in self.classes.iter_mut().zip(other.classes) {
            *a += b;
        }
        self.duration.add(&other.duration);
        self.wait.add(&other.wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_counts_classes_buckets_and_the_sum() {
        let tally = Tally::new().unwrap();
        let slot = tally.slot(3).unwrap();
        slot.record(200, Duration::from_millis(3));
        slot.record(204, Duration::from_millis(30));
        slot.record(404, Duration::from_secs(20));
        slot.record(503, Duration::from_millis(7));
        let mut t = Totals::default();
        slot.add_to(&mut t);
        slot.waited(Duration::from_millis(20));
        assert_eq!(t.classes, [0, 2, 0, 1, 1]);
        assert_eq!(t.count(), 4);
        let d = &t.duration;
        assert_eq!(d.buckets[0], 1, "≤ 5 ms");
        assert_eq!(d.buckets[1], 2, "≤ 10 ms, cumulative");
        assert_eq!(d.buckets[3], 3, "≤ 50 ms");
        assert_eq!(d.buckets[BUCKETS.len() - 1], 3, "≤ 10 s: not the 20 s one");
        assert!((d.sum_seconds - 20.040).abs() < 1e-6, "{}", d.sum_seconds);
        assert_eq!(t.wait, Histogram::default(), "read before the wait");
        let mut t = Totals::default();
        slot.add_to(&mut t);
        assert_eq!(t.wait.count(), 1);
        assert_eq!(t.wait.buckets[1], 0, "not ≤ 10 ms");
        assert_eq!(t.wait.buckets[2], 1, "≤ 25 ms");
        assert!((t.wait.sum_seconds - 0.020).abs() < 1e-6);
        slot.clear();
        let mut t = Totals::default();
        slot.add_to(&mut t);
        assert_eq!(t, Totals::default());
        assert!(tally.slot(SLOTS).is_none());
    }
}
