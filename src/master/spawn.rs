//! Forking one worker.

use anyhow::Context;
use nix::unistd::{ForkResult, fork};
use std::os::fd::OwnedFd;

use super::signals;
use crate::config::Config;
use crate::listen::Listener;
use crate::listen::balance::Seat;

/// Fork a worker; returns its pid and the read end of its status pipe.
pub fn fork_worker(
    cfg: &Config,
    listeners: &[Listener],
    seat: Option<Seat>,
    close_in_child: &[i32],
) -> anyhow::Result<(i32, OwnedFd)> {
    let (read, write) = crate::sys::pipe().context("creating a worker status pipe")?;
    let master_pid = std::process::id() as i32;
    // Signals stay blocked across fork so the child never runs the master's
    // handler (which would write into the master's signal pipe).
    let mask = signals::block_all();
    // SAFETY: the master is single-threaded (no runtime, no Python: a
    // preloaded app lives in the preloader), so the child starts with
    // consistent locks and allocator state.
    let forked = unsafe { fork() };
    let pid = match forked {
        Err(e) => {
            signals::restore(&mask);
            return Err(e).context("fork");
        }
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Ok(ForkResult::Child) => {
            signals::reset_in_child();
            signals::restore_in_worker(&mask);
            crate::sys::die_with_parent(master_pid);
            drop(read);
            for &fd in close_in_child {
                crate::sys::close_fd(fd);
            }
            crate::worker::run(cfg, listeners, seat, write, None)
        }
    };
    signals::restore(&mask);
    drop(write);
    crate::sys::set_nonblocking(&read, true)?;
    Ok((pid, read))
}
