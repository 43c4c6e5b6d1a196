//! Test harness: start the real binary on real sockets, speak HTTP to it, read its log.
#![allow(dead_code)]

pub mod pki;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tests copy executables while other test threads fork: a child forked while
/// a copy is open for writing holds that descriptor until it execs, and
/// executing the copy then fails with ETXTBSY. Copies take this lock for
/// writing, spawns for reading.
static EXEC_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Copy an executable (see `EXEC_LOCK`), keeping its mode.
pub fn copy_executable(from: &Path, to: &Path) {
    let _g = EXEC_LOCK.write().unwrap_or_else(|e| e.into_inner());
    fs::copy(from, to).unwrap();
}

/// Write a script and make it executable (see `EXEC_LOCK`).
pub fn write_executable(path: &Path, content: &[u8]) {
    let _g = EXEC_LOCK.write().unwrap_or_else(|e| e.into_inner());
    fs::write(path, content).unwrap();
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferricorn")
}

pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// A running ferricorn master started by a test; killed (by PID) on drop.
pub struct Server {
    pub child: Option<Child>,
    pub pid: i32,
    pub log: PathBuf,
    pub stdout: PathBuf,
    pub addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

pub struct Builder {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    wait_workers: usize,
}

impl Builder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn cwd(mut self, p: impl AsRef<Path>) -> Self {
        self.cwd = p.as_ref().to_path_buf();
        self
    }
    /// Run this executable instead of the one cargo built.
    pub fn bin(mut self, path: impl AsRef<Path>) -> Self {
        self.bin = path.as_ref().to_path_buf();
        self
    }
    /// Wait for this many "loaded" lines before returning (default 1).
    pub fn wait_workers(mut self, n: usize) -> Self {
        self.wait_workers = n;
        self
    }

    /// Start without waiting for anything.
    pub fn spawn(self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("error.log");
        let stdout = dir.path().join("stdout.log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .current_dir(&self.cwd)
            .env_remove("WEB_CONCURRENCY")
            .env_remove("PORT")
            .env_remove("VIRTUAL_ENV")
            .env_remove("FERRICORN_CMD_ARGS")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&log).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = {
            let _no_copy_in_progress = EXEC_LOCK.read().unwrap_or_else(|e| e.into_inner());
            cmd.spawn().expect("start ferricorn")
        };
        Server {
            pid: child.id() as i32,
            child: Some(child),
            log,
            stdout,
            addr: None,
            dir,
        }
    }

    /// Start and wait until the workers have loaded the app.
    pub fn start(self) -> Server {
        let n = self.wait_workers;
        let mut s = self.spawn();
        s.wait_listening();
        // The workers' "Worker (pid:N) loaded APP"; not the master's
        // "Preloaded APP …", which comes before any worker has forked.
        s.wait_count(") loaded ", n, Duration::from_secs(30));
        s
    }
}

/// A server on an ephemeral loopback port running `app` from tests/apps.
pub fn server(app: &str) -> Builder {
    Builder {
        bin: bin().into(),
        args: vec![
            "-b".into(),
            "127.0.0.1:0".into(),
            "--chdir".into(),
            apps_dir().display().to_string(),
            app.into(),
        ],
        env: vec![],
        cwd: apps_dir(),
        wait_workers: 1,
    }
}

/// The bare command, with no default arguments.
pub fn command() -> Builder {
    Builder {
        bin: bin().into(),
        args: vec![],
        env: vec![],
        cwd: apps_dir(),
        wait_workers: 1,
    }
}

