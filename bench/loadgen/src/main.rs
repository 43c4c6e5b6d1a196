//! Load shapes wrk cannot make, for bench/bench.py. Every mode is bounded
//! in time and prints one JSON line.
//!
//!   loadgen close TARGET CONNS SECONDS
//!       CONNS clients, each opening a new connection per request
//!       (`Connection: close`, what nginx's default proxy_pass sends).
//!   loadgen hold TARGET CONNS SECONDS
//!       opens CONNS keep-alive connections (within 20 s), one request on each, prints
//!       `{"held": N, ...}`, then holds them until stdin closes (at most
//!       SECONDS), the while the caller measures the server's memory.
//!   loadgen slow TARGET SLOW CONNS SECONDS
//!       SLOW clients trickle their request headers a line a second
//!       (slowloris) while CONNS normal clients, a new connection per
//!       request and 10 ms apart, are timed.
//!
//! TARGET: `tcp:HOST:PORT` or `unix:PATH`. The request is `GET /`.

use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
enum Target {
    Tcp(String),
    Unix(String),
}

impl Target {
    fn parse(s: &str) -> Target {
        match s.split_once(':') {
            Some(("tcp", a)) => Target::Tcp(a.to_string()),
            Some(("unix", p)) => Target::Unix(p.to_string()),
            _ => usage(&format!("bad target {s:?}: tcp:HOST:PORT or unix:PATH")),
        }
    }

    async fn connect(&self) -> io::Result<Box<dyn Io>> {
        Ok(match self {
            Target::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Target::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
        })
    }
}

const CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const KEEP: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

fn usage(why: &str) -> ! {
    eprintln!(
        "loadgen: {why}\nusage: loadgen close|hold TARGET CONNS SECONDS | loadgen slow TARGET SLOW CONNS SECONDS"
    );
    std::process::exit(2);
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage(&format!("missing or bad {what}")))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let target = Target::parse(args.get(1).map(String::as_str).unwrap_or(""));
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let line = match mode {
        "close" => rt.block_on(close(
            target,
            arg(&args, 2, "CONNS"),
            arg(&args, 3, "SECONDS"),
        )),
        "hold" => rt.block_on(hold(
            target,
            arg(&args, 2, "CONNS"),
            arg(&args, 3, "SECONDS"),
        )),
        "slow" => rt.block_on(slow(
            target,
            arg(&args, 2, "SLOW"),
            arg(&args, 3, "CONNS"),
            arg(&args, 4, "SECONDS"),
        )),
        _ => usage("mode must be close, hold or slow"),
    };
    println!("{line}");
    // Held and slow connections are dropped with the runtime, not awaited.
    rt.shutdown_timeout(Duration::from_millis(100));
}

/// Enough descriptors for ten thousand connections.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Read one response: its status, once its body (Content-Length) is in, or
/// at end of stream when `to_eof`.
async fn response(io: &mut Box<dyn Io>, buf: &mut Vec<u8>, to_eof: bool) -> io::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_end, status, length) = loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (end + 4, status, length);
        }
    };
    if to_eof {
        while io.read(&mut chunk).await? > 0 {}
        return Ok(status);
    }
    let want = head_end
        + length.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
    while buf.len() < want {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// One request on a new connection; its latency.
async fn one_closed(target: &Target, buf: &mut Vec<u8>) -> io::Result<Duration> {
    let t0 = Instant::now();
    let mut io = target.connect().await?;
    io.write_all(CLOSE).await?;
    let status = response(&mut io, buf, true).await?;
    if !(200..400).contains(&status) {
        return Err(io::Error::other(format!("status {status}")));
    }
    Ok(t0.elapsed())
}

struct Tally {
    micros: Vec<u32>,
    errors: u64,
}

impl Tally {
    fn merge(all: Vec<Tally>) -> Tally {
        let mut t = Tally {
            micros: Vec::new(),
            errors: 0,
        };
        for x in all {
            t.micros.extend(x.micros);
            t.errors += x.errors;
        }
        t.micros.sort_unstable();
        t
    }

    fn ms(&self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return f64::NAN;
        }
        let i = ((self.micros.len() - 1) as f64 * q).round() as usize;
        self.micros[i] as f64 / 1000.0
    }

    fn json(&self, seconds: f64) -> String {
        format!(
            "\"requests\": {}, \"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"errors\": {}",
            self.micros.len(),
            self.micros.len() as f64 / seconds,
            self.ms(0.5),
            self.ms(0.99),
            self.ms(1.0),
            self.errors
        )
    }
}

