//! The control socket (`--control-socket`, owner-only) and what
//! `ferricorn ctl` asks of it: one command per connection, one line of text
//! in, the answer out, then the connection closes.
//!
//! An answer says what happened, not what was sent: `reload` answers once
//! the new workers are ready (or the reload failed), `scale` once that many
//! workers serve. Like the health checks, clients live in the master's poll
//! loop: non-blocking, few, and each bounded in time and size.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::supervisor::{Event, Signal, State, Supervisor};

const MAX_CLIENTS: usize = 16;
const MAX_LINE: usize = 1024;
/// How long a command may take to be sent.
const READ_TIME: Duration = Duration::from_secs(5);
/// How long `reload` or `scale` waits for its outcome before saying so.
const OUTCOME_TIME: Duration = Duration::from_secs(300);

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

struct Client {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
    waiting: Option<Wait>,
}

/// What a client waits for before it gets its answer.
#[derive(Clone, Copy)]
enum Wait {
    /// A reload to end (the supervisor's count of ended reloads passes this).
    Reload { ended: u64 },
    /// This many workers serving.
    Scale(u32),
}

/// A command, as `ferricorn ctl` sends it.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Stats,
    Reload,
    Upgrade,
    Scale(u32),
    Stop { graceful: bool },
}

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Ok(match words[..] {
            ["status"] => Command::Status,
            ["stats", "--json"] | ["stats"] => Command::Stats,
            ["reload"] => Command::Reload,
            ["upgrade"] => Command::Upgrade,
            ["scale", n] => {
                Command::Scale(n.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                    format!("scale: {n:?} is not a number of workers (1 or more)")
                })?)
            }
            ["stop"] => Command::Stop { graceful: false },
            ["stop", "--graceful"] => Command::Stop { graceful: true },
            _ => {
                return Err(format!(
                    "unknown command {line:?}: status, stats --json, reload, upgrade, scale N, stop [--graceful]"
                ));
            }
        })
    }
}

