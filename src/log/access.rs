//! The access log: gunicorn's `--access-logformat` atoms, compiled once per worker.

use http::HeaderMap;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Output, Sink};

/// gunicorn's default `access_log_format`.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Lit(String),
    RemoteAddr,
    Dash,
    User,
    Time,
    RequestLine,
    Status,
    Method,
    UrlPath,
    Query,
    Protocol,
    BytesOrDash,
    Bytes,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    ReqHeader(String),
    RespHeader(String),
    Env(String),
}

/// What one finished request contributes to its access log line.
pub struct Record<'a> {
    pub remote: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub request_headers: &'a HeaderMap,
    pub response_headers: &'a [(String, String)],
}

#[derive(Debug)]
pub struct Format {
    atoms: Vec<Atom>,
}

impl Format {
    /// Compile a format; the error names the atom that is not known.
    pub fn compile(spec: &str) -> Result<Format, String> {
        let mut atoms = Vec::new();
        let mut lit = String::new();
        let mut rest = spec;
        while let Some(pos) = rest.find('%') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('%') {
                lit.push('%');
                rest = stripped;
                continue;
            }
            let Some(inner) = after.strip_prefix('(') else {
                lit.push('%');
                rest = after;
                continue;
            };
            let close = inner
                .find(")s")
                .ok_or_else(|| format!("unterminated atom in {spec:?} (expected `%(name)s`)"))?;
            let name = &inner[..close];
            if !lit.is_empty() {
                atoms.push(Atom::Lit(std::mem::take(&mut lit)));
            }
            atoms.push(parse_atom(name)?);
            rest = &inner[close + 2..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            atoms.push(Atom::Lit(lit));
        }
        Ok(Format { atoms })
    }

    pub fn render(&self, r: &Record<'_>) -> String {
        let mut out = String::with_capacity(160);
        for atom in &self.atoms {
            match atom {
                Atom::Lit(s) => out.push_str(s),
                Atom::RemoteAddr => out.push_str(or_dash(r.remote)),
                Atom::Dash | Atom::User => out.push('-'),
                Atom::Time => out.push_str(&super::access_time()),
                Atom::RequestLine => {
                    out.push_str(r.method);
                    out.push(' ');
                    out.push_str(r.path);
                    if !r.query.is_empty() {
                        out.push('?');
                        out.push_str(r.query);
                    }
                    out.push(' ');
                    out.push_str(r.protocol);
                }
                Atom::Status => out.push_str(&r.status.to_string()),
                Atom::Method => out.push_str(r.method),
                Atom::UrlPath => out.push_str(r.path),
                Atom::Query => out.push_str(r.query),
                Atom::Protocol => out.push_str(r.protocol),
                Atom::BytesOrDash if r.bytes == 0 => out.push('-'),
                Atom::BytesOrDash | Atom::Bytes => out.push_str(&r.bytes.to_string()),
                Atom::Referer => out.push_str(header(r.request_headers, "referer")),
                Atom::UserAgent => out.push_str(header(r.request_headers, "user-agent")),
                Atom::Seconds => out.push_str(&r.duration.as_secs().to_string()),
                Atom::Millis => out.push_str(&r.duration.as_millis().to_string()),
                Atom::Micros => out.push_str(&r.duration.as_micros().to_string()),
                Atom::DecimalSeconds => out.push_str(&format!("{:.6}", r.duration.as_secs_f64())),
                Atom::Pid => out.push_str(&format!("<{}>", std::process::id())),
                Atom::ReqHeader(name) => out.push_str(header(r.request_headers, name)),
                Atom::RespHeader(name) => out.push_str(
                    r.response_headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map_or("-", |(_, v)| v.as_str()),
                ),
                Atom::Env(name) => match std::env::var(name) {
                    Ok(v) => out.push_str(&v),
                    Err(_) => out.push('-'),
                },
            }
        }
        out.push('\n');
        out
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

fn parse_atom(name: &str) -> Result<Atom, String> {
    if let Some(inner) = name.strip_prefix('{') {
        let (key, kind) = inner
            .rsplit_once('}')
            .ok_or_else(|| format!("bad atom %({name})s"))?;
        let key = key.to_ascii_lowercase();
        return match kind {
            "i" => Ok(Atom::ReqHeader(key)),
            "o" => Ok(Atom::RespHeader(key)),
            "e" => Ok(Atom::Env(inner[..key.len()].to_string())),
            _ => Err(format!(
                "unknown atom %({name})s: use {{header}}i, {{header}}o or {{variable}}e"
            )),
        };
    }
    Ok(match name {
        "h" => Atom::RemoteAddr,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "s" => Atom::Status,
        "m" => Atom::Method,
        "U" => Atom::UrlPath,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "b" => Atom::BytesOrDash,
        "B" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        other => {
            return Err(format!(
                "unknown atom %({other})s (known: h l u t r s m U q H b B f a T M D L p, {{header}}i, {{header}}o, {{var}}e)"
            ));
        }
    })
}

/// Where this worker's access lines go (set once, when the worker opens it).
enum Out {
    Stream(Output),
    /// `-` while logs go to journald: entries with the request's fields.
    Journal,
}

static OUT: OnceLock<Out> = OnceLock::new();

/// The access log's stream, when it is not the journal.
pub(super) fn stream() -> Option<&'static Output> {
    match OUT.get() {
        Some(Out::Stream(out)) => Some(out),
        _ => None,
    }
}

pub(super) fn to_journal() -> bool {
    matches!(OUT.get(), Some(Out::Journal))
}

/// The access log of one worker: a compiled format; its lines go out as
/// `tracing` events (`super::ACCESS_TARGET`).
pub struct AccessLog {
    format: Format,
}

impl AccessLog {
    pub fn open(target: &str, format: &str) -> Result<AccessLog, String> {
        let format = Format::compile(format)?;
        let out = match (target, super::to_journal()) {
            ("-", true) => Out::Journal,
            _ => {
                let sink = match target {
                    "-" => Sink::Stdout,
                    path => Sink::File(path.into()),
                };
                Out::Stream(
                    Output::open(sink)
                        .map_err(|e| format!("cannot open access log {target}: {e}"))?,
                )
            }
        };
        OUT.set(out)
            .map_err(|_| "the access log is open already".to_string())?;
        Ok(AccessLog { format })
    }