/// `conns` clients, each a new connection per request until `deadline`,
/// `pause` apart; a request that takes over 10 s counts as failed.
async fn timed_clients(target: &Target, conns: usize, deadline: Instant, pause: Duration) -> Tally {
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut t = Tally {
                    micros: Vec::new(),
                    errors: 0,
                };
                let mut buf = Vec::with_capacity(4096);
                while Instant::now() < deadline {
                    let one = tokio::time::timeout(
                        Duration::from_secs(10),
                        one_closed(&target, &mut buf),
                    );
                    match one.await {
                        Ok(Ok(d)) => t.micros.push(d.as_micros() as u32),
                        _ => t.errors += 1,
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("client task"));
    }
    Tally::merge(all)
}

async fn close(target: Target, conns: usize, seconds: u64) -> String {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(seconds);
    let t = timed_clients(&target, conns, deadline, Duration::ZERO).await;
    format!("{{{}}}", t.json(t0.elapsed().as_secs_f64()))
}

async fn hold(target: Target, conns: usize, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let opening = Instant::now() + Duration::from_secs(20);
    // Not all at once: a listen backlog is not ten thousand deep.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let (target, gate) = (target.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire().await.ok()?;
                // A server that stops accepting or answering fails the
                // connections left, not the run.
                tokio::time::timeout_at(opening.into(), async {
                    let mut io = target.connect().await.ok()?;
                    io.write_all(KEEP).await.ok()?;
                    let status = response(&mut io, &mut Vec::new(), false).await.ok()?;
                    (200..400).contains(&status).then_some(io)
                })
                .await
                .ok()
                .flatten()
            })
        })
        .collect();
    let mut held = Vec::new();
    for task in tasks {
        if let Some(io) = task.await.expect("client task") {
            held.push(io);
        }
    }
    let opened = held.len();
    println!("{{\"held\": {opened}, \"failed\": {}}}", conns - opened);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Hold until the caller closes our stdin (it has measured), or the deadline.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout_at(deadline.into(), async {
        while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    // Still open now: the server kept them while it was measured.
    let mut open = 0;
    for io in &mut held {
        let mut probe = [0u8; 1];
        let closed = matches!(
            tokio::time::timeout(Duration::from_millis(1), io.read(&mut probe)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        open += usize::from(!closed);
    }
    format!("{{\"held\": {opened}, \"still_open\": {open}}}")
}

async fn slow(target: Target, slow: usize, conns: usize, seconds: u64) -> String {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(seconds);
    let trickling = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..slow {
        let (target, trickling) = (target.clone(), trickling.clone());
        tokio::spawn(async move {
            // Reconnect when the server closes one, as a slowloris does.
            while Instant::now() < deadline {
                let Ok(mut io) = target.connect().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                trickling.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut line: &[u8] = b"GET / HTTP/1.1\r\n";
                while io.write_all(line).await.is_ok() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    line = b"X-Slow: 1\r\n";
                }
            }
        });
    }
    // Let the slow ones take their places first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = timed_clients(&target, conns, deadline, Duration::from_millis(10)).await;
    format!(
        "{{{}, \"slow_connections\": {}}}",
        t.json(t0.elapsed().as_secs_f64() - 0.5),
        trickling.load(std::sync::atomic::Ordering::Relaxed)
    )
}