impl Control {
    /// Listen at `path`, readable and writable by our user only.
    pub fn bind(path: &Path) -> std::io::Result<Control> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        }) {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
            clients: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.clients.iter().map(|c| c.stream.as_fd()))
    }

    /// Descriptors a forked worker must not keep.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds().map(|f| f.as_raw_fd()).collect()
    }

    /// After a poll (`readable` in the order of `fds()`): accept, read
    /// commands, answer those that need no waiting, and return the events
    /// the others ask of the supervisor.
    pub fn serve(&mut self, readable: &[bool], sup: &Supervisor) -> Vec<Event> {
        let now = Instant::now();
        let mut events = Vec::new();
        let mut done = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            if c.waiting.is_some() || !readable.get(i + 1).copied().unwrap_or(false) {
                continue;
            }
            let Some(line) = c.read_line() else {
                if c.line.len() > MAX_LINE {
                    done.push(i);
                }
                continue;
            };
            match Command::parse(&line) {
                Err(e) => {
                    c.reply(&format!("error: {e}"));
                    done.push(i);
                }
                Ok(Command::Status) => {
                    c.reply(&status(sup));
                    done.push(i);
                }
                Ok(Command::Stats) => {
                    c.reply(&stats_json(sup));
                    done.push(i);
                }
                Ok(Command::Reload) => {
                    crate::info!("Control: reload");
                    c.waiting = Some(Wait::Reload {
                        ended: sup.reloads().0,
                    });
                    c.deadline = now + OUTCOME_TIME;
                    events.push(Event::Signal(Signal::Hup));
                }
                Ok(Command::Upgrade) => {
                    crate::info!("Control: upgrade");
                    c.reply("upgrading: checking the binary on disk; `ferricorn ctl status` shows the version once it runs");
                    done.push(i);
                    events.push(Event::Signal(Signal::Usr2));
                }
                Ok(Command::Scale(n)) => {
                    crate::info!("Control: scale to {n}");
                    c.waiting = Some(Wait::Scale(n));
                    c.deadline = now + OUTCOME_TIME;
                    events.push(Event::Scale(n));
                }
                Ok(Command::Stop { graceful }) => {
                    crate::info!("Control: stop");
                    c.reply(if graceful {
                        "stopping: in-flight requests finish first"
                    } else {
                        "stopping now"
                    });
                    done.push(i);
                    events.push(Event::Signal(if graceful {
                        Signal::Term
                    } else {
                        Signal::Quit
                    }));
                }
            }
        }
        self.drop_clients(&done, now);
        if readable.first().copied().unwrap_or(false) {
            while let Ok((stream, _)) = self.listener.accept() {
                if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                    continue;
                }
                self.clients.push(Client {
                    stream,
                    line: Vec::new(),
                    deadline: now + READ_TIME,
                    waiting: None,
                });
            }
        }
        events
    }

    /// Answer the clients whose outcome has come (after the supervisor
    /// handled this turn's events).
    pub fn answer_waiting(&mut self, sup: &Supervisor) {
        let mut done = Vec::new();
        for (i, c) in self.clients.iter_mut().enumerate() {
            let answer = match c.waiting {
                Some(Wait::Reload { ended }) => {
                    let (now_ended, last) = sup.reloads();
                    (now_ended > ended).then(|| last.to_string())
                }
                Some(Wait::Scale(n)) => (sup.target() == n && sup.serving() == n)
                    .then(|| format!("scaled: {n} workers serving")),
                None => None,
            };
            if let Some(a) = answer {
                c.reply(&a);
                done.push(i);
            }
        }
        self.drop_clients(&done, Instant::now());
    }

    fn drop_clients(&mut self, done: &[usize], now: Instant) {
        let mut i = 0;
        self.clients.retain_mut(|c| {
            let keep = !done.contains(&i);
            i += 1;
            if keep && now >= c.deadline {
                if c.waiting.is_some() {
                    c.reply("still in progress; see `ferricorn ctl status` and the log");
                }
                return false;
            }
            keep
        });
    }

    /// Remove the socket file (on exit).
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Client {
    /// The command line, once it has come whole.
    fn read_line(&mut self) -> Option<String> {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.line.extend_from_slice(&buf[..n]);
                    if self.line.contains(&b'\n') || self.line.len() > MAX_LINE {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
        let end = self.line.iter().position(|&b| b == b'\n')?;
        Some(
            String::from_utf8_lossy(&self.line[..end])
                .trim()
                .to_string(),
        )
    }

    fn reply(&mut self, text: &str) {
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = self.stream.write_all(text.as_bytes());
        let _ = self.stream.write_all(b"\n");
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Booting => "booting",
        State::Serving => "serving",
        State::Retiring { .. } => "retiring",
        State::Aborting { .. } => "aborting",
        State::Killed => "killed",
    }
}

/// `ferricorn ctl status`: the pool, one line per worker.
fn status(sup: &Supervisor) -> String {
    let now = Instant::now();
    let mut out = format!(
        "ferricorn {} (pid {}): {}, {}/{} workers serving, {} requests served\n",
        crate::VERSION,
        std::process::id(),
        sup.phase().name(),
        sup.serving(),
        sup.target(),
        sup.requests_done()
    );
    out.push_str("PID      STATE     AGE(s)   REQUESTS  IN-FLIGHT  RSS(MB)\n");
    for w in sup.workers() {
        out.push_str(&format!(
            "{:<8} {:<9} {:<8} {:<9} {:<10} {}\n",
            w.pid,
            state_name(w.state),
            now.duration_since(w.started).as_secs(),
            w.requests,
            w.in_flight,
            crate::sys::resident_bytes(w.pid).map_or(0, |b| b >> 20)
        ));
    }
    out.trim_end().to_string()
}

/// `ferricorn ctl stats --json`.
fn stats_json(sup: &Supervisor) -> String {
    let now = Instant::now();
    let workers: Vec<serde_json::Value> = sup
        .workers()
        .iter()
        .map(|w| {
            serde_json::json!({
                "pid": w.pid,
                "state": state_name(w.state),
                "age_seconds": now.duration_since(w.started).as_secs_f64(),
                "requests": w.requests,
                "in_flight": w.in_flight,
                "rss_bytes": crate::sys::resident_bytes(w.pid).unwrap_or(0),
            })
        })
        .collect();
    serde_json::json!({
        "version": crate::VERSION,
        "pid": std::process::id(),
        "phase": sup.phase().name(),
        "target": sup.target(),
        "serving": sup.serving(),
        "requests": sup.requests_done(),
        "workers": workers,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_mistakes_say_what_exists() {
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        assert_eq!(Command::parse("stats --json"), Ok(Command::Stats));
        assert_eq!(Command::parse("scale 3"), Ok(Command::Scale(3)));
        assert_eq!(
            Command::parse("stop --graceful"),
            Ok(Command::Stop { graceful: true })
        );
        assert!(Command::parse("scale 0").unwrap_err().contains("1 or more"));
        assert!(
            Command::parse("restart")
                .unwrap_err()
                .contains("status, stats")
        );
    }
}
