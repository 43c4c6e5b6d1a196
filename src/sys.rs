//! The system calls the master and workers need, through `nix` where it
//! reaches; what remains raw (`dup2` onto a descriptor another owner keeps,
//! a `'static` shared mapping, `timerfd_settime` on a `File`) says why.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{self, Pid};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(unistd::pipe2(OFlag::O_CLOEXEC)?)
}

pub fn set_nonblocking(fd: &impl AsFd, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Send a signal to one process we started.
pub fn kill(pid: i32, sig: Signal) -> bool {
    signal::kill(Pid::from_raw(pid), sig).is_ok()
}

/// Wait for one child and return its exit code (None if it died of a signal).
pub fn wait_pid(pid: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(..)) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
}

/// Reap one exited child without blocking.
pub fn try_reap() -> Option<(i32, Exit)> {
    loop {
        return match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => Some((pid.as_raw(), Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => Some((pid.as_raw(), Exit::Signal(sig))),
            // Stopped or continued: not an exit; look again.
            Ok(WaitStatus::StillAlive) | Err(_) => None,
            Ok(_) => continue,
        };
    }
}

/// Leave this process at once: no destructors, no atexit handlers (a forked
/// child must not run its parent's; app threads may hold the GIL).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without touching its memory; it is
    // async-signal-safe, so a signal handler may call it too.
    unsafe { libc::_exit(code) }
}

/// In a child just forked: die with `parent` (SIGTERM), or leave now if
/// it died before the flag was set.
pub fn die_with_parent(parent: i32) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if unistd::getppid().as_raw() != parent {
        exit_now(0);
    }
}

pub fn close_fd(fd: RawFd) {
    // SAFETY: closing an fd number the caller says it owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// Point `fd` at /dev/null: what it referred to is released in this process,
/// while the descriptor number stays valid for whoever owns it.
pub fn release_fd(fd: &impl AsRawFd) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: both descriptors are open (borrowed for the call); dup2 only
    // replaces what `fd` refers to, so its owner still owns an open descriptor.
    check(unsafe { libc::dup2(null.as_raw_fd(), fd.as_raw_fd()) })?;
    Ok(())
}

pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: the caller holds `fd` open for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = FdFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFD)?);
    let flags = if on {
        flags | FdFlag::FD_CLOEXEC
    } else {
        flags - FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// `n` counters in memory shared with every process forked after this call.
/// The mapping is never unmapped: it lives as long as the process.
pub fn shared_counters(n: usize) -> io::Result<&'static [AtomicU32]> {
    shared(n)
}

/// As `shared_counters`, 64 bits wide.
pub fn shared_u64(n: usize) -> io::Result<&'static [AtomicU64]> {
    shared(n)
}

/// `n` zero-filled atomics of type `T` in a shared anonymous mapping.
fn shared<T>(n: usize) -> io::Result<&'static [T]> {
    let len = n * std::mem::size_of::<T>();
    // SAFETY: a fresh anonymous mapping; no existing memory is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is page-aligned, zero-filled (callers are atomic
    // integers, valid for any bit pattern), `len` bytes long and never
    // unmapped, so a 'static shared slice over it is sound.
    Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, n) })
}

/// A TCP listening socket's accept queue: connections the kernel completed
/// that no worker has accepted yet, and the queue's limit (the backlog).
/// None for other sockets. (nix has no `TCP_INFO` option.)
pub fn accept_queue(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain integers, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes, and the
    // kernel writes at most that much.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // For a listening socket the kernel reports the queue in these two
    // fields (tcp_get_info: sk_ack_backlog and sk_max_ack_backlog).
    // TCP_LISTEN in the kernel's tcp_states.h (libc does not name it).
    const TCP_LISTEN: u8 = 10;
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// A non-blocking one-shot timer (`timerfd`) on the monotonic clock: tokio's
/// own timers tick in whole milliseconds, too coarse for a pause that must
/// end soon after whatever it waits for.
pub fn timer() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes no pointers; the fd it returns is new.
    let fd = check(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    })?;
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arm a `timer` to expire once, `after` from now (a previous expiry that was
/// not read yet is dropped).
pub fn arm_timer(fd: &impl AsRawFd, after: std::time::Duration) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            // Never all zero: that would disarm the timer instead.
            tv_nsec: after.subsec_nanos().max(1) as libc::c_long,
        },
    };
    // SAFETY: timerfd_settime reads the spec we own; the old value is not asked for.
    check(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })?;
    Ok(())
}

/// A process's resident memory (`/proc/PID/statm`), in bytes.
pub fn resident_bytes(pid: i32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = unistd::sysconf(unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}

/// What the kernel's OOM killer weighs a process by (`oom_badness`): its
/// resident memory, its swapped-out pages and its page tables, in bytes.
/// Workers share their service's cgroup, so no cgroup counter is theirs
/// alone; under a cgroup limit the OOM killer picks its victim by this.
pub fn oom_weight_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let rss = kb("VmRSS:");
    (rss > 0).then(|| (rss + kb("VmSwap:") + kb("VmPTE:")) << 10)
}

/// The calling thread's kernel id.
pub fn thread_id() -> i32 {
    unistd::gettid().as_raw()
}

/// Whether a thread of this process is running or waiting for a CPU, as
/// opposed to asleep in the kernel (a system call, a lock). Unknown
/// (the thread is gone) counts as not.
pub fn thread_runnable(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which may hold spaces and parentheses.
            let (_, rest) = stat.rsplit_once(')')?;
            rest.trim_start().chars().next()
        })
        == Some('R')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_weight_counts_at_least_the_resident_memory() {
        let me = std::process::id() as i32;
        let rss = resident_bytes(me).unwrap();
        let weight = oom_weight_bytes(me).unwrap();
        // Read a moment apart: allow the process some growth between them.
        assert!(weight + (4 << 20) >= rss, "{weight} < {rss}");
        assert!(weight < rss + (256 << 20), "{weight} vs {rss}");
        assert_eq!(oom_weight_bytes(i32::MAX), None);
    }

    #[test]
    fn a_thread_asleep_in_the_kernel_is_not_runnable_and_a_running_one_is() {
        assert!(
            thread_runnable(thread_id()),
            "this thread, reading its own state"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            tx.send(thread_id()).unwrap();
            std::thread::park();
        });
        let tid = rx.recv().unwrap();
        // Give it time to get to the park.
        let asleep = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !thread_runnable(tid)
        });
        assert!(asleep, "thread {tid} never seen asleep");
        sleeper.thread().unpark();
        sleeper.join().unwrap();
        assert!(!thread_runnable(tid), "a thread that is gone");
    }
}
