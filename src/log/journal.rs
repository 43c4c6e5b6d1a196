//! journald's native protocol: one datagram per entry, with structured fields.
//!
//! Used when stderr is connected to the journal (`$JOURNAL_STREAM` names the
//! same device and inode) or when `journald = "yes"`. Each process sends its
//! own entries, so journald records the real sender as `_PID`.
//!
//! An entry too large for one datagram (a long traceback) goes the way
//! `sd_journal_send` sends it: written to a sealed memfd whose descriptor
//! travels in an empty datagram. (Ours rather than `tracing-journald`: the
//! log macros predate `tracing`; the wire format is the same.)

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
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
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
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
        match self.sock.send(&buf) {
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                if let Err(e) = self.send_large(&buf) {
                    // The journal is where errors go; say it where it can be seen.
                    eprintln!(
                        "ferricorn: a log entry of {} bytes could not reach the journal: {e}",
                        buf.len()
                    );
                }
            }
            _ => {}
        }
    }

    /// An entry over the datagram limit: its fields in a sealed memfd.
    fn send_large(&self, entry: &[u8]) -> std::io::Result<()> {
        let fd: OwnedFd = memfd_create(
            c"journal-entry",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        std::fs::File::from(fd.try_clone()?).write_all(entry)?;
        // journald accepts only a memfd nobody can change any more.
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<UnixAddr>(
            self.sock.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
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

    /// A journal stand-in: a datagram socket that reads entries the way
    /// journald does, including those that arrive as a memfd.
    #[test]
    fn an_entry_over_the_datagram_limit_arrives_whole_through_a_memfd() {
        use nix::sys::socket::{ControlMessageOwned, recvmsg};
        use std::io::{IoSliceMut, Read, Seek};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.connect(&path).unwrap();
        let journal = Journal { sock };
        let traceback: String = (0..9000)
            .map(|i| format!("  File \"app.py\", line {i}, in handler\n"))
            .collect();
        assert!(traceback.len() > 300 * 1024);
        journal.send(3, &traceback, &[("WORKER_PID", "42")]);

        let mut buf = vec![0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            server.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(msg.bytes, 0, "the entry itself travels in the memfd");
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor");
        // SAFETY: recvmsg just gave us this descriptor; nothing else owns it.
        let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.rewind().unwrap();
        let mut entry = Vec::new();
        file.read_to_end(&mut entry).unwrap();
        let mut want = Vec::new();
        push_field(&mut want, "MESSAGE", traceback.trim_end_matches('\n'));
        assert!(entry.starts_with(&want), "the whole message, first");
        assert!(entry.ends_with(b"WORKER_PID=42\n"));
        let seals = fcntl(&file, FcntlArg::F_GET_SEALS).unwrap();
        assert_ne!(
            seals & libc::F_SEAL_WRITE,
            0,
            "sealed, as journald requires"
        );
    }

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
