//! `--preload` without Python in the master: a fork server.
//!
//! The app is imported once, in a child of the master (the preloader), and
//! every worker is forked from that child, so workers share the imported
//! app's memory as they would with gunicorn's `--preload`. The master stays
//! single-threaded and Python-free: the app may start threads at import,
//! and the master still forks (the upgrade check, `*.py` configs on HUP) and
//! changes its environment safely.
//!
//! A worker must still be the master's child: the master reaps it, times it
//! out and hands it over on upgrade. So the preloader forks an intermediate
//! process that forks the worker and exits at once; the master, a child
//! subreaper, adopts the orphaned worker. The intermediate sends the
//! worker's pid back before it exits.
//!
//! The master sends each spawn request over a `SOCK_SEQPACKET` pair: the
//! current settings (a reload's new ones), the worker's seat, and as
//! descriptors the status pipe's write end and the listening sockets. The
//! preloader keeps the app it imported across reloads, as gunicorn does.

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    recvmsg, sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::signals;
use crate::config::{Config, Settings, WorkerClass};
use crate::listen::Listener;
use crate::listen::balance::{Board, Seat};
use crate::python;
use crate::sys;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, fork};

/// The largest message either way (the settings are a few KB).
const MAX_MESSAGE: usize = 256 * 1024;
/// The most listening sockets a request carries.
const MAX_FDS: usize = 64;

pub struct Preloader {
    pid: i32,
    control: OwnedFd,
}

#[derive(Serialize, Deserialize)]
struct Spawn {
    settings: Settings,
    seat: Option<usize>,
    /// The listeners' names (`FileDescriptorName=`), in the order of their descriptors.
    names: Vec<Option<String>>,
    master: i32,
    /// A gunicorn `*.py` config the worker runs again for its hooks.
    hooks_file: Option<std::path::PathBuf>,
    /// The worker's place in the order of workers started (`worker.age`).
    age: u64,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ready,
    Failed(String),
    Spawned(i32),
}

