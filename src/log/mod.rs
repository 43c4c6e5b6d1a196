//! Logging through `tracing`: gunicorn's line format on stderr,
//! `--error-logfile` and the access log (`lines`), or journald entries with
//! structured fields (`journal`, with `tracing-journald`).
//!
//! Every line is written with a single `write(2)`, so lines from the master
//! and several workers sharing one file descriptor never interleave.

pub mod access;
mod clock;
pub mod journal;
mod lines;

pub use clock::{access_time, error_time};

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    /// Python's `logging` numbers map onto the nearest level at or below.
    pub fn from_python(levelno: i64) -> Level {
        match levelno {
            i64::MIN..=10 => Level::Debug,
            11..=20 => Level::Info,
            21..=30 => Level::Warning,
            31..=40 => Level::Error,
            _ => Level::Critical,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

/// Where a log goes: a terminal/stream we were given, or a file we reopen on USR1.
pub enum Sink {
    Stderr,
    Stdout,
    File(PathBuf),
}

impl Sink {
    pub fn parse(spec: &str) -> Sink {
        match spec {
            "-" => Sink::Stderr,
            path => Sink::File(PathBuf::from(path)),
        }
    }

    pub fn open(&self) -> std::io::Result<File> {
        match self {
            // Copies (close-on-exec, numbered 3 and up) of the standard streams.
            Sink::Stderr => Ok(File::from(std::io::stderr().as_fd().try_clone_to_owned()?)),
            Sink::Stdout => Ok(File::from(std::io::stdout().as_fd().try_clone_to_owned()?)),
            Sink::File(path) => OpenOptions::new().create(true).append(true).open(path),
        }
    }
}

/// An output that can be reopened in place (USR1).
pub struct Output {
    sink: Sink,
    file: Mutex<File>,
}

impl Output {
    pub fn open(sink: Sink) -> std::io::Result<Output> {
        let file = sink.open()?;
        Ok(Output {
            sink,
            file: Mutex::new(file),
        })
    }

    pub fn write_line(&self, line: &[u8]) {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write so concurrent writers never interleave within a line.
        let _ = (&*file).write_all(line);
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        if let Sink::File(_) = self.sink {
            let new = self.sink.open()?;
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = new;
            if CAPTURE.load(Ordering::Relaxed) {
                self.onto_std()?;
            }
        }
        Ok(())
    }

    /// Make stdout and stderr this file (a file sink only).
    fn onto_std(&self) -> std::io::Result<()> {
        if let Sink::File(_) = self.sink {
            let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
            nix::unistd::dup2_stdout(&*file)?;
            nix::unistd::dup2_stderr(&*file)?;
        }
        Ok(())
    }
}

/// `--capture-output`: stdout and stderr follow the error log file.
static CAPTURE: AtomicBool = AtomicBool::new(false);

/// `--capture-output`: from now on (and after each reopen) the process's
/// stdout and stderr are the error log file, which workers inherit. Does
/// nothing when the error log is a stream or the journal.
pub fn capture_output() -> std::io::Result<()> {
    CAPTURE.store(true, Ordering::Relaxed);
    match ERROR_LOG.get() {
        Some(out) => out.onto_std(),
        None => Ok(()),
    }
}

/// Where error lines go when not to the journal.
static ERROR_LOG: OnceLock<Output> = OnceLock::new();
/// Logs go to journald (set by `init`).
static JOURNAL: AtomicBool = AtomicBool::new(false);
/// Set in workers: journal entries carry `WORKER_PID`.
static WORKER: AtomicBool = AtomicBool::new(false);
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Events of a CRITICAL line: `tracing` has no such level, so they are
/// ERROR events of their own target.
pub const CRITICAL_TARGET: &str = "ferricorn::critical";
/// Access lines.
pub const ACCESS_TARGET: &str = "ferricorn::access";

/// Install the error log: a `tracing` subscriber whose layers write
/// gunicorn's lines (`lines`) or journald entries (`journal`). Before
/// this is called, lines go to stderr.
pub fn init(sink: Sink, level: Level, journal: bool) -> std::io::Result<()> {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let journald = if journal {
        Some(journal::layers()?)
    } else {
        let _ = ERROR_LOG.set(Output::open(sink)?);
        None
    };
    JOURNAL.store(journal, Ordering::Relaxed);
    // Only our own events: the crates under us (h2) emit theirs at every
    // frame, which would cost the request path and flood the log. Filtered
    // by callsite, so theirs are never even built.
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("ferricorn", tracing::level_filters::LevelFilter::TRACE);
    let subscriber = tracing_subscriber::registry()
        .with(lines::Lines)
        .with(journald)
        .with(ours);
    // Only the first call installs it; a process inits once.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// Entries logged by this process from now on are a worker's.
pub fn mark_worker() {
    WORKER.store(true, Ordering::Relaxed);
}

/// Do logs go to the journal?
pub fn to_journal() -> bool {
    JOURNAL.load(Ordering::Relaxed)
}

/// This process's pid when it is a worker (the journal's `WORKER_PID`).
pub fn worker_pid() -> Option<u32> {
    WORKER.load(Ordering::Relaxed).then(std::process::id)
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

pub fn reopen() {
    if let Some(out) = ERROR_LOG.get()
        && let Err(e) = out.reopen()
    {
        log_line(
            Level::Error,
            &format!("could not reopen the error log: {e}"),
        );
    }
}

/// Log one record; multi-line messages (tracebacks) keep the prefix on the
/// first line only, as gunicorn does.
pub fn log_line(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    if !tracing::dispatcher::has_been_set() {
        let _ = std::io::stderr().write_all(lines::format(level, msg).as_bytes());
        return;
    }
    let worker = worker_pid();
    // The line format ends every line itself; the journal wants none.
    let msg = msg.trim_end_matches('\n');
    match level {
        Level::Debug => tracing::debug!(target: "ferricorn", WORKER_PID = worker, message = msg),
        Level::Info => tracing::info!(target: "ferricorn", WORKER_PID = worker, message = msg),
        Level::Warning => tracing::warn!(target: "ferricorn", WORKER_PID = worker, message = msg),
        Level::Error => tracing::error!(target: "ferricorn", WORKER_PID = worker, message = msg),
        Level::Critical => {
            tracing::error!(target: "ferricorn::critical", WORKER_PID = worker, message = msg)
        }
    }
}

#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Debug) { $crate::log::log_line($crate::log::Level::Debug, &format!($($t)*)) } } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Info) { $crate::log::log_line($crate::log::Level::Info, &format!($($t)*)) } } }
#[macro_export]
macro_rules! warning { ($($t:tt)*) => { $crate::log::log_line($crate::log::Level::Warning, &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log_line($crate::log::Level::Error, &format!($($t)*)) } }
#[macro_export]
macro_rules! critical { ($($t:tt)*) => { $crate::log::log_line($crate::log::Level::Critical, &format!($($t)*)) } }
