//! The worker's side of the status pipe.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;

use crate::proto::{Kind, Msg};
use crate::request::Stats;

pub struct Reporter {
    pipe: OwnedFd,
}

impl Reporter {
    pub fn new(pipe: OwnedFd) -> Reporter {
        Reporter { pipe }
    }

    /// Send one message; false when the master is gone.
    pub fn send(&self, kind: Kind, stats: &Stats) -> bool {
        let msg = Msg {
            kind,
            in_flight: stats.in_flight.load(Ordering::Relaxed),
            requests: stats.requests.load(Ordering::Relaxed),
        }
        .encode();
        // 16 bytes: atomic below PIPE_BUF.
        !matches!(
            nix::unistd::write(&self.pipe, &msg),
            Err(nix::errno::Errno::EPIPE)
        )
    }
}
