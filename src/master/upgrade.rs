//! USR2: upgrade in place. The master checks the binary now on disk, then
//! `exec`s it with the same PID, handing over its listeners (the `LISTEN_FDS`
//! protocol) and its workers, which keep serving until the new image's
//! workers are ready.
//!
//! ## Handover format (version 1)
//!
//! - `LISTEN_FDS=N`, `LISTEN_PID=<own pid>`, `LISTEN_FDNAMES=a:b:…`: the
//!   listeners at descriptors 3 … 3+N-1, exactly as systemd passes them.
//! - `FERRICORN_HANDOVER`: JSON `{"version": 1, "from": "<old version>",
//!   "workers": [{"pid": P, "fd": F, "booted": true, "requests": R,
//!   "retiring": false}, …]}` where F is the read end of that worker's status
//!   pipe (descriptors after the listeners).
//! - `NOTIFY_SOCKET`, and `WATCHDOG_USEC` with `WATCHDOG_PID=<own pid>`, as
//!   the master received them from systemd.
//!
//! A newer image reads every version up to its own; fields it does not know
//! are ignored, so an older image can hand over to a newer one.

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const HANDOVER_VAR: &str = "FERRICORN_HANDOVER";
pub const HANDOVER_VERSION: u32 = 1;

/// How long the new binary gets to prove it can load the configuration and the app.
pub const CHECK_TIME_LIMIT: Duration = Duration::from_secs(60);

