//! The slowest a client may send a request body or read a response
//! (`--min-request-body-rate`, `--min-response-rate`), as Kestrel's
//! minimum data rates: averaged from when the transfer first had to wait
//! for the client, after a grace period, so that a slow link passes and a
//! client that trickles a few bytes a second to hold a thread does not.
//!
//! The clock starts only when a transfer stalls (the socket would block),
//! so a request that never waits for its client reads no clock.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// How long a stalled transfer runs before its rate is judged.
pub const GRACE: Duration = Duration::from_secs(5);

pub struct Pace {
    /// Bytes per second; 0: no floor.
    rate: u32,
    /// Since the first stall: when it began, and the bytes moved since.
    since: Option<(Instant, u64)>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    pub fn new(rate: u32) -> Pace {
        Pace {
            rate,
            since: None,
            timer: None,
        }
    }

    /// Bytes moved (counted once the clock runs).
    pub fn moved(&mut self, n: usize) {
        if let Some((_, bytes)) = &mut self.since {
            *bytes += n as u64;
        }
    }

    /// The transfer waits for the client. True when it has fallen below the
    /// floor; otherwise the task is woken when it would.
    ///
    /// A body or response moves in many pieces, each a stall: the timer is
    /// armed once per transfer (for the end of the grace) and the clock read
    /// only when it fires, when the deadline the bytes moved have earned
    /// since is worked out and the timer moved there if it lies later.
    pub fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.rate == 0 {
            return false;
        }
        if self.since.is_none() {
            let now = Instant::now();
            self.since = Some((now, 0));
            match &mut self.timer {
                Some(t) => t.as_mut().reset(now + GRACE),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(now + GRACE))),
            }
        }
        let (Some((since, bytes)), Some(timer)) = (self.since, &mut self.timer) else {
            return false;
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let earned = Duration::from_secs_f64(bytes as f64 / f64::from(self.rate));
            let deadline = since + GRACE.max(earned);
            if Instant::now() >= deadline {
                return true;
            }
            timer.as_mut().reset(deadline);
        }
    }

    /// The transfer is over (or the connection idle): the next one starts afresh.
    pub fn reset(&mut self) {
        self.since = None;
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_transfer_is_cut_only_below_the_floor_after_the_grace() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut p = Pace::new(100);
        assert!(!p.stalled(&mut cx), "the clock starts");
        tokio::time::advance(GRACE - Duration::from_millis(1)).await;
        assert!(!p.stalled(&mut cx), "within the grace");
        p.moved(1000); // 10 s worth at 100 B/s
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!p.stalled(&mut cx), "9 s in, 1000 bytes: above the floor");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(p.stalled(&mut cx), "11 s in, 1000 bytes: below it");
        p.reset();
        assert!(!p.stalled(&mut cx), "a new transfer starts afresh");
        let mut off = Pace::new(0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!off.stalled(&mut cx));
    }
}
