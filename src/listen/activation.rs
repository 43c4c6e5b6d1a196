//! Sockets handed over by systemd (`LISTEN_FDS`, `LISTEN_FDNAMES`) or by our
//! own previous image on an in-place upgrade, which uses the same protocol;
//! read with `sd-notify` (the `listenfd` crate does not read the names).

use std::os::fd::RawFd;

pub struct Inherited {
    pub fd: RawFd,
    pub name: Option<String>,
}

/// Take the inherited sockets meant for this process, and remove the
/// variables so neither the app nor a child sees stale ones.
pub fn take() -> Vec<Inherited> {
    // SAFETY: called once at start-up while the process is single-threaded.
    match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
        Ok(fds) => fds
            .map(|(fd, name)| Inherited {
                fd,
                name: (!name.is_empty() && name != "unknown").then_some(name),
            })
            .collect(),
        Err(e) => {
            crate::warning!("Ignoring the sockets systemd passed: {e}");
            Vec::new()
        }
    }
}