/// What this process was started as: the path to re-execute and its arguments.
#[derive(Clone, Debug)]
pub struct Image {
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
    /// The directory we were started in: the command line's relative paths
    /// mean something there (gunicorn also returns to it before its exec).
    pub cwd: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Handover {
    pub version: u32,
    pub from: String,
    pub workers: Vec<HandedWorker>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct HandedWorker {
    pub pid: i32,
    pub fd: RawFd,
    pub booted: bool,
    pub requests: u64,
    #[serde(default)]
    pub retiring: bool,
    /// Its `worker.age` (for child_exit); 0 from an image that did not say.
    #[serde(default)]
    pub age: u64,
}

/// The path we were started from, made absolute now (the working directory
/// changes later). Not `/proc/self/exe`: after a package upgrade that names
/// the old, deleted file, and the point is to run the new one.
pub fn resolve_exe(argv0: Option<&OsStr>) -> PathBuf {
    let fallback = || std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "ferricorn".into());
    let Some(arg) = argv0 else { return fallback() };
    let p = Path::new(arg);
    if p.components().count() > 1 || arg.as_encoded_bytes().contains(&b'/') {
        return std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .unwrap_or_else(fallback)
}

/// In the new image: the previous image's workers, if this start is an upgrade.
pub fn take_handover() -> Option<Handover> {
    let raw = std::env::var(HANDOVER_VAR).ok();
    // SAFETY: called at start-up while the process is single-threaded.
    unsafe { std::env::remove_var(HANDOVER_VAR) };
    let h: Handover = match serde_json::from_str(&raw?) {
        Ok(h) => h,
        Err(e) => {
            crate::error!("Ignoring an unreadable upgrade handover: {e}");
            return None;
        }
    };
    if h.version > HANDOVER_VERSION {
        crate::error!(
            "Upgrade handover version {} is newer than this ferricorn understands ({HANDOVER_VERSION})",
            h.version
        );
        return None;
    }
    Some(h)
}

/// The new binary running `--check-config` on our configuration.
pub struct Check {
    pub pid: i32,
    pub started: Instant,
    output: std::fs::File,
}

impl Check {
    pub fn start(image: &Image) -> std::io::Result<Check> {
        let output = memfd("ferricorn-upgrade-check")?;
        let child = std::process::Command::new(&image.exe)
            .args(image.argv.iter().skip(1))
            .arg("--check-config")
            .current_dir(image.cwd.as_deref().unwrap_or(Path::new("/")))
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output.try_clone()?)
            .spawn()?;
        Ok(Check {
            pid: child.id() as i32,
            started: Instant::now(),
            output,
        })
    }

    /// The last lines the check printed (why it failed).
    pub fn output_tail(&mut self) -> String {
        let mut text = String::new();
        let _ = self.output.rewind();
        let _ = self.output.read_to_string(&mut text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(6)..].join(" | ")
    }
}

fn memfd(name: &str) -> std::io::Result<std::fs::File> {
    let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let fd =
        nix::sys::memfd::memfd_create(name.as_c_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// Descriptors moved to fixed numbers for the new image, and how to undo it.
struct Placement {
    /// (target fd, saved copy of whatever was there before, its CLOEXEC flag)
    saved: Vec<(RawFd, Option<RawFd>, bool)>,
    copies: Vec<RawFd>,
}

impl Placement {
    /// Put `fds[i]` at `3 + i`, keeping what was at those numbers for `undo`.
    fn place(fds: &[RawFd]) -> std::io::Result<Placement> {
        // Copies go above the target range. (Not "high" numbers like 1024:
        // F_DUPFD refuses anything at or above RLIMIT_NOFILE, which systemd
        // sets to 1024 by default.)
        let above = 3 + fds.len() as RawFd;
        let dup_high = |fd: RawFd| -> std::io::Result<RawFd> {
            // SAFETY: fcntl on descriptors this process holds.
            let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        };
        let mut p = Placement {
            saved: Vec::new(),
            copies: Vec::new(),
        };
        for &fd in fds {
            p.copies.push(dup_high(fd)?);
        }
        for i in 0..fds.len() {
            let target = 3 + i as RawFd;
            // SAFETY: fcntl F_GETFD only queries the descriptor.
            let flags = unsafe { libc::fcntl(target, libc::F_GETFD) };
            let saved = if flags >= 0 {
                Some(dup_high(target)?)
            } else {
                None
            };
            p.saved
                .push((target, saved, flags >= 0 && flags & libc::FD_CLOEXEC != 0));
        }
        for (i, &copy) in p.copies.iter().enumerate() {
            // SAFETY: dup2 onto a number whose previous file we saved above;
            // the new descriptor has FD_CLOEXEC cleared, so it survives exec.
            if unsafe { libc::dup2(copy, 3 + i as RawFd) } < 0 {
                let e = std::io::Error::last_os_error();
                p.undo();
                return Err(e);
            }
        }
        Ok(p)
    }

    /// exec failed: put every descriptor back where it was.
    fn undo(self) {
        for (target, saved, cloexec) in &self.saved {
            match saved {
                Some(copy) => {
                    // SAFETY: restoring the descriptor we saved for this number.
                    unsafe { libc::dup2(*copy, *target) };
                    let _ = crate::sys::set_cloexec(*target, *cloexec);
                }
                None => crate::sys::close_fd(*target),
            }
        }
        for fd in self.saved.iter().filter_map(|s| s.1).chain(self.copies) {
            crate::sys::close_fd(fd);
        }
    }
}

/// Everything the new image needs, then `exec`. Returns only if exec failed
/// (after undoing the descriptor placement).
pub fn exec(
    image: &Image,
    listeners: &[(RawFd, String)],
    workers: Vec<(HandedWorker, RawFd)>,
    env: &[(&str, String)],
) -> std::io::Error {
    let mut fds: Vec<RawFd> = listeners.iter().map(|l| l.0).collect();
    fds.extend(workers.iter().map(|w| w.1));
    let placement = match Placement::place(&fds) {
        Ok(p) => p,
        Err(e) => return std::io::Error::new(e.kind(), format!("placing descriptors: {e}")),
    };
    let handover = Handover {
        version: HANDOVER_VERSION,
        from: crate::VERSION.to_string(),
        workers: workers
            .into_iter()
            .enumerate()
            .map(|(i, (mut w, _))| {
                w.fd = 3 + (listeners.len() + i) as RawFd;
                w
            })
            .collect(),
    };
    let names: Vec<&str> = listeners.iter().map(|l| l.1.as_str()).collect();
    let mut vars: Vec<(&str, String)> = vec![
        ("LISTEN_FDS", listeners.len().to_string()),
        ("LISTEN_PID", std::process::id().to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
        (
            HANDOVER_VAR,
            serde_json::to_string(&handover).unwrap_or_default(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    for (k, v) in &vars {
        // SAFETY: the master is single-threaded; execv passes this environment on.
        unsafe { std::env::set_var(k, v) };
    }
    let cstr = |s: &OsStr| std::ffi::CString::new(s.as_encoded_bytes()).unwrap_or_default();
    let exe = cstr(image.exe.as_os_str());
    let args: Vec<std::ffi::CString> = image.argv.iter().map(|a| cstr(a)).collect();
    // Signals stay blocked across exec (the mask is inherited): a HUP or USR2
    // arriving before the new image installs its handlers waits for them
    // instead of killing the master with the default action.
    let mask = super::signals::block_all();
    let here = std::env::current_dir().ok();
    if let Some(cwd) = &image.cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    // Returns only on failure.
    let err = match nix::unistd::execv(&exe, &args) {
        Err(e) => std::io::Error::from(e),
        Ok(never) => match never {},
    };
    if let Some(here) = here {
        let _ = std::env::set_current_dir(here);
    }
    super::signals::restore(&mask);
    for (k, _) in &vars {
        // SAFETY: single-threaded, as above.
        unsafe { std::env::remove_var(k) };
    }
    placement.undo();
    err
}
