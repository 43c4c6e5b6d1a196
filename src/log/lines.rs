//! gunicorn's line format, as a `tracing` layer: error lines
//! (`[time] [pid] [LEVEL] message`) to the error log, and access lines, which
//! arrive formatted, to the access log, byte for byte as gunicorn writes them.
//! `tracing-subscriber`'s own formatter cannot be made to write this format
//! (its timestamps, levels and field rendering are its own).

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::{ACCESS_TARGET, CRITICAL_TARGET, ERROR_LOG, Level, error_time};

pub struct Lines;

/// `[time] [pid] [LEVEL] message`, ending in a newline.
pub fn format(level: Level, msg: &str) -> String {
    let mut line = format!(
        "[{}] [{}] [{}] {}",
        error_time(),
        std::process::id(),
        level.name(),
        msg
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

fn level_of(event: &Event<'_>) -> Level {
    let meta = event.metadata();
    match *meta.level() {
        tracing::Level::ERROR if meta.target() == CRITICAL_TARGET => Level::Critical,
        tracing::Level::ERROR => Level::Error,
        tracing::Level::WARN => Level::Warning,
        tracing::Level::INFO => Level::Info,
        _ => Level::Debug,
    }
}

/// The event's `message`, written as it is visited (no copy for access lines).
struct Message<F: FnMut(&str)>(F);

impl<F: FnMut(&str)> Visit for Message<F> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            (self.0)(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            (self.0)(&format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == ACCESS_TARGET {
            if let Some(out) = super::access::stream() {
                event.record(&mut Message(|line: &str| out.write_line(line.as_bytes())));
            }
            return;
        }
        let Some(out) = ERROR_LOG.get() else {
            return;
        };
        let level = level_of(event);
        event.record(&mut Message(|msg: &str| {
            out.write_line(format(level, msg).as_bytes())
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::access::{AccessLog, Record};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn an_error_line_has_gunicorns_shape() {
        let line = format(Level::Critical, "WORKER TIMEOUT (pid:42)");
        // [2026-12-06 23:28:44 +0000] [21493] [CRITICAL] WORKER TIMEOUT (pid:42)
        let (stamp, rest) = line.split_once("] ").unwrap();
        assert_eq!(stamp.len(), "[2026-12-06 23:28:44 +0000".len(), "{line}");
        assert_eq!(
            rest,
            format!(
                "[{}] [CRITICAL] WORKER TIMEOUT (pid:42)\n",
                std::process::id()
            )
        );
        assert!(format(Level::Error, "traceback\n").ends_with("[ERROR] traceback\n"));
    }

    #[test]
    fn an_access_line_reaches_the_file_as_it_was_formatted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let subscriber = tracing_subscriber::registry().with(Lines);
        tracing::subscriber::with_default(subscriber, || {
            let log =
                AccessLog::open(path.to_str().unwrap(), r#"%(h)s "%(r)s" %(s)s %(b)s"#).unwrap();
            let headers = http::HeaderMap::new();
            log.write(&Record {
                remote: "10.0.0.1",
                method: "GET",
                path: "/a b",
                query: "x=1",
                protocol: "HTTP/1.1",
                status: 404,
                bytes: 9,
                duration: std::time::Duration::from_micros(10),
                request_headers: &headers,
                response_headers: &[],
            });
        });
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "10.0.0.1 \"GET /a b?x=1 HTTP/1.1\" 404 9\n"
        );
    }
}
