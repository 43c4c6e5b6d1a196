//! The worker's side of the status pipe.

use std::os::fd::{AsRawFd, OwnedFd};
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
        // SAFETY: write a local 16-byte buffer to our pipe; atomic below PIPE_BUF.
        let n = unsafe {
            libc::write(
                self.pipe.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
            )
        };
        n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPIPE)
    }
}
