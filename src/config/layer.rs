//! One layer of settings: the command line, `$FERRICORN_CMD_ARGS`, or a config file.
//!
//! A single struct serves clap (flags keep gunicorn's names and short forms)
//! and serde (keys keep gunicorn's setting names), so a setting is declared once.

use clap::Args;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;

use super::values::{
    AsgiLifespan, AsgiLoop, HeaderMap, Journald, Umask, WorkerClass, parse_positive,
    parse_positive_u64, parse_umask,
};

#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Layer {
    /// The WSGI application: `module:callable`, `module:factory()` or `module` (uses `application`).
    #[arg(value_name = "APP_MODULE")]
    #[serde(alias = "wsgi_app")]
    pub app: Option<String>,

    // ---- Binding
    /// Address to listen on: HOST, HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeatable.
    /// [default: 127.0.0.1:8000, or 0.0.0.0:$PORT]
    #[arg(
        short = 'b',
        long = "bind",
        value_name = "ADDRESS",
        help_heading = "Binding"
    )]
    #[serde(deserialize_with = "one_or_many")]
    pub bind: Option<Vec<String>>,
    /// Maximum number of pending connections. [default: 2048]
    #[arg(long, value_name = "INT", help_heading = "Binding")]
    pub backlog: Option<u32>,

    // ---- Workers
    /// Number of worker processes. [default: 1, or $WEB_CONCURRENCY]
    #[arg(short = 'w', long, value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    pub workers: Option<u32>,
    /// Worker class: sync (one request at a time), gthread (threads + keep-alive), gevent (greenlets; needs gevent in the app's environment) or asgi (an ASGI 3 app on asyncio). [default: sync]
    #[arg(
        short = 'k',
        long = "worker-class",
        value_name = "CLASS",
        help_heading = "Workers"
    )]
    pub worker_class: Option<WorkerClass>,
    /// Python threads per worker for app calls; above 1, sync becomes gthread. [default: 1]
    #[arg(long, value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    pub threads: Option<u32>,
    /// Maximum simultaneous connections per gthread, gevent or asgi worker. [default: 1000]
    #[arg(long = "worker-connections", value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    pub worker_connections: Option<u32>,
    /// Restart a worker after this many requests; 0 disables. [default: 0]
    #[arg(long = "max-requests", value_name = "INT", help_heading = "Workers")]
    pub max_requests: Option<u64>,
    /// Add a random 0..=N to max-requests per worker, so workers do not restart together. [default: 0]
    #[arg(
        long = "max-requests-jitter",
        value_name = "INT",
        help_heading = "Workers"
    )]
    pub max_requests_jitter: Option<u64>,
    /// Kill and replace a worker silent this many seconds (sync: a request this long; gevent, asgi: an event loop blocked this long); 0 disables. [default: 30]
    #[arg(short = 't', long, value_name = "SECONDS", help_heading = "Workers")]
    pub timeout: Option<u64>,
    /// Seconds workers get to finish in-flight requests on stop or reload. [default: 30]
    #[arg(
        long = "graceful-timeout",
        value_name = "SECONDS",
        help_heading = "Workers"
    )]
    pub graceful_timeout: Option<u64>,
    /// Seconds an idle keep-alive connection is kept open (gthread, gevent, asgi). [default: 2]
    #[arg(long = "keep-alive", value_name = "SECONDS", help_heading = "Workers")]
    pub keepalive: Option<u64>,
    /// Load the app in the master before forking workers (faster boot, shared memory). [default: off]
    #[arg(
        long = "preload",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Workers"
    )]
    pub preload_app: Option<bool>,

    // ---- Security limits
    /// Maximum size of the HTTP request line in bytes; 0 means 8190. [default: 4094]
    #[arg(
        long = "limit-request-line",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    pub limit_request_line: Option<u32>,
    /// Maximum number of request header fields. [default: 100]
    #[arg(
        long = "limit-request-fields",
        value_name = "INT",
        help_heading = "Request limits"
    )]
    pub limit_request_fields: Option<u32>,
    /// Maximum size of one request header field in bytes; 0 means 8190. [default: 8190]
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    pub limit_request_field_size: Option<u32>,
    /// Seconds a client gets to send a request head, from its first byte to the blank line ending it, before it is cut off (the wait between requests is --keep-alive's). [default: 10]
    #[arg(
        long = "header-timeout",
        value_name = "SECONDS",
        help_heading = "Request limits"
    )]
    pub header_timeout: Option<u64>,
    /// The slowest a client may send a request body, in bytes per second averaged after a 5 s grace; below it the client gets 408 and the app's read fails, freeing its thread (0: no floor). [default: 240]
    #[arg(
        long = "min-request-body-rate",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    pub min_request_body_rate: Option<u32>,
    /// The slowest a client may read its response, in bytes per second averaged after a 5 s grace; below it the connection is closed, freeing the app thread that writes to it (0: no floor). [default: 240]
    #[arg(
        long = "min-response-rate",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    pub min_response_rate: Option<u32>,
    /// Accept header fields continued on a following line (obs-fold, RFC 9112 §5.2), joining them with a space. [default: off]
    #[arg(
        long = "permit-obsolete-folding",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    pub permit_obsolete_folding: Option<bool>,
    /// Accept methods in lowercase or longer than 20 characters (any token). [default: off]
    #[arg(
        long = "permit-unconventional-http-method",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    pub permit_unconventional_http_method: Option<bool>,
    /// Uppercase the request method before the app sees it. [default: off]
    #[arg(
        long = "casefold-http-method",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    pub casefold_http_method: Option<bool>,
    /// Accept white space between a header field name and its colon, and drop it. [default: off]
    #[arg(
        long = "strip-header-spaces",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    pub strip_header_spaces: Option<bool>,
    /// Header names with an underscore: drop them from the environ, refuse the request, or map them (dangerous). [default: drop]
    #[arg(
        long = "header-map",
        value_name = "HOW",
        help_heading = "Request limits"
    )]
    pub header_map: Option<HeaderMap>,
    /// Peers trusted to set X-Forwarded-Proto and friends, comma separated; * trusts all. [default: 127.0.0.1,::1]
    #[arg(
        long = "forwarded-allow-ips",
        value_name = "IPS",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "comma_list")]
    pub forwarded_allow_ips: Option<Vec<String>>,
    /// Header names with an underscore that a trusted proxy (--forwarded-allow-ips) may set for the environ, comma separated: SCRIPT_NAME sets the environ's SCRIPT_NAME (and is stripped from PATH_INFO), the others become HTTP_* keys. [default: SCRIPT_NAME,PATH_INFO]
    #[arg(
        long = "forwarder-headers",
        value_name = "NAMES",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "comma_list")]
    pub forwarder_headers: Option<Vec<String>>,

    // ---- Application
    /// Change to this directory before loading the app. [default: the current directory]
    #[arg(long, value_name = "DIR", help_heading = "Application")]
    pub chdir: Option<PathBuf>,
    /// Set an environment variable for the app: KEY=VALUE. Repeatable. [default: none]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        help_heading = "Application"
    )]
    #[serde(deserialize_with = "one_or_many")]
    pub raw_env: Option<Vec<String>>,
    /// Extra directories on sys.path, comma separated. [default: none]
    #[arg(long, value_name = "DIRS", help_heading = "Application")]
    pub pythonpath: Option<String>,
    /// The app's virtualenv (made with the same Python version). [default: $VIRTUAL_ENV]
    #[arg(long, value_name = "DIR", help_heading = "Application")]
    pub virtualenv: Option<PathBuf>,

    // ---- Process
    /// Process name shown in ps: `ferricorn: master [NAME]`. [default: the app]
    #[arg(
        short = 'n',
        long = "name",
        value_name = "NAME",
        help_heading = "Process"
    )]
    pub proc_name: Option<String>,
    /// Write the master's PID to this file (removed on exit). [default: none]
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "FILE",
        help_heading = "Process"
    )]
    pub pidfile: Option<PathBuf>,
    /// Run workers as this user (name or uid). [default: the current user]
    #[arg(short = 'u', long, value_name = "USER", help_heading = "Process")]
    pub user: Option<String>,
    /// Run workers as this group (name or gid). [default: the user's group]
    #[arg(short = 'g', long, value_name = "GROUP", help_heading = "Process")]
    pub group: Option<String>,
    /// File mode creation mask, e.g. 0o022. [default: 0]
    #[arg(short = 'm', long, value_name = "INT", value_parser = parse_umask, help_heading = "Process")]
    pub umask: Option<Umask>,
    /// Also set the user's supplementary groups in workers. [default: off]
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Process"
    )]
    pub initgroups: Option<bool>,

    // ---- Logging
    /// Access log file; `-` is stdout. [default: none]
    #[arg(long = "access-logfile", value_name = "FILE", help_heading = "Logging")]
    pub accesslog: Option<String>,
    /// Access log format with gunicorn's atoms (h l u t r s m U q H b B f a T M D L p, {header}i, {header}o, {var}e).
    #[arg(
        long = "access-logformat",
        value_name = "FORMAT",
        help_heading = "Logging"
    )]
    pub access_log_format: Option<String>,
    /// Error log file; `-` is stderr. [default: -]
    #[arg(
        long = "error-logfile",
        alias = "log-file",
        value_name = "FILE",
        help_heading = "Logging"
    )]
    pub errorlog: Option<String>,
    /// asgi: the event loop: auto (uvloop if installed), asyncio, uvloop. [default: auto]
    #[arg(long = "asgi-loop", value_name = "LOOP", help_heading = "ASGI")]
    pub asgi_loop: Option<AsgiLoop>,
    /// asgi: the lifespan protocol: auto (when the app supports it), on, off. [default: auto]
    #[arg(long = "asgi-lifespan", value_name = "WHEN", help_heading = "ASGI")]
    pub asgi_lifespan: Option<AsgiLifespan>,
    /// asgi: the scope's root_path (the prefix the app is mounted under). [default: ""]
    #[arg(long = "root-path", value_name = "PATH", help_heading = "ASGI")]
    pub root_path: Option<String>,
    /// asgi: largest WebSocket message accepted, in bytes. [default: 16777216]
    #[arg(long = "websocket-max-message-size", value_name = "BYTES", value_parser = parse_positive_u64, help_heading = "ASGI")]
    pub websocket_max_message_size: Option<u64>,
    /// Send logs to journald with structured fields: auto (when stderr is the journal), yes, no. [default: auto]
    #[arg(long = "journald", value_name = "WHEN", help_heading = "Logging")]
    pub journald: Option<Journald>,
    /// Error log level: debug, info, warning, error, critical. [default: info]
    #[arg(long = "log-level", value_name = "LEVEL", help_heading = "Logging")]
    pub loglevel: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => split_commas(&s),
        OneOrMany::Many(v) => v,
    }))
}

pub fn split_commas(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}
