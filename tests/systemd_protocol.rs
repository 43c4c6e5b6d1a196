//! The systemd protocols without systemd: a test-owned NOTIFY_SOCKET that
//! records every message with its sender's pid, and sockets handed over with
//! LISTEN_FDS exactly as systemd does.

mod common;

use common::*;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Note {
    at: Instant,
    pid: i32,
    text: String,
}

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    path: std::path::PathBuf,
    notes: Arc<Mutex<Vec<Note>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with a valid int.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let notes = Arc::new(Mutex::new(Vec::new()));
        let sink = notes.clone();
        std::thread::spawn(move || {
            while let Some((pid, text)) = recv_with_pid(sock.as_raw_fd()) {
                sink.lock().unwrap().push(Note {
                    at: Instant::now(),
                    pid,
                    text,
                });
            }
        });
        NotifySocket {
            path,
            notes,
            _dir: dir,
        }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> Note {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// The `nth` (from 1) notification that contains `needle`.
    fn wait_for_nth(&self, needle: &str, nth: usize, timeout: Duration) -> Note {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .notes()
                .into_iter()
                .filter(|n| n.text.contains(needle))
                .nth(nth - 1);
            if let Some(n) = found {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "no {nth}. {needle:?} in {:?}",
                self.notes()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// recvmsg with SCM_CREDENTIALS: the kernel tells us who sent each message.
fn recv_with_pid(fd: i32) -> Option<(i32, String)> {
    let mut buf = [0u8; 4096];
    let mut cmsg = [0u8; 64];
    // SAFETY: recvmsg into buffers we own; the control message is read only
    // when the kernel says it is SCM_CREDENTIALS.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut _,
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr() as *mut _;
        msg.msg_controllen = cmsg.len();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return None;
        }
        let mut pid = -1;
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_type == libc::SCM_CREDENTIALS {
            let cred = libc::CMSG_DATA(c) as *const libc::ucred;
            pid = (*cred).pid;
        }
        Some((
            pid,
            String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
        ))
    }
}

#[test]
fn ready_waits_for_the_app_import_and_only_the_master_notifies() {
    let n = NotifySocket::new();
    let t0 = Instant::now();
    let s = server("slow_import:app")
        .args(["-w", "2"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("SLOW_IMPORT_SECONDS", "2")
        .wait_workers(2)
        .start();
    let ready = n.wait_for("READY=1", Duration::from_secs(20));
    assert!(
        ready.at.duration_since(t0) >= Duration::from_secs(2),
        "READY before the app imported"
    );
    let loaded = s
        .log_text()
        .lines()
        .filter(|l| l.contains("loaded slow_import:app"))
        .count();
    assert_eq!(loaded, 2, "READY only after both workers loaded");
    let status = n.wait_for("STATUS=", Duration::from_secs(5));
    assert!(status.text.contains("workers ready"), "{status:?}");
    for note in n.notes() {
        assert_eq!(note.pid, s.pid, "only the master notifies: {note:?}");
    }
    // The app does not see the notify socket (nor could it notify).
    let env = s.get("/osenv").text();
    assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
}

#[test]
fn asgi_ready_waits_for_lifespan_startup_and_the_app_cannot_notify() {
    let n = NotifySocket::new();
    let t0 = Instant::now();
    let s = server("asgi_raw:app")
        .args(["-w", "2", "-k", "asgi"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("ASGI_STARTUP_DELAY", "2")
        .wait_workers(2)
        .start();
    let ready = n.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        ready.at.duration_since(t0) >= Duration::from_secs(2),
        "READY before lifespan startup finished"
    );
    assert_eq!(s.count("lifespan startup ran"), 2, "{}", s.log_text());
    for note in n.notes() {
        assert_eq!(note.pid, s.pid, "only the master notifies: {note:?}");
    }
    assert_eq!(s.get("/").text(), "hello asgi");
}

#[test]
fn status_reports_workers_and_requests() {
    let n = NotifySocket::new();
    let s = server("conformance:app")
        .args(["-w", "2"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .wait_workers(2)
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    for _ in 0..5 {
        assert_eq!(s.get("/pid").status, 200);
    }
    let st = n.wait_for(
        "STATUS=2/2 workers ready, 5 requests served, 0 in flight",
        Duration::from_secs(10),
    );
    assert_eq!(st.pid, s.pid);
    // Updates are rate-limited to one a second.
    let statuses: Vec<Note> = n
        .notes()
        .into_iter()
        .filter(|x| x.text.starts_with("STATUS="))
        .collect();
    for pair in statuses.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(900),
            "{statuses:?}"
        );
    }
}

#[test]
fn reload_and_stop_are_announced() {
    let n = NotifySocket::new();
    let mut s = server("conformance:app")
        .args(["--graceful-timeout", "7"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    s.signal(libc::SIGHUP);
    let reloading = n.wait_for("RELOADING=1", Duration::from_secs(10));
    assert!(reloading.text.contains("MONOTONIC_USEC="), "{reloading:?}");
    s.wait_log("Reload complete", Duration::from_secs(10));
    // The datagram may still be on its way when the log line is read.
    n.wait_for_nth("READY=1", 2, Duration::from_secs(10));
    let readies: Vec<Note> = n
        .notes()
        .into_iter()
        .filter(|x| x.text.contains("READY=1") && !x.text.contains("RELOADING"))
        .collect();
    assert_eq!(
        readies.len(),
        2,
        "READY again after the reload: {:?}",
        n.notes()
    );
    assert!(readies[1].at >= reloading.at);
    s.signal(libc::SIGTERM);
    let stopping = n.wait_for("STOPPING=1", Duration::from_secs(10));
    let extend = n.wait_for("EXTEND_TIMEOUT_USEC=", Duration::from_secs(10));
    let usec: u64 = extend
        .text
        .trim_start_matches("EXTEND_TIMEOUT_USEC=")
        .trim()
        .parse()
        .unwrap();
    assert!(
        usec >= 7_000_000,
        "the extension covers graceful_timeout: {usec}"
    );
    assert!(extend.at >= stopping.at);
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn watchdog_pings_every_half_interval_from_ready() {
    let n = NotifySocket::new();
    let s = server("conformance:app")
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "600000")
        .start();
    let ready = n.wait_for("READY=1", Duration::from_secs(20));
    let ping_at_ready = n.notes().into_iter().any(|x| {
        x.text == "WATCHDOG=1"
            && x.at >= ready.at
            && x.at.duration_since(ready.at) < Duration::from_millis(100)
    });
    assert!(ping_at_ready, "a ping right at READY: {:?}", n.notes());
    // Ten pings after READY; none may come later than the interval allows.
    let before = n.notes().iter().filter(|x| x.text == "WATCHDOG=1").count();
    n.wait_for_nth("WATCHDOG=1", before + 10, Duration::from_secs(10));
    let pings: Vec<Note> = n
        .notes()
        .into_iter()
        .filter(|x| x.text == "WATCHDOG=1" && x.at >= ready.at)
        .collect();
    for pair in pings.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap < Duration::from_millis(600),
            "a gap of {gap:?} would trip the watchdog"
        );
    }
    let env = s.get("/osenv").text();
    assert!(!env.contains("WATCHDOG_USEC"), "{env}");
}

#[test]
fn watchdog_for_another_pid_is_ignored_and_no_socket_means_silence() {
    let n = NotifySocket::new();
    let s = server("conformance:app")
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000")
        .env("WATCHDOG_PID", "1")
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    // A STATUS= change comes at least a second after the last one: time
    // for two pings at 400 ms, had the watchdog been ours.
    assert_eq!(s.get("/pid").status, 200);
    n.wait_for("1 requests served", Duration::from_secs(10));
    assert!(
        !n.notes().iter().any(|x| x.text.contains("WATCHDOG")),
        "{:?}",
        n.notes()
    );
    drop(s);
}

#[test]
fn watchdog_stops_while_no_worker_can_be_kept_alive() {
    let n = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("hang");
    let s = server("hang_on_flag:app")
        .args(["--timeout", "1"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "1000000")
        .env("HANG_FLAG", flag.to_str().unwrap())
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    // From now on every new worker hangs while importing the app.
    std::fs::write(&flag, "").unwrap();
    let w = s.wait_worker_count(1, Duration::from_secs(5))[0];
    // SAFETY: killing a worker of the server this test started.
    unsafe { libc::kill(w, libc::SIGKILL) };
    s.wait_count("WORKER TIMEOUT", 2, Duration::from_secs(15));
    let pings = |n: &NotifySocket| {
        n.notes()
            .into_iter()
            .filter(|x| x.text == "WATCHDOG=1")
            .count()
    };
    let before = pings(&n);
    // Two more boots time out (over 2 s, twice the watchdog's interval):
    // the master keeps trying, and pings no more.
    s.wait_count("WORKER TIMEOUT", 4, Duration::from_secs(15));
    assert_eq!(pings(&n), before, "pinged while no worker could boot");
    // Boots work again: pings resume.
    std::fs::remove_file(&flag).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while pings(&n) == before {
        assert!(
            Instant::now() < deadline,
            "pings did not resume: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.get("/").status, 200);
}

/// Spawn ferricorn with `fds` at 3, 4, ... and LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set
/// as systemd would (LISTEN_PID is the exec'd process itself).
fn spawn_activated(
    fds: &[&OwnedFd],
    names: &str,
    args: &[&str],
) -> (std::process::Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let n = raw.len();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(bin())
        .args(args)
        .current_dir(apps_dir())
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: between fork and exec we only call dup2/fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sockets out of the way first, then into 3.. in order.
            let mut moved = Vec::new();
            for &fd in &raw {
                moved.push(libc::fcntl(fd, libc::F_DUPFD, 100));
            }
            for (i, &fd) in moved.iter().enumerate() {
                libc::dup2(fd, 3 + i as i32);
                libc::close(fd);
            }
            Ok(())
        });
    }
    (cmd.spawn().unwrap(), dir)
}

fn listen_tcp(addr: &str, backlog: i32) -> (OwnedFd, std::net::SocketAddr) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    if addr.is_ipv6() {
        sock.set_only_v6(true).unwrap();
    }
    sock.bind(&addr.into()).unwrap();
    sock.listen(backlog).unwrap();
    let local = sock.local_addr().unwrap().as_socket().unwrap();
    (sock.into(), local)
}

fn ss_backlog(port: u16) -> Option<String> {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().nth(2).map(String::from)
}

#[test]
fn socket_activation_adopts_tcp_ipv6_and_unix_sockets_as_they_are() {
    let (v4, v4addr) = listen_tcp("127.0.0.1:0", 7);
    let (v6, v6addr) = listen_tcp("[::1]:0", 9);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let unix: OwnedFd = unix.into();
    let (mut child, logdir) = spawn_activated(
        &[&v4, &v6, &unix],
        "web:web6:local",
        &["-w", "2", "conformance:app"],
    );
    let log = logdir.path().join("error.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("loaded")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Adopted 3 inherited socket(s)"), "{text}");
    // Adopted as they are, but for Nagle's algorithm (off: see
    // src/listen/mod.rs), as systemd's NoDelay= would do.
    for tcp in [&v4, &v6] {
        assert!(socket2::SockRef::from(tcp).tcp_nodelay().unwrap());
    }
    assert!(
        text.contains("(fd 3, web)") && text.contains("(fd 5, local)"),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1:8000"),
        "no default bind when sockets are inherited: {text}"
    );
    for addr in [v4addr, v6addr] {
        let r = request(
            addr,
            "GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{addr}");
    }
    let mut us = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(
        &mut us,
        b"GET /osenv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut us, &mut out).unwrap();
    let r = parse_response(&out, false).unwrap().0;
    assert_eq!(r.status, 200);
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        assert!(
            !r.text().contains(var),
            "{var} leaked to the app: {}",
            r.text()
        );
    }
    // No second listen(): the backlog systemd chose is unchanged.
    assert_eq!(ss_backlog(v4addr.port()).as_deref(), Some("7"));
    assert_eq!(ss_backlog(v6addr.port()).as_deref(), Some("9"));
    // SAFETY: stopping the server this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(path.exists(), "a socket systemd owns is not removed");
    drop(v4);
}

#[test]
fn inherited_sockets_match_bind_entries_and_the_rest_are_bound() {
    let (fd, addr) = listen_tcp("127.0.0.1:0", 5);
    let extra = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra_addr = extra.local_addr().unwrap();
    drop(extra);
    let (mut child, logdir) = spawn_activated(
        &[&fd],
        "",
        &[
            "-b",
            &addr.to_string(),
            "-b",
            &extra_addr.to_string(),
            "conformance:app",
        ],
    );
    let log = logdir.path().join("error.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("loaded")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for a in [addr, extra_addr] {
        assert_eq!(
            request(
                a,
                "GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .status,
            200
        );
    }
    assert_eq!(
        ss_backlog(addr.port()).as_deref(),
        Some("5"),
        "the matching bind reused the inherited socket"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("Listening at").count(), 2, "{text}");
    // SAFETY: stopping the server this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    drop(fd);
}

#[test]
fn a_refused_upgrade_shows_in_status() {
    let n = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("ferricorn");
    copy_executable(std::path::Path::new(bin()), &exe);
    let s = server("conformance:app")
        .bin(&exe)
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    write_executable(
        &dir.path().join("new"),
        b"#!/bin/sh\necho 'broken build' >&2\nexit 9\n",
    );
    std::fs::rename(dir.path().join("new"), &exe).unwrap();
    s.signal(libc::SIGUSR2);
    let st = n.wait_for("upgrade refused", Duration::from_secs(20));
    assert!(
        st.text.starts_with("STATUS=1/1 workers ready") && st.text.contains("broken build"),
        "{st:?}"
    );
    assert_eq!(s.get("/pid").status, 200);
}

#[test]
fn status_says_when_a_replacement_worker_cannot_boot() {
    let n = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("down");
    let s = server("flaky_import:app")
        .args(["-w", "2"])
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .env("FLAKY_FLAG", flag.to_str().unwrap())
        .wait_workers(2)
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    std::fs::write(&flag, "").unwrap();
    let workers = s.workers();
    // SAFETY: signalling a worker of the server this test started.
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    let st = n.wait_for("failed to boot", Duration::from_secs(20));
    assert!(
        st.text.starts_with("STATUS=1/2 workers ready"),
        "{}",
        st.text
    );
    let whole_before = n
        .notes()
        .iter()
        .filter(|x| x.text.starts_with("STATUS=2/2 workers ready"))
        .count();
    std::fs::remove_file(&flag).unwrap();
    let back = n.wait_for_nth(
        "STATUS=2/2 workers ready",
        whole_before + 1,
        Duration::from_secs(30),
    );
    assert!(!back.text.contains("failed to boot"), "{}", back.text);
}

#[test]
fn a_reload_or_upgrade_after_term_is_ignored() {
    let n = NotifySocket::new();
    let mut s = server("conformance:app")
        .env("NOTIFY_SOCKET", n.path.to_str().unwrap())
        .start();
    n.wait_for("READY=1", Duration::from_secs(20));
    // A request in progress keeps the server draining while the signals come.
    let mut c = Conn::open(s.addr());
    c.send("GET /sleep-logged?2 HTTP/1.1\r\nHost: x\r\n\r\n");
    s.wait_log("sleeping 2", Duration::from_secs(10));
    s.signal(libc::SIGTERM);
    n.wait_for("STOPPING=1", Duration::from_secs(10));
    for sig in [libc::SIGHUP, libc::SIGUSR2, libc::SIGTTIN] {
        s.signal(sig);
    }
    s.wait_count("Ignoring", 3, Duration::from_secs(10));
    assert_eq!(c.read_response(false).map(|r| r.status), Some(200));
    assert_eq!(s.wait_exit(Duration::from_secs(20)).code(), Some(0));
    let after_stop: Vec<_> = n
        .notes()
        .into_iter()
        .skip_while(|x| !x.text.contains("STOPPING=1"))
        .filter(|x| x.text.contains("RELOADING=1") || x.text.contains("READY=1"))
        .collect();
    assert!(after_stop.is_empty(), "{after_stop:?}");
    assert_eq!(
        s.count("Booting worker"),
        1,
        "no worker forked while stopping"
    );
}
