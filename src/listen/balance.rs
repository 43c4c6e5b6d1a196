//! Sharing connections evenly between workers.
//!
//! Every worker accepts from the same listening sockets. A burst of new
//! connections (a proxy filling its keep-alive pool, a load test starting)
//! wakes all of them, but the worker that is already running drains the
//! accept queue before the others are scheduled: one worker would then
//! serve every keep-alive connection on one core while the others idle.
//!
//! The master keeps a board in memory shared with its workers (mapped
//! before the first fork): one counter per worker of the connections it
//! holds. A worker that holds more than one connection above the worker
//! with the fewest waits before it accepts, which leaves the connection to
//! the others, until they have caught up; if nobody took it within a
//! millisecond, it accepts after all, so a stuck worker costs a new
//! connection a millisecond, not its answer.

use std::sync::atomic::{AtomicU32, Ordering};

/// A seat nobody holds.
const EMPTY: u32 = u32::MAX;
/// Set on the seat of a worker that does not accept (yet: it is booting; or
/// any more: it is stopping): the others do not wait for it. Its count below
/// this bit still moves as its connections close.
const CLOSED: u32 = 1 << 31;
/// How many connections a worker may hold above the fewest before it defers.
const SLACK: u32 = 1;

/// The master's board: slot 0 holds how many seats were ever handed out
/// (workers scan only those); the others count one worker's connections.
#[derive(Clone, Copy)]
pub struct Board {
    slots: &'static [AtomicU32],
}

impl Board {
    pub fn new() -> std::io::Result<Board> {
        let slots = crate::sys::shared_counters(1024)?;
        slots[0].store(0, Ordering::Relaxed);
        for s in &slots[1..] {
            s.store(EMPTY, Ordering::Relaxed);
        }
        Ok(Board { slots })
    }

    /// The seat at `index` (given out by `claim` in another process).
    pub fn seat(&self, index: usize) -> Option<Seat> {
        (index > 0 && index < self.slots.len()).then_some(Seat {
            board: *self,
            index,
        })
    }

    /// A seat for a worker about to be forked, or None when all are taken
    /// (that worker then accepts without looking at the others).
    pub fn claim(&self) -> Option<Seat> {
        let index =
            (1..self.slots.len()).find(|&i| self.slots[i].load(Ordering::Relaxed) == EMPTY)?;
        self.slots[index].store(CLOSED, Ordering::Relaxed);
        self.slots[0].fetch_max(index as u32, Ordering::Relaxed);
        Some(Seat {
            board: *self,
            index,
        })
    }
}

/// One worker's place on the board.
#[derive(Clone, Copy)]
pub struct Seat {
    board: Board,
    index: usize,
}

impl Seat {
    pub fn index(&self) -> usize {
        self.index
    }

    /// Give the seat back once its worker has exited (the master, on reaping it).
    pub fn release(&self) {
        self.slot().store(EMPTY, Ordering::Relaxed);
    }

    /// This worker accepts connections from now on (the worker, once booted).
    pub fn open(&self) {
        self.slot().fetch_and(!CLOSED, Ordering::Relaxed);
    }

    /// This worker accepts no more connections (the worker, when stopping).
    pub fn retire(&self) {
        self.slot().fetch_or(CLOSED, Ordering::Relaxed);
    }

    pub fn joined(&self) {
        self.slot().fetch_add(1, Ordering::Relaxed);
    }

    pub fn left(&self) {
        self.slot().fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether this worker holds more than its share: more than SLACK above
    /// the worker with the fewest connections.
    pub fn ahead(&self) -> bool {
        let slots = self.board.slots;
        let mine = self.slot().load(Ordering::Relaxed);
        let used = (slots[0].load(Ordering::Relaxed) as usize).min(slots.len() - 1);
        let fewest = (1..=used)
            .filter(|&i| i != self.index)
            .map(|i| slots[i].load(Ordering::Relaxed))
            .filter(|&n| n & CLOSED == 0)
            .min();
        fewest.is_some_and(|f| mine > f.saturating_add(SLACK))
    }

    /// Whether another worker that accepts holds fewer than `capacity` connections.
    pub fn others_have_room(&self, capacity: usize) -> bool {
        let slots = self.board.slots;
        let used = (slots[0].load(Ordering::Relaxed) as usize).min(slots.len() - 1);
        (1..=used)
            .filter(|&i| i != self.index)
            .map(|i| slots[i].load(Ordering::Relaxed))
            .any(|n| n & CLOSED == 0 && n != EMPTY && (n as usize) < capacity)
    }

    fn slot(&self) -> &AtomicU32 {
        &self.board.slots[self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_defers_only_when_above_the_fewest_by_more_than_the_slack() {
        let board = Board::new().unwrap();
        let a = board.claim().unwrap();
        a.open();
        assert!(!a.ahead(), "alone: never ahead");
        let b = board.claim().unwrap();
        a.joined();
        a.joined();
        assert!(!a.ahead(), "a booting worker does not count");
        a.left();
        b.open();
        assert!(!a.ahead(), "one above: within the slack");
        a.joined();
        assert!(a.ahead(), "two above");
        assert!(!b.ahead());
        b.joined();
        assert!(!a.ahead());
        b.retire();
        a.joined();
        assert!(!a.ahead(), "a retired worker does not count");
        b.left();
        b.release();
        assert!(!a.ahead(), "nor does a released seat");
        let c = board.claim().unwrap();
        assert_eq!(c.index, b.index, "seats are reused");
        c.open();
        assert!(a.ahead(), "the new worker holds nothing yet");
        a.left();
        a.left();
        assert!(!a.ahead());
        assert!(!c.ahead());
    }
}
