//! journald's native protocol: one datagram per entry, with structured fields.
//!
//! Used when stderr is connected to the journal (`$JOURNAL_STREAM` names the
//! same device and inode) or when `journald = "yes"`. Each process sends its
//! own entries, so journald records the real sender as `_PID`.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

const SOCKET: &str = "/run/systemd/journal/socket";

pub struct Journal {
    sock: UnixDatagram,
}

/// Is our stderr the journal's stream socket?
pub fn stderr_is_journal() -> bool {
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat writes into a local stat struct.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) != 0 {
            return false;
        }
        st
    };
    st.st_dev == dev && st.st_ino == ino
}

impl Journal {
    pub fn connect() -> std::io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(SOCKET)?;
        let _ = crate::sys::set_cloexec(sock.as_raw_fd(), true);
        Ok(Journal { sock })
    }

    /// Send one entry; `fields` are extra KEY=value pairs (keys upper case).
    pub fn send(&self, priority: u8, message: &str, fields: &[(&str, &str)]) {
        let mut buf = Vec::with_capacity(128 + message.len());
        push_field(&mut buf, "MESSAGE", message.trim_end_matches('\n'));
        push_field(&mut buf, "PRIORITY", &priority.to_string());
        push_field(&mut buf, "SYSLOG_IDENTIFIER", "ferricorn");
        for (k, v) in fields {
            push_field(&mut buf, k, v);
        }
        let _ = self.sock.send(&buf);
    }
}

/// `KEY=value\n`, or the length-prefixed form when the value has newlines.
fn push_field(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
    }
    buf.push(b'\n');
}

/// syslog priority of a log level.
pub fn priority(level: super::Level) -> u8 {
    match level {
        super::Level::Debug => 7,
        super::Level::Info => 6,
        super::Level::Warning => 4,
        super::Level::Error => 3,
        super::Level::Critical => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_encoded_as_journald_expects() {
        let mut b = Vec::new();
        push_field(&mut b, "MESSAGE", "hi");
        push_field(&mut b, "TB", "a\nb");
        let mut want = b"MESSAGE=hi\nTB\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\n");
        assert_eq!(b, want);
    }
}
