//! `WatchdogSec=`: the master pings while its loop runs and it is in control of its pool.

use std::time::{Duration, Instant};

pub struct Watchdog {
    pub interval: Duration,
    next: Option<Instant>,
}

impl Watchdog {
    /// Read (and remove) `WATCHDOG_USEC`/`WATCHDOG_PID`; None when not asked for us.
    pub fn from_env() -> Option<Watchdog> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for var in ["WATCHDOG_USEC", "WATCHDOG_PID"] {
            // SAFETY: called at start-up while the process is single-threaded.
            unsafe { std::env::remove_var(var) };
        }
        if let Some(pid) = pid
            && pid.trim().parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
        Some(Watchdog {
            interval: Duration::from_micros(usec),
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
