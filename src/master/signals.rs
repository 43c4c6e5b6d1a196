//! The master's signals, delivered through a self-pipe to its poll loop.
//!
//! The handler only writes the signal number to a non-blocking pipe, which is
//! async-signal-safe; everything else happens in the loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// Signals the master acts on.
pub const HANDLED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGCHLD,
    libc::SIGWINCH,
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
            set_handler(sig, on_signal as *const () as libc::sighandler_t)?;
        }
        // A client that goes away must not kill the master.
        set_handler(libc::SIGPIPE, libc::SIG_IGN)?;
        // After an in-place upgrade the previous image left them blocked
        // across exec; whatever arrived meanwhile is delivered now.
        unblock_handled();
        Ok(SignalPipe { read, write })
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub fn fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }

    /// Signals received since the last call, in order.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: read into a local buffer from our own non-blocking pipe.
            let n = unsafe {
                libc::read(
                    self.read.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            out.extend(buf[..n as usize].iter().map(|&b| b as libc::c_int));
        }
        out
    }
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: sigaction with a zeroed struct, an empty mask and a handler that
    // is either SIG_IGN/SIG_DFL or our async-signal-safe on_signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Block every signal (around fork, so a child never runs the master's handler).
pub fn block_all() -> libc::sigset_t {
    // SAFETY: sigset manipulation on locals; pthread_sigmask affects this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

fn unblock_handled() {
    // SAFETY: sigset manipulation on a local; affects this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in HANDLED {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

pub fn restore(mask: &libc::sigset_t) {
    // SAFETY: restores a mask obtained from block_all.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
    }
}

/// In a freshly forked child: default dispositions for everything the master
/// handles, and SIGPIPE ignored, as CPython itself sets it: an app that
/// writes to a pipe or socket whose reader has gone gets `BrokenPipeError`
/// instead of the whole worker being killed. (`subprocess` restores the
/// default for the programs it starts.)
pub fn reset_in_child() {
    WRITE_FD.store(-1, Ordering::Relaxed);
    for &sig in HANDLED.iter() {
        let _ = set_handler(sig, libc::SIG_DFL);
    }
    let _ = set_handler(libc::SIGPIPE, libc::SIG_IGN);
}