impl Preloader {
    /// Fork the preloader and wait until it imported the app; Err is the
    /// import's traceback. `board` must exist already: the preloader's
    /// workers share it.
    pub fn start(cfg: &Config, board: Option<Board>) -> anyhow::Result<Result<Preloader, String>> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // SAFETY: the master is single-threaded and has not started Python;
        // the child only runs our code and Python's initialisation.
        let pid = match unsafe { fork() }? {
            ForkResult::Parent { child } => child.as_raw(),
            ForkResult::Child => {
                drop(ours);
                serve(cfg, board, theirs);
            }
        };
        drop(theirs);
        let preloader = Preloader { pid, control: ours };
        match preloader.receive()? {
            Reply::Ready => Ok(Ok(preloader)),
            Reply::Failed(traceback) => {
                let _ = sys::wait_pid(pid);
                Ok(Err(traceback))
            }
            Reply::Spawned(_) => anyhow::bail!("the preloader answered out of turn"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Fork a worker from the preloaded app; its pid and the read end of its status pipe.
    pub fn spawn(
        &self,
        cfg: &Config,
        listeners: &[Listener],
        seat: Option<Seat>,
        age: u64,
    ) -> anyhow::Result<(i32, OwnedFd)> {
        let (read, write) = sys::pipe()?;
        let request = serde_json::to_vec(&Spawn {
            settings: cfg.settings.clone(),
            seat: seat.map(|s| s.index()),
            names: listeners.iter().map(|l| l.name.clone()).collect(),
            master: std::process::id() as i32,
            hooks_file: cfg.hooks_file.clone(),
            age,
        })?;
        let fds: Vec<RawFd> = std::iter::once(write.as_raw_fd())
            .chain(listeners.iter().map(|l| l.fd.as_raw_fd()))
            .collect();
        sendmsg::<UnixAddr>(
            self.control.as_raw_fd(),
            &[IoSlice::new(&request)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        drop(write);
        match self.receive()? {
            Reply::Spawned(pid) => {
                sys::set_nonblocking(&read, true)?;
                Ok((pid, read))
            }
            Reply::Failed(e) => anyhow::bail!("the preloader could not fork a worker: {e}"),
            Reply::Ready => anyhow::bail!("the preloader answered out of turn"),
        }
    }

    fn receive(&self) -> anyhow::Result<Reply> {
        let (bytes, _) = receive(&self.control)?;
        if bytes.is_empty() {
            anyhow::bail!("the preloader exited");
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// It exited and was reaped already.
    pub fn forget(self) {}

    /// End the preloader (stop, halt, or exec of a new image, which starts its own).
    pub fn stop(self) {
        sys::kill(self.pid, Signal::SIGTERM);
        let _ = sys::wait_pid(self.pid);
    }
}

/// One message and the descriptors that came with it; empty at EOF.
fn receive(sock: &OwnedFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let n = msg.bytes;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    buf.truncate(n);
    Ok((buf, fds))
}

fn send(sock: &OwnedFd, reply: &Reply) {
    let bytes = serde_json::to_vec(reply).unwrap_or_default();
    let _ = nix::sys::socket::send(sock.as_raw_fd(), &bytes, MsgFlags::empty());
}

/// The preloader's life: import the app, then fork a worker per request
/// until the master goes away.
fn serve(cfg: &Config, board: Option<Board>, control: OwnedFd) -> ! {
    signals::reset_in_child();
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    crate::proctitle::set(&format!("ferricorn: preloader [{}]", cfg.proc_name));
    let s = &cfg.settings;
    let startup = python::Startup {
        virtualenv: s.virtualenv.as_deref(),
        chdir: &s.chdir,
        pythonpath: s.pythonpath.as_deref(),
        logconfig: cfg.logconfig(),
    };
    let app = match python::preload(&startup, &s.app, cfg.worker_class == WorkerClass::Gevent) {
        Ok(app) => app,
        Err(e) => {
            send(&control, &Reply::Failed(e));
            crate::worker::exit(crate::proto::APP_LOAD_ERROR);
        }
    };
    if s.capture_output {
        // The workers it forks inherit line-buffered streams.
        pyo3::Python::attach(|py| {
            if let Err(e) = python::line_buffered_output(py) {
                crate::warning!("--capture-output: {}", python::traceback_text(py, &e));
            }
        });
    }
    send(&control, &Reply::Ready);
    loop {
        let (bytes, mut fds) = match receive(&control) {
            Ok((b, _)) if b.is_empty() => crate::worker::exit(0),
            Ok(m) => m,
            Err(_) => crate::worker::exit(0),
        };
        let request: Spawn = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                send(&control, &Reply::Failed(format!("bad request: {e}")));
                continue;
            }
        };
        if fds.is_empty() {
            send(&control, &Reply::Failed("no status pipe".into()));
            continue;
        }
        let pipe = fds.remove(0);
        let cfg = match crate::config::from_settings(request.settings) {
            Ok(mut cfg) => {
                cfg.hooks_file = request.hooks_file;
                crate::worker::set_age(request.age);
                cfg
            }
            Err(e) => {
                send(&control, &Reply::Failed(e.to_string()));
                continue;
            }
        };
        let mut listeners = Vec::new();
        for (fd, name) in fds.into_iter().zip(request.names) {
            let raw = fd.as_raw_fd();
            std::mem::forget(fd);
            match crate::listen::adopt_fd(raw) {
                Ok(mut l) => {
                    l.name = name;
                    listeners.push(l);
                }
                Err(e) => send(&control, &Reply::Failed(e.to_string())),
            }
        }
        let seat = request.seat.and_then(|i| board.and_then(|b| b.seat(i)));
        fork_worker(&cfg, &listeners, seat, pipe, &control, request.master, &app);
        // Our copies of the worker's descriptors close here.
        drop(listeners);
    }
}

/// Fork twice so that the worker is orphaned at once and adopted by the
/// master (a subreaper); the intermediate reports the worker's pid.
fn fork_worker(
    cfg: &Config,
    listeners: &[Listener],
    seat: Option<Seat>,
    pipe: OwnedFd,
    control: &OwnedFd,
    master: i32,
    app: &python::LoadedApp,
) {
    let mask = signals::block_all();
    let prepared = python::fork::prepare();
    // SAFETY: Python's fork protocol is followed (prepare/parent/child); the
    // intermediate only forks again and writes one message.
    let intermediate = unsafe { fork() };
    if let Ok(ForkResult::Child) = intermediate {
        // SAFETY: a single-threaded copy that forks, replies and leaves.
        let reply = match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => Reply::Spawned(child.as_raw()),
            Err(e) => Reply::Failed(e.to_string()),
            Ok(ForkResult::Child) => {
                python::fork::child(prepared);
                signals::restore_in_worker(&mask);
                become_masters(master);
                // The control socket is the preloader's; the worker must not
                // keep it (nor hold the preloader's end open).
                sys::close_fd(control.as_raw_fd());
                crate::worker::run(cfg, listeners, seat, pipe, Some(app))
            }
        };
        send(control, &reply);
        sys::exit_now(0);
    }
    python::fork::parent(prepared);
    signals::restore(&mask);
    match intermediate {
        // It has replied already; it only needs reaping.
        Ok(ForkResult::Parent { child }) => {
            let _ = sys::wait_pid(child.as_raw());
        }
        Err(e) => send(control, &Reply::Failed(e.to_string())),
        Ok(ForkResult::Child) => unreachable!("the intermediate never returns"),
    }
}

/// Wait until the master has adopted this worker, then die with it.
fn become_masters(master: i32) {
    for _ in 0..1000 {
        if nix::unistd::getppid().as_raw() == master {
            sys::die_with_parent(master);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // The master died meanwhile, or is no subreaper: nobody would supervise us.
    crate::worker::exit(0);
}
