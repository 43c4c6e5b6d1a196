//! Sockets handed over by systemd (`LISTEN_FDS`) or by our own previous image
//! on an in-place upgrade, which uses the same protocol.

use std::os::fd::RawFd;

/// The first inherited descriptor (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

pub struct Inherited {
    pub fd: RawFd,
    pub name: Option<String>,
}

/// Take the inherited sockets meant for this process, and remove the
/// variables so neither the app nor a child sees stale ones.
pub fn take() -> Vec<Inherited> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called once at start-up while the process is single-threaded.
        unsafe { std::env::remove_var(var) };
    }
    let ours = pid
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let Some(n) = count
        .and_then(|c| c.trim().parse::<i32>().ok())
        .filter(|_| ours)
    else {
        return Vec::new();
    };
    let names: Vec<String> = names
        .map(|n| n.split(':').map(String::from).collect())
        .unwrap_or_default();
    (0..n.max(0))
        .map(|i| Inherited {
            fd: FIRST_FD + i,
            name: names
                .get(i as usize)
                .filter(|n| !n.is_empty() && n.as_str() != "unknown")
                .cloned(),
        })
        .collect()
}
