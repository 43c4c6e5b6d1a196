//! Listening sockets: bound by the master (or adopted), shared by every worker.

pub mod activation;
pub mod balance;

use socket2::{Domain, SockAddr, Socket, Type};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use crate::config::BindAddr;

#[derive(Debug)]
pub struct Listener {
    pub addr: BindAddr,
    pub fd: OwnedFd,
    /// A unix socket file we created and so remove on exit.
    pub owned_path: Option<PathBuf>,
    /// The name systemd gave it (`FileDescriptorName=`), if any.
    pub name: Option<String>,
    /// The `bind` entry it was opened for (None when inherited).
    pub spec: Option<BindAddr>,
}

impl Listener {
    /// Does this listener serve the `bind` entry `want`? Port 0 ("any free
    /// port") matches a listener on the same address.
    pub fn serves(&self, want: &BindAddr) -> bool {
        if self.spec.as_ref() == Some(want) {
            return true;
        }
        match (&self.addr, want) {
            (BindAddr::Tcp(have), BindAddr::Tcp(want)) if want.port() == 0 => {
                have.ip() == want.ip()
            }
            (have, want) => have == want,
        }
    }
}

impl Listener {
    pub fn is_unix(&self) -> bool {
        matches!(self.addr, BindAddr::Unix(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: BindAddr,
        source: std::io::Error,
    },
    #[error("fd://{fd} is not a listening socket: {reason}")]
    NotASocket { fd: RawFd, reason: String },
}

/// Bind every configured address.
pub fn bind_all(binds: &[BindAddr], backlog: u32) -> Result<Vec<Listener>, ListenError> {
    binds.iter().map(|b| bind_one(b, backlog)).collect()
}

/// Use inherited sockets where they match a configured address (no second
/// `listen()`), bind the rest. With `binds_explicit` false (the default
/// address), inherited sockets alone are used.
pub fn adopt_and_bind(
    inherited: Vec<activation::Inherited>,
    binds: &[BindAddr],
    binds_explicit: bool,
    backlog: u32,
) -> Result<Vec<Listener>, ListenError> {
    let mut adopted = Vec::new();
    for inh in inherited {
        let mut l = adopt_fd(inh.fd)?;
        l.name = inh.name;
        adopted.push(l);
    }
    if adopted.is_empty() {
        return bind_all(binds, backlog);
    }
    let described: Vec<String> = adopted
        .iter()
        .map(|l| match &l.name {
            Some(n) => format!("{} (fd {}, {n})", l.addr, l.fd.as_raw_fd()),
            None => format!("{} (fd {})", l.addr, l.fd.as_raw_fd()),
        })
        .collect();
    crate::info!(
        "Adopted {} inherited socket(s): {}",
        adopted.len(),
        described.join(", ")
    );
    if binds_explicit {
        for b in binds {
            let wanted = match b {
                BindAddr::Fd(_) => continue,
                other => other,
            };
            if !adopted.iter().any(|l| l.serves(wanted)) {
                adopted.push(bind_one(b, backlog)?);
            }
        }
    }
    Ok(adopted)
}

/// Reconcile the listeners with a new list of `bind` entries (HUP): keep the
/// ones still wanted, open the new ones, and return the ones no longer wanted.
/// On error nothing changes.
pub fn rebind(
    current: &mut Vec<Listener>,
    binds: &[BindAddr],
    backlog: u32,
) -> Result<Vec<Listener>, ListenError> {
    let mut opened = Vec::new();
    for b in binds {
        if !current.iter().any(|l| l.serves(b)) && !opened.iter().any(|l: &Listener| l.serves(b)) {
            opened.push(bind_one(b, backlog).inspect_err(|_| cleanup(&opened))?);
        }
    }
    let (kept, dropped): (Vec<Listener>, Vec<Listener>) = std::mem::take(current)
        .into_iter()
        .partition(|l| binds.iter().any(|b| l.serves(b)));
    *current = kept;
    current.extend(opened);
    Ok(dropped)
}

pub fn bind_one(addr: &BindAddr, backlog: u32) -> Result<Listener, ListenError> {
    let err = |source| ListenError::Bind {
        addr: addr.clone(),
        source,
    };
    let backlog = backlog.min(i32::MAX as u32) as i32;
    match addr {
        BindAddr::Tcp(sa) => {
            let sock =
                Socket::new(Domain::for_address(*sa), Type::STREAM.cloexec(), None).map_err(err)?;
            sock.set_reuse_address(true).map_err(err)?;
            if sa.is_ipv6() {
                sock.set_only_v6(true).map_err(err)?;
            }
            sock.bind(&SockAddr::from(*sa)).map_err(err)?;
            sock.listen(backlog).map_err(err)?;
            send_without_delay(&sock);
            // Port 0 asks the kernel for one; report the real address.
            let local = sock
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(*sa);
            Ok(Listener {
                addr: BindAddr::Tcp(local),
                fd: sock.into(),
                owned_path: None,
                name: None,
                spec: Some(addr.clone()),
            })
        }
        BindAddr::Unix(path) => {
            // A stale socket file from an earlier run would make bind fail.
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    let _ = std::fs::remove_file(path);
                }
            }
            let sock = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(err)?;
            sock.bind(&SockAddr::unix(path).map_err(err)?)
                .map_err(err)?;
            sock.listen(backlog).map_err(err)?;
            Ok(Listener {
                addr: addr.clone(),
                fd: sock.into(),
                owned_path: Some(path.clone()),
                name: None,
                spec: Some(addr.clone()),
            })
        }
        BindAddr::Fd(n) => adopt_fd(*n),
    }
}

/// Turn off Nagle's algorithm on a TCP listening socket: the connections
/// it accepts inherit the setting, which saves every worker a system call
/// per connection (a connection per request is how nginx talks to its
/// upstreams by default). Responses are written whole or in deliberate
/// pieces (streams), and Nagle would hold each last piece for the client's
/// delayed ACK. Workers check the listener and set it per connection when
/// this failed (see `crate::worker`'s acceptor).
fn send_without_delay(sock: &Socket) {
    if let Err(e) = sock.set_tcp_nodelay(true) {
        crate::debug!("TCP_NODELAY on a listening socket: {e}");
    }
}

/// Use an inherited, already listening socket as it is (but for TCP_NODELAY).
pub fn adopt_fd(fd: RawFd) -> Result<Listener, ListenError> {
    let not = |reason: String| ListenError::NotASocket { fd, reason };
    // SAFETY: we take ownership of an inherited fd number that nothing else in
    // this process uses; ManuallyDrop avoids closing it if it is not a socket.
    let sock = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    let local = sock.local_addr().map_err(|e| not(e.to_string()))?;
    let listening = sock.is_listener().map_err(|e| not(e.to_string()))?;
    if !listening {
        return Err(not("it is not listening".into()));
    }
    if local.as_socket().is_some() {
        send_without_delay(&sock);
    }
    // SAFETY: the fd is a socket (local_addr succeeded) we now own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = crate::sys::set_cloexec(fd, true);
    let addr = if let Some(sa) = local.as_socket() {
        BindAddr::Tcp(sa)
    } else if let Some(p) = local.as_pathname() {
        BindAddr::Unix(p.to_path_buf())
    } else {
        BindAddr::Fd(fd)
    };
    Ok(Listener {
        addr,
        fd: owned,
        owned_path: None,
        name: None,
        spec: None,
    })
}

/// Remove the unix socket files we created.
pub fn cleanup(listeners: &[Listener]) {
    for l in listeners {
        if let Some(p) = &l.owned_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