impl Server {
    /// Wait for the master's "Listening at" line and note the address.
    pub fn wait_listening(&mut self) {
        let line = self.wait_log("Listening at: ", Duration::from_secs(20));
        if let Some(rest) = line.split("Listening at: http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            self.addr = Some(addr.parse().unwrap());
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server address")
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Wait for a log line containing `needle`; returns the line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_count(needle, 1, timeout)
    }

    /// Wait until `needle` appears `n` times; returns the n-th line.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if lines.len() >= n {
                return lines[n - 1].to_string();
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {n}x {needle:?}; log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the child process this test started.
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Wait for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "server did not exit in {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PIDs of the master's live worker processes.
    pub fn workers(&self) -> Vec<i32> {
        children_of(self.pid)
    }

    /// Wait until the master has exactly `n` workers.
    pub fn wait_worker_count(&self, n: usize, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.workers();
            if w.len() == n {
                return w;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {n} workers, have {w:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Response {
        request(
            self.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let workers = children_of(self.pid);
            // SAFETY: killing processes this test started (the master and its workers).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            for w in workers {
                // SAFETY: as above.
                unsafe { libc::kill(w, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}

pub fn children_of(pid: i32) -> Vec<i32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let mut pids: Vec<i32> = fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    // Zombies awaiting reaping are not workers.
    pids.retain(|p| {
        fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    });
    pids
}

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw_head: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A thread's voluntary context switches so far (times it went to sleep).
fn sleeps(pid: u32, tid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Responses are handed back in batches: a one-worker server's I/O thread
/// (in the worker whose pid `/pid` answers: its main thread, or the thread
/// named `ferricorn-io` where an event loop has the main thread) goes to
/// sleep less than 0.6 times per request while 16 keep-alive clients send
/// 40 requests each for `path` (once per response and once per next
/// request without).
pub fn assert_responses_batched(s: &Server, path: &str) {
    let per_request = io_thread_sleeps_per_request(s, path);
    assert!(
        per_request < 0.6,
        "the I/O thread went to sleep {per_request:.2} times per request"
    );
}

fn io_thread_sleeps_per_request(s: &Server, path: &str) -> f64 {
    let (pid, io) = io_thread(s);
    let (clients, each) = (16, 40);
    let before = sleeps(pid, io);
    let addr = s.addr();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let raw = raw.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..each {
                    c.send(&raw);
                    assert_eq!(c.read_response(false).expect("a response").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (sleeps(pid, io) - before) as f64 / (clients * each) as f64
}

/// A one-worker server's worker (whose pid `/pid` answers) and its I/O
/// thread: the thread named `ferricorn-io` where an event loop has the
/// main thread, else the main thread.
fn io_thread(s: &Server) -> (u32, u32) {
    let pid: u32 = s.get("/pid").text().trim().parse().expect("a pid");
    let io = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "ferricorn-io")
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or(pid);
    (pid, io)
}

/// How often a one-worker server's I/O thread went to sleep in the
/// `window` after one request for `path` was answered: an idle worker
/// should wait for its next request (and its heartbeat), not tick.
pub fn io_thread_sleeps_after_one_request(s: &Server, path: &str, window: Duration) -> u64 {
    let (pid, io) = io_thread(s);
    let mut c = Conn::open(s.addr());
    c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(c.read_response(false).expect("a response").status, 200);
    let before = sleeps(pid, io);
    std::thread::sleep(window);
    sleeps(pid, io) - before
}

/// `n` clients at once, each sending `GET path` on a connection of its own.
pub fn concurrent_gets(
    addr: SocketAddr,
    path: &str,
    n: usize,
) -> Vec<std::thread::JoinHandle<Response>> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    (0..n)
        .map(|_| {
            let raw = raw.clone();
            std::thread::spawn(move || request(addr, &raw))
        })
        .collect()
}

/// POST `body` on a new connection: with Content-Length, or chunked in
/// pieces of the given size.
pub fn post_body(addr: SocketAddr, path: &str, body: &[u8], chunk: Option<usize>) -> Response {
    let mut raw = Vec::new();
    match chunk {
        Some(size) => {
            raw.extend_from_slice(
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            for piece in body.chunks(size) {
                raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                raw.extend_from_slice(piece);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        }
        None => {
            raw.extend_from_slice(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            raw.extend_from_slice(body);
        }
    }
    request_bytes(addr, &raw)
}

/// Send raw bytes on a new connection and read one response (to EOF).
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    request_bytes(addr, raw.as_bytes())
}

pub fn request_bytes(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf, false)
        .unwrap_or_else(|| panic!("bad response: {:?}", String::from_utf8_lossy(&buf)))
        .0
}

/// Parse one response from `buf`; returns it and the bytes it used.
pub fn parse_response(buf: &[u8], head_request: bool) -> Option<(Response, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
        raw_head: head,
    };
    let mut pos = end + 4;
    if head_request || status == 204 || status == 304 || status < 200 {
        return Some((resp, pos));
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            let size_str = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
            let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                pos += 2;
                break;
            }
            resp.body.extend_from_slice(buf.get(pos..pos + size)?);
            pos += size + 2;
        }
    } else if let Some(cl) = resp.header("content-length") {
        let cl: usize = cl.parse().ok()?;
        resp.body.extend_from_slice(buf.get(pos..pos + cl)?);
        pos += cl;
    } else {
        resp.body.extend_from_slice(&buf[pos..]);
        pos = buf.len();
    }
    Some((resp, pos))
}

/// A keep-alive client: several requests on one connection.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    /// A connection, or None when the server refuses it (it has stopped listening).
    pub fn try_open(addr: SocketAddr, read_timeout: Duration) -> Option<Conn> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        Some(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, raw: &str) {
        let _ = self.stream.write_all(raw.as_bytes());
    }

    /// Read the next response; None if the server closed the connection.
    pub fn read_response(&mut self, head_request: bool) -> Option<Response> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, head_request) {
                let complete = resp.header("content-length").is_some()
                    || resp.header("transfer-encoding").is_some()
                    || head_request
                    || resp.status == 204
                    || resp.status == 304
                    || resp.status < 200;
                if complete {
                    self.buf.drain(..used);
                    return Some(resp);
                }
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) | Err(_) => {
                    return parse_response(&self.buf, head_request).map(|(r, used)| {
                        self.buf.drain(..used);
                        r
                    });
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// True when the server has closed the connection (EOF within `wait`).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut tmp = [0u8; 1];
        matches!(self.stream.read(&mut tmp), Ok(0))
    }
}

/// A virtualenv made from the system Python with Flask and Django, shared by all tests.
#[cfg(feature = "full")]
pub fn test_venv() -> PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new("bash")
            .arg(root.join("scripts/test-venv.sh"))
            .status()
            .expect("run scripts/test-venv.sh");
        assert!(status.success(), "scripts/test-venv.sh failed");
        root.join("target/test-venv")
    })
    .clone()
}

/// The fast tier has no virtualenv: a test that needs one says so.
#[cfg(not(feature = "full"))]
pub fn test_venv() -> PathBuf {
    panic!(
        "this test needs the full tier's virtualenv: mark it \
         #[cfg_attr(not(feature = \"full\"), ignore = ...)], and run it with \
         `scripts/install-deps.sh && cargo test --features full`"
    )
}

/// A child process that is killed and reaped when the test lets it go,
/// also when the test panics.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gunicorn from the test virtualenv, the reference a test compares with:
/// on a free loopback port, the app from tests/apps, `args` before it.
pub struct Gunicorn {
    pub addr: SocketAddr,
    _child: Reaped,
}

impl Gunicorn {
    /// Start it and wait (at most 20 s) until it accepts connections.
    pub fn start(args: &[&str], app: &str) -> Gunicorn {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(test_venv().join("bin/gunicorn"))
            .args(args)
            .arg("-b")
            .arg(format!("127.0.0.1:{port}"))
            .arg(app)
            .current_dir(apps_dir())
            .env_remove("WEB_CONCURRENCY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gunicorn");
        let g = Gunicorn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: Reaped(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(g.addr).is_err() {
            assert!(Instant::now() < deadline, "gunicorn did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }
}

impl Builder {
    /// Start a server whose error log goes to `log` (not stderr) and wait for its worker.
    pub fn start_with_log(self, log: &Path) -> Server {
        let mut s = self.spawn();
        s.log = log.to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !fs::read_to_string(log)
            .unwrap_or_default()
            .contains("loaded")
        {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(25));
        }
        let line = s.wait_log("Listening at: http://", Duration::from_secs(1));
        let addr = line.split("Listening at: http://").nth(1).unwrap();
        s.addr = addr.split_whitespace().next().unwrap().parse().ok();
        s
    }
}

/// Poll `done` until it holds; fail naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A copy of an app from tests/apps in a directory anyone may read: for
/// workers that run as `nobody`, wherever this checkout lives (a CI clone
/// may be under a 0700 directory).
pub fn readable_copy(app_file: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::copy(apps_dir().join(app_file), dir.path().join(app_file)).unwrap();
    dir
}

/// Wait until every process in `pids` has exited (gone, or a zombie awaiting its parent).
pub fn wait_gone(pids: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for &pid in pids {
        while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
            assert!(Instant::now() < deadline, "process {pid} is still running");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Clients the test owns: two open a new connection per request, two reuse
/// keep-alive connections. A request on a reused connection that the server
/// closed before answering is retried once on a new connection, as HTTP/1.1
/// clients do (RFC 9112 §9.3.1); nothing else is retried.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: std::net::SocketAddr, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for keep_alive in [false, false, true, true] {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            threads.push(std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut conn: Option<Conn> = None;
                let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = if keep_alive {
                        let reused = conn.is_some();
                        let c = conn.get_or_insert_with(|| Conn::open(addr));
                        c.send(&req);
                        let mut r = c.read_response(false);
                        if r.is_none() && reused {
                            let c = conn.insert(Conn::open(addr));
                            c.send(&req);
                            r = c.read_response(false);
                        }
                        if r.as_ref()
                            .is_none_or(|r| r.header("connection") == Some("close"))
                        {
                            conn = None;
                        }
                        r
                    } else {
                        let mut c = Conn::open(addr);
                        c.send(&format!(
                            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        ));
                        c.read_response(false)
                    };
                    match r {
                        Some(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed (keep-alive {keep_alive}): {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Wait until `n` more requests were answered (the load is flowing, and
    /// what comes next happens under it); panics after 30 s.
    pub fn wait_answered(&self, n: u64) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the load did not get {n} answers in 30 s ({} failed)",
                self.failed.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A copy of a socket that process `pid` holds, the first for which `which`
/// is true (pidfd_getfd: the tests run as root, or as the ancestor of the
/// servers they start).
pub fn socket_held_by(
    pid: i32,
    which: impl Fn(&socket2::SockRef<'_>) -> bool,
) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes no pointers; a descriptor it returns is ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: as above, a fresh descriptor nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let target = fs::read_link(entry.path()).unwrap_or_default();
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        // SAFETY: pidfd_getfd takes no pointers; a descriptor it returns is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: as above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if which(&socket2::SockRef::from(&fd)) {
            return Some(fd);
        }
    }
    None
}
