//! `WatchdogSec=`: the master pings while its loop runs and it is in control of its pool.

use std::time::{Duration, Instant};

pub struct Watchdog {
    pub interval: Duration,
    next: Option<Instant>,
}

impl Watchdog {
    /// Read (and remove) `WATCHDOG_USEC`/`WATCHDOG_PID`; None when not asked for us.
    pub fn from_env() -> Option<Watchdog> {
        // SAFETY: called at start-up while the process is single-threaded.
        let interval =
            unsafe { sd_notify::watchdog_enabled_and_unset_env() }.filter(|d| !d.is_zero())?;
        Some(Watchdog {
            interval,
            next: None,
        })
    }

    /// Ping now (at READY, and right after an exec) and schedule the next one.
    pub fn ping_now(&mut self, notifier: &super::notify::Notifier) {
        notifier.send("WATCHDOG=1");
        self.next = Some(Instant::now() + self.interval / 2);
    }

    /// Ping if half an interval has passed since the last one.
    pub fn tick(&mut self, notifier: &super::notify::Notifier) {
        if let Some(next) = self.next
            && Instant::now() >= next
        {
            self.ping_now(notifier);
        }
    }

    /// How long the master's loop may sleep without missing a ping.
    pub fn poll_budget(&self) -> Duration {
        self.interval / 4
    }
}