    pub fn write(&self, r: &Record<'_>) {
        let line = self.format.render(r);
        if to_journal() {
            tracing::info!(
                target: super::ACCESS_TARGET,
                FERRICORN_LOG = "access",
                WORKER_PID = std::process::id(),
                HTTP_METHOD = r.method,
                HTTP_PATH = r.path,
                HTTP_STATUS = r.status,
                RESPONSE_BYTES = r.bytes,
                DURATION_US = r.duration.as_micros() as u64,
                REMOTE_ADDR = r.remote,
                message = line.trim_end_matches('\n'),
            );
        } else {
            tracing::info!(target: super::ACCESS_TARGET, message = line.as_str());
        }
    }

    pub fn reopen(&self) {
        if let Some(out) = stream() {
            let _ = out.reopen();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(h: &'a HeaderMap, resp: &'a [(String, String)]) -> Record<'a> {
        Record {
            remote: "127.0.0.1",
            method: "GET",
            path: "/a",
            query: "x=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 0,
            duration: Duration::from_micros(1500),
            request_headers: h,
            response_headers: resp,
        }
    }

    #[test]
    fn renders_every_simple_atom() {
        let mut h = HeaderMap::new();
        h.insert("user-agent", "curl/8".parse().unwrap());
        h.insert("x-id", "42".parse().unwrap());
        let resp = vec![("Content-Type".to_string(), "text/plain".to_string())];
        let f = Format::compile(
            r#"%(h)s %(l)s "%(r)s" %(s)s %(b)s %(B)s %(m)s %(U)s %(q)s %(H)s %(a)s %(f)s %(D)s %(M)s %({x-id}i)s %({content-type}o)s 100%%"#,
        )
        .unwrap();
        assert_eq!(
            f.render(&record(&h, &resp)),
            "127.0.0.1 - \"GET /a?x=1 HTTP/1.1\" 200 - 0 GET /a x=1 HTTP/1.1 curl/8 - 1500 1 42 text/plain 100%\n"
        );
    }

    #[test]
    fn unknown_atoms_are_named() {
        let err = Format::compile("%(zz)s").unwrap_err();
        assert!(err.contains("%(zz)s"), "{err}");
    }
}
