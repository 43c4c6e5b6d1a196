//! journald's native protocol, through `tracing-journald`: one entry per
//! event, with the event's fields (`WORKER_PID`, `HTTP_STATUS`, …) as
//! journal fields; an entry over the datagram limit (a long traceback)
//! travels in a sealed memfd.
//!
//! Used when stderr is connected to the journal (`$JOURNAL_STREAM` names the
//! same device and inode) or when `journald = "yes"`. Each process sends its
//! own entries, so journald records the real sender as `_PID`.

use tracing::Subscriber;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use super::{ACCESS_TARGET, CRITICAL_TARGET};

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

/// The journal's layers: CRITICAL lines as priority 2 (an ERROR event
/// of their own target), every other event with gunicorn's priorities
/// (INFO is 6, "informational", as syslog has it). Fails when journald
/// cannot be reached.
pub fn layers<S>() -> std::io::Result<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let journal = |error| -> std::io::Result<tracing_journald::Layer> {
        Ok(tracing_journald::layer()?
            .with_field_prefix(None)
            .with_syslog_identifier("ferricorn".into())
            .with_priority_mappings(PriorityMappings {
                error,
                warn: Priority::Warning,
                info: Priority::Informational,
                debug: Priority::Debug,
                trace: Priority::Debug,
            }))
    };
    let critical =
        journal(Priority::Critical)?.with_filter(filter_fn(|m| m.target() == CRITICAL_TARGET));
    let rest = journal(Priority::Error)?.with_filter(filter_fn(|m| {
        m.target() != CRITICAL_TARGET
            && (m.target() != ACCESS_TARGET || super::access::to_journal())
    }));
    Ok(Box::new(critical.and_then(rest)))
}
