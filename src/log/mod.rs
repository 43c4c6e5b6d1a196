//! The error log: gunicorn's line format on stderr or `--error-logfile`.
//!
//! Every line is written with a single `write(2)`, so lines from the master
//! and several workers sharing one file descriptor never interleave.

pub mod access;
mod clock;
pub mod journal;

pub use clock::{access_time, error_time};

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

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
        }
        Ok(())
    }
}

enum ErrorLog {
    Stream(Output),
    Journal(journal::Journal),
}

static ERROR_LOG: OnceLock<ErrorLog> = OnceLock::new();
/// Set in workers: journal entries carry `WORKER_PID`.
static WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Install the error log. Before this is called, lines go to stderr.
/// With `journal`, records go to journald's native socket instead of `sink`.
pub fn init(sink: Sink, level: Level, journal: bool) -> std::io::Result<()> {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let log = if journal {
        ErrorLog::Journal(journal::Journal::connect()?)
    } else {
        ErrorLog::Stream(Output::open(sink)?)
    };
    let _ = ERROR_LOG.set(log);
    Ok(())
}

/// Entries logged by this process from now on are a worker's.
pub fn mark_worker() {
    WORKER.store(true, Ordering::Relaxed);
}

/// The journal, when logs go there (access entries use it too).
pub fn journal() -> Option<&'static journal::Journal> {
    match ERROR_LOG.get() {
        Some(ErrorLog::Journal(j)) => Some(j),
        _ => None,
    }
}

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

pub fn reopen() {
    if let Some(ErrorLog::Stream(out)) = ERROR_LOG.get()
        && let Err(e) = out.reopen()
    {
        log_line(
            Level::Error,
            &format!("could not reopen the error log: {e}"),
        );
    }
}

/// Write one record; multi-line messages (tracebacks) keep the prefix on the first line only,
/// as gunicorn does.
pub fn log_line(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    let pid = std::process::id();
    if let Some(ErrorLog::Journal(j)) = ERROR_LOG.get() {
        // journald stamps time and pid itself; the level is PRIORITY.
        let pid = pid.to_string();
        let role: &[(&str, &str)] = if WORKER.load(Ordering::Relaxed) {
            &[("WORKER_PID", &pid)]
        } else {
            &[]
        };
        j.send(journal::priority(level), msg, role);
        return;
    }
    let mut line = format!("[{}] [{}] [{}] {}", error_time(), pid, level.name(), msg);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    match ERROR_LOG.get() {
        Some(ErrorLog::Stream(out)) => out.write_line(line.as_bytes()),
        _ => {
            let _ = std::io::stderr().write_all(line.as_bytes());
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
