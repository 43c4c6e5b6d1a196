//! The master's signals, delivered through a self-pipe to its poll loop.
//!
//! The handler only writes the signal number to a non-blocking pipe, which is
//! async-signal-safe; everything else happens in the loop.

use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Signals the master acts on.
pub const HANDLED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
    Signal::SIGWINCH,
];

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored
        // so the interrupted code sees no change.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, &b as *const u8 as *const libc::c_void, 1);
            *libc::__errno_location() = saved;
        }
    }
}

pub struct SignalPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl SignalPipe {
    pub fn install() -> io::Result<SignalPipe> {
        let (read, write) = crate::sys::pipe()?;
        crate::sys::set_nonblocking(&read, true)?;
        crate::sys::set_nonblocking(&write, true)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        for &sig in HANDLED {
            set_handler(sig, SigHandler::Handler(on_signal))?;
        }
        // A client that goes away must not kill the master.
        set_handler(Signal::SIGPIPE, SigHandler::SigIgn)?;
        // After an in-place upgrade the previous image left them blocked
        // across exec; whatever arrived meanwhile is delivered now.
        unblock_handled();
        Ok(SignalPipe { read, write })
    }

    /// What the loop polls.
    pub fn read_end(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    pub fn fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// Signals received since the last call, in order.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as libc::c_int).ok()),
            );
        }
        out
    }
}

fn set_handler(sig: Signal, handler: SigHandler) -> io::Result<()> {
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler is SIG_IGN, SIG_DFL or our async-signal-safe on_signal.
    unsafe { sigaction(sig, &action) }?;
    Ok(())
}

/// Block every signal (around fork, so a child never runs the master's handler).
pub fn block_all() -> SigSet {
    let mut old = SigSet::empty();
    let _ = pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    old
}

fn unblock_handled() {
    let set: SigSet = HANDLED.iter().copied().collect();
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}

pub fn restore(mask: &SigSet) {
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

/// In a new worker: restore `mask` but keep USR1 blocked until the worker
/// has a handler for it (`worker::run`); one sent meanwhile waits.
pub fn restore_in_worker(mask: &SigSet) {
    let mut mask = *mask;
    mask.add(Signal::SIGUSR1);
    restore(&mask);
}

/// In a freshly forked child: default dispositions for everything the master
/// handles, and SIGPIPE ignored, as CPython itself sets it: an app that
/// writes to a pipe or socket whose reader has gone gets `BrokenPipeError`
/// instead of the whole worker being killed. (`subprocess` restores the
/// default for the programs it starts.)
pub fn reset_in_child() {
    WRITE_FD.store(-1, Ordering::Relaxed);
    for &sig in HANDLED.iter() {
        let _ = set_handler(sig, SigHandler::SigDfl);
    }
    let _ = set_handler(Signal::SIGPIPE, SigHandler::SigIgn);
}
