//! sd_notify over `$NOTIFY_SOCKET`. Silent and free when the variable is unset.
//!
//! Ours rather than `sd-notify`'s `notify`: that reads `$NOTIFY_SOCKET` on
//! every call and connects to it as a path, so it cannot reach an abstract
//! socket (`@name`, as container managers and test harnesses hand out), and
//! it would need the variable left in the environment, where the workers and
//! the app would inherit it. We take it out at start, keep one socket, and
//! hand the value on only to our own next image on upgrade.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// `$NOTIFY_SOCKET` as received, handed on to our own next image on upgrade.
    raw: Option<String>,
}

impl Notifier {
    /// Take `NOTIFY_SOCKET` out of the environment (workers must never notify)
    /// and open a socket to it.
    pub fn from_env() -> Notifier {
        let path = std::env::var_os("NOTIFY_SOCKET");
        // SAFETY: the master is single-threaded when this runs at start-up.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let raw = path.as_ref().and_then(|p| p.to_str()).map(String::from);
        let target = path.and_then(|p| {
            let bytes = p.as_encoded_bytes();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                SocketAddr::from_abstract_name(name).ok()?
            } else {
                SocketAddr::from_pathname(std::path::Path::new(&p)).ok()?
            };
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier { target, raw }
    }

    pub fn socket_env(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(msg.as_bytes(), addr)
        {
            crate::debug!("sd_notify failed: {e}");
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, for `RELOADING=1` + `MONOTONIC_USEC=`.
pub fn monotonic_usec() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}
