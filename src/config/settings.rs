//! Every setting, declared once: its name (the TOML and gunicorn key), its
//! type, its default, its command-line flag and its help text (which is
//! also the man pages' text). The macro below makes the settings layer
//! clap and serde read (`Layer`: every field optional), the effective
//! settings (`Settings`), how a layer applies, `--print-config`'s lines and
//! the names a gunicorn `*.py` config may set.
//!
//! A setting's type is written in brackets (`[u32]`): clap's derive reads
//! the tokens to tell a list from a single value, which a type passed as
//! a macro fragment would hide from it. `=> T` gives the effective type
//! when it differs (an optional path stays optional). Defaults that depend
//! on the environment (`$PORT`, `$WEB_CONCURRENCY`, `$VIRTUAL_ENV`) are
//! applied over these by `Settings::defaults`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Source;
use super::values::{
    AsgiLifespan, AsgiLoop, H2Cleartext, HeaderMap, Journald, ProxyProtocol, Umask, WorkerClass,
    parse_positive, parse_positive_u64, parse_umask,
};

macro_rules! declare_settings {
    ($(
        $(#[$attr:meta])*
        $name:ident: [$($layer_ty:tt)+] $(=> $ty:ty)? = $default:expr;
    )*) => {
        /// One layer of settings: the command line, `$FERRICORN_CMD_ARGS`, or a config file.
        #[derive(clap::Args, Deserialize, Debug, Default, Clone)]
        #[serde(deny_unknown_fields, default)]
        pub struct Layer {
            $(
                $(#[$attr])*
                pub $name: Option<$($layer_ty)+>,
            )*
        }

        /// Every setting with its effective value.
        #[derive(serde::Serialize, Deserialize, Clone, Debug)]
        pub struct Settings {
            $(pub $name: declare_settings!(@ty [$($layer_ty)+] $($ty)?),)*
        }

        /// Every setting's name, in declaration order.
        pub const SETTING_NAMES: &[&str] = &[$(stringify!($name)),*];

        impl Settings {
            /// The defaults as declared, before the environment's.
            pub fn declared() -> Settings {
                Settings {
                    $($name: $default,)*
                }
            }

            /// Take every value `layer` sets, noting where it came from.
            pub fn apply(
                &mut self,
                layer: &Layer,
                sources: &mut BTreeMap<&'static str, Source>,
                source: &Source,
            ) {
                $(
                    if let Some(v) = &layer.$name {
                        self.$name = v.clone().into();
                        sources.insert(stringify!($name), source.clone());
                    }
                )*
            }

            /// `--print-config`: every setting, its value, and where it came from.
            pub fn render(&self, sources: &BTreeMap<&'static str, Source>) -> String {
                let mut out = String::new();
                $(
                    let value = serde_json::to_string(&self.$name).unwrap_or_default();
                    let source = sources.get(stringify!($name)).cloned().unwrap_or(Source::Default);
                    let line = if value == "null" {
                        format!("# {} is unset", stringify!($name))
                    } else {
                        format!("{} = {}", stringify!($name), value)
                    };
                    out.push_str(&format!("{:<40} # {}\n", line, source));
                )*
                out
            }
        }
    };
    (@ty [$($layer_ty:tt)+]) => { $($layer_ty)+ };
    (@ty [$($layer_ty:tt)+] $ty:ty) => { $ty };
}

declare_settings! {
    /// The WSGI application: `module:callable`, `module:factory()` or `module` (uses `application`).
    #[arg(value_name = "APP_MODULE")]
    #[serde(alias = "wsgi_app")]
    app: [String] = String::new();

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
    bind: [Vec<String>] = vec!["127.0.0.1:8000".into()];
    /// Serve Prometheus metrics here, from the master: `GET /metrics` (requests by status class, duration and wait histograms, in flight, workers by state, restarts by reason, boot time, the listen queue). HOST:PORT or unix:PATH. [default: none]
    #[arg(long = "metrics-bind", value_name = "ADDRESS", help_heading = "Binding")]
    metrics_bind: [String] => Option<String> = None;
    /// Listen for `ferricorn ctl` here (a unix socket only our user may use). [default: none, or $RUNTIME_DIRECTORY/ferricorn.ctl when systemd sets RuntimeDirectory=]
    #[arg(long = "control-socket", value_name = "PATH", help_heading = "Binding")]
    control_socket: [PathBuf] => Option<PathBuf> = None;
    /// Answer health checks here, from the master: `GET /livez` (200 while the master runs and a worker is alive) and `GET /readyz` (200 while a worker serves and the server is not stopping, else 503). HOST:PORT or unix:PATH. [default: none]
    #[arg(long = "health-bind", value_name = "ADDRESS", help_heading = "Binding")]
    health_bind: [String] => Option<String> = None;
    /// Maximum number of pending connections. [default: 2048]
    #[arg(long, value_name = "INT", help_heading = "Binding")]
    backlog: [u32] = 2048;

    // ---- Workers
    /// Number of worker processes. [default: 1, or $WEB_CONCURRENCY]
    #[arg(short = 'w', long, value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    workers: [u32] = 1;
    /// Worker class: sync (one request at a time), gthread (threads + keep-alive), gevent (greenlets; needs gevent in the app's environment) or asgi (an ASGI 3 app on asyncio). [default: sync]
    #[arg(
        short = 'k',
        long = "worker-class",
        value_name = "CLASS",
        help_heading = "Workers"
    )]
    worker_class: [WorkerClass] = WorkerClass::Sync;
    /// Python threads per worker for app calls; above 1, sync becomes gthread. [default: 1]
    #[arg(long, value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    threads: [u32] = 1;
    /// Maximum simultaneous connections per gthread, gevent or asgi worker. [default: 1000]
    #[arg(long = "worker-connections", value_name = "INT", value_parser = parse_positive, help_heading = "Workers")]
    worker_connections: [u32] = 1000;
    /// Restart a worker after this many requests; 0 disables. [default: 0]
    #[arg(long = "max-requests", value_name = "INT", help_heading = "Workers")]
    max_requests: [u64] = 0;
    /// Add a random 0..=N to max-requests per worker, so workers do not restart together. [default: 0]
    #[arg(
        long = "max-requests-jitter",
        value_name = "INT",
        help_heading = "Workers"
    )]
    max_requests_jitter: [u64] = 0;
    /// Replace a worker whose memory (resident, plus swap and page tables: what the OOM killer counts) stays above this many MB for three checks in a row (one a second); a new worker boots first, the old one finishes its requests. 0 disables. [default: 0]
    #[arg(
        long = "max-worker-memory",
        value_name = "MB",
        help_heading = "Workers"
    )]
    max_worker_memory: [u64] = 0;
    /// Replace a worker after it has run this many seconds, one worker at a time; a new worker boots first. 0 disables. [default: 0]
    #[arg(
        long = "max-worker-lifetime",
        value_name = "SECONDS",
        help_heading = "Workers"
    )]
    max_worker_lifetime: [u64] = 0;
    /// Add a random 0..=N seconds to each worker's lifetime, so workers are not replaced together. [default: 0]
    #[arg(
        long = "max-worker-lifetime-jitter",
        value_name = "SECONDS",
        help_heading = "Workers"
    )]
    max_worker_lifetime_jitter: [u64] = 0;
    /// Kill and replace a worker silent this many seconds (sync: a request this long; gevent, asgi: an event loop blocked this long); 0 disables. [default: 30]
    #[arg(short = 't', long, value_name = "SECONDS", help_heading = "Workers")]
    timeout: [u64] = 30;
    /// Answer 504 to a request still running after this many seconds, log where it is stuck, and stop it (asgi: cancel its task; gevent: kill its greenlet; sync, gthread: replace the worker once its other requests finish); 0 disables. [default: 0]
    #[arg(
        long = "request-timeout",
        value_name = "SECONDS",
        help_heading = "Workers"
    )]
    request_timeout: [u64] = 0;
    /// Seconds workers get to finish in-flight requests on stop or reload. [default: 30]
    #[arg(
        long = "graceful-timeout",
        value_name = "SECONDS",
        help_heading = "Workers"
    )]
    graceful_timeout: [u64] = 30;
    /// Seconds an idle keep-alive connection is kept open (gthread, gevent, asgi). [default: 2]
    #[arg(long = "keep-alive", value_name = "SECONDS", help_heading = "Workers")]
    keepalive: [u64] = 2;
    /// Load the app once, before forking workers (faster boot, shared memory); a preloader process holds it and forks the workers, so the master never runs Python. [default: off]
    #[arg(
        long = "preload",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Workers"
    )]
    preload_app: [bool] = false;
    /// Development: reload when a source file of the app changes (inotify): new workers import the code anew, then the old ones finish their requests, as on HUP. [default: off]
    #[arg(
        long = "reload",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Workers"
    )]
    reload: [bool] = false;
    /// With --reload, also watch this file (templates, settings). Repeatable. [default: none]
    #[arg(
        long = "reload-extra-file",
        value_name = "FILE",
        help_heading = "Workers"
    )]
    #[serde(deserialize_with = "one_or_many")]
    reload_extra_files: [Vec<String>] = vec![];
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In each worker after it is forked, before the app is imported: post_fork(server, worker). [default: none]
    #[arg(long = "post-fork", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    post_fork: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In each worker once the app is imported: post_worker_init(worker). [default: none]
    #[arg(long = "post-worker-init", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    post_worker_init: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). Before each request reaches the app: pre_request(worker, req). [default: none]
    #[arg(long = "pre-request", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    pre_request: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). After each request's response: post_request(worker, req, environ, resp). [default: none]
    #[arg(long = "post-request", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    post_request: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker told to stop at once (INT, QUIT): worker_int(worker). [default: none]
    #[arg(long = "worker-int", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    worker_int: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker stopped for --timeout (ABRT): worker_abort(worker). [default: none]
    #[arg(long = "worker-abort", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    worker_abort: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In a worker as it exits: worker_exit(server, worker). [default: none]
    #[arg(long = "worker-exit", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    worker_exit: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host, before the listeners are bound: on_starting(server). [default: none]
    #[arg(long = "on-starting", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    on_starting: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host, once the listeners are bound, before the first worker is forked: when_ready(server). [default: none]
    #[arg(long = "when-ready", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    when_ready: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host on HUP, once the new configuration is read: on_reload(server). [default: none]
    #[arg(long = "on-reload", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    on_reload: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host before each worker is forked; the master waits for it: pre_fork(server, worker). [default: none]
    #[arg(long = "pre-fork", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    pre_fork: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host before an upgrade (USR2) executes the new binary: pre_exec(server). [default: none]
    #[arg(long = "pre-exec", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    pre_exec: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host after a worker has exited and was reaped: child_exit(server, worker). [default: none]
    #[arg(long = "child-exit", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    child_exit: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host when the number of workers is set (start, HUP, TTIN, TTOU): nworkers_changed(server, new_value, old_value). [default: none]
    #[arg(long = "nworkers-changed", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    nworkers_changed: [String] => Option<String> = None;
    /// Server hook, as module:function (a gunicorn *.py config defines the function instead). In the hook host as the master exits: on_exit(server). [default: none]
    #[arg(long = "on-exit", value_name = "MODULE:FUNCTION", hide = true, help_heading = "Server hooks")]
    on_exit: [String] => Option<String> = None;

    // ---- Security limits
    /// Maximum size of the HTTP request line in bytes; 0 means 8190. [default: 4094]
    #[arg(
        long = "limit-request-line",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    limit_request_line: [u32] = 4094;
    /// Maximum number of request header fields. [default: 100]
    #[arg(
        long = "limit-request-fields",
        value_name = "INT",
        help_heading = "Request limits"
    )]
    limit_request_fields: [u32] = 100;
    /// Maximum size of one request header field in bytes; 0 means 8190. [default: 8190]
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    limit_request_field_size: [u32] = 8190;
    /// Seconds a client gets to send a request head, from its first byte to the blank line ending it, before it is cut off (the wait between requests is --keep-alive's). [default: 10]
    #[arg(
        long = "header-timeout",
        value_name = "SECONDS",
        help_heading = "Request limits"
    )]
    header_timeout: [u64] = 10;
    /// The slowest a client may send a request body, in bytes per second averaged after a 5 s grace; below it the client gets 408 and the app's read fails, freeing its thread (0: no floor). [default: 240]
    #[arg(
        long = "min-request-body-rate",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    // Kestrel's floor: far below any link a person uses.
    min_request_body_rate: [u32] = 240;
    /// The slowest a client may read its response, in bytes per second averaged after a 5 s grace; below it the connection is closed, freeing the app thread that writes to it (0: no floor). [default: 240]
    #[arg(
        long = "min-response-rate",
        value_name = "BYTES",
        help_heading = "Request limits"
    )]
    min_response_rate: [u32] = 240;
    /// Accept header fields continued on a following line (obs-fold, RFC 9112 §5.2), joining them with a space. [default: off]
    #[arg(
        long = "permit-obsolete-folding",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    permit_obsolete_folding: [bool] = false;
    /// Accept methods in lowercase or longer than 20 characters (any token). [default: off]
    #[arg(
        long = "permit-unconventional-http-method",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    permit_unconventional_http_method: [bool] = false;
    /// Uppercase the request method before the app sees it. [default: off]
    #[arg(
        long = "casefold-http-method",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    casefold_http_method: [bool] = false;
    /// Accept white space between a header field name and its colon, and drop it. [default: off]
    #[arg(
        long = "strip-header-spaces",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Request limits"
    )]
    strip_header_spaces: [bool] = false;
    /// Header names with an underscore: drop them from the environ, refuse the request, or map them (dangerous). [default: drop]
    #[arg(
        long = "header-map",
        value_name = "HOW",
        help_heading = "Request limits"
    )]
    header_map: [HeaderMap] = HeaderMap::Drop;
    /// Peers trusted to set X-Forwarded-Proto and friends, comma separated; * trusts all. [default: 127.0.0.1,::1]
    #[arg(
        long = "forwarded-allow-ips",
        value_name = "IPS",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "comma_list")]
    forwarded_allow_ips: [Vec<String>] = vec!["127.0.0.1".into(), "::1".into()];
    /// Read a PROXY protocol header (HAProxy, AWS NLB) at the start of each connection: its client becomes REMOTE_ADDR. off, v1, v2 or auto (either); the flag alone means auto. A connection without one is served as plain HTTP. [default: off]
    #[arg(
        long = "proxy-protocol",
        value_name = "VERSION",
        num_args = 0..=1,
        default_missing_value = "auto",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "proxy_protocol")]
    proxy_protocol: [ProxyProtocol] = ProxyProtocol::Off;
    /// Peers allowed to send a PROXY header, comma separated: addresses, networks (10.0.0.0/8), or * for any; a header from another peer is refused (403). [default: 127.0.0.1,::1]
    #[arg(
        long = "proxy-allow-from",
        value_name = "IPS",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "comma_list")]
    proxy_allow_ips: [Vec<String>] = vec!["127.0.0.1".into(), "::1".into()];
    /// Header names with an underscore that a trusted proxy (--forwarded-allow-ips) may set for the environ, comma separated: SCRIPT_NAME sets the environ's SCRIPT_NAME (and is stripped from PATH_INFO), the others become HTTP_* keys. [default: SCRIPT_NAME,PATH_INFO]
    #[arg(
        long = "forwarder-headers",
        value_name = "NAMES",
        help_heading = "Request limits"
    )]
    #[serde(deserialize_with = "comma_list")]
    forwarder_headers: [Vec<String>] = vec!["SCRIPT_NAME".into(), "PATH_INFO".into()];

    // ---- TLS and HTTP/2
    /// Serve HTTPS with this certificate chain (PEM, the server's own certificate first). Read by the master at start and on every reload (HUP, USR2), so it may be readable by root only. [default: none]
    #[arg(long, value_name = "FILE", help_heading = "TLS and HTTP/2")]
    certfile: [PathBuf] => Option<PathBuf> = None;
    /// The certificate's private key (PEM: PKCS#8, RSA or EC, unencrypted). [default: the key in --certfile]
    #[arg(long, value_name = "FILE", help_heading = "TLS and HTTP/2")]
    keyfile: [PathBuf] => Option<PathBuf> = None;
    /// CA certificates (PEM) that client certificates are verified against (--cert-reqs 1 or 2). [default: none]
    #[arg(long = "ca-certs", value_name = "FILE", help_heading = "TLS and HTTP/2")]
    ca_certs: [PathBuf] => Option<PathBuf> = None;
    /// Client certificates: 0 not asked for, 1 asked for and verified when sent, 2 required (Python's ssl.CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED). The verified chain reaches the app as environ SSL_CLIENT_CERT or the ASGI tls extension. [default: 0]
    #[arg(long = "cert-reqs", value_name = "INT", help_heading = "TLS and HTTP/2")]
    cert_reqs: [u32] = 0;
    /// TLS cipher suites: names separated by `:`, OpenSSL's (ECDHE-RSA-AES128-GCM-SHA256) or IANA's. They restrict TLS 1.2, and TLS 1.3 as well when the list names a TLS 1.3 suite. [default: every suite rustls serves: AES-GCM and ChaCha20-Poly1305 with ECDHE; TLS 1.2 and 1.3]
    #[arg(long, value_name = "LIST", help_heading = "TLS and HTTP/2")]
    ciphers: [String] => Option<String> = None;
    /// HTTP versions served, comma separated, preferred first: h1, h2. Over TLS they are offered by ALPN (a client that does not offer h2 is served HTTP/1.1); in cleartext, h2 needs --http2-cleartext. [default: h1]
    #[arg(long = "http-protocols", value_name = "LIST", help_heading = "TLS and HTTP/2")]
    http_protocols: [String] = "h1".into();
    /// Cleartext HTTP/2 (h2c): off, or prior-knowledge (a connection from a --forwarded-allow-ips peer, or over a unix socket, that opens with the HTTP/2 preface is served HTTP/2: a proxy speaking h2 upstream). Needs h2 in --http-protocols; over TLS, ALPN decides instead. [default: off]
    #[arg(long = "http2-cleartext", value_name = "HOW", help_heading = "TLS and HTTP/2")]
    #[serde(deserialize_with = "http2_cleartext")]
    http2_cleartext: [H2Cleartext] = H2Cleartext::Off;
    /// Requests one HTTP/2 connection may have in progress at once. [default: 100]
    #[arg(long = "http2-max-concurrent-streams", value_name = "INT", value_parser = parse_positive, help_heading = "TLS and HTTP/2")]
    http2_max_concurrent_streams: [u32] = 100;
    /// Bytes of a request body an HTTP/2 client may send on a stream before the app reads them (the flow-control window; at most 2147483647). [default: 65535]
    #[arg(long = "http2-initial-window-size", value_name = "INT", help_heading = "TLS and HTTP/2")]
    http2_initial_window_size: [u32] = 65535;
    /// Largest HTTP/2 frame payload accepted, bytes (16384 to 16777215). [default: 16384]
    #[arg(long = "http2-max-frame-size", value_name = "INT", help_heading = "TLS and HTTP/2")]
    http2_max_frame_size: [u32] = 16384;
    /// Largest HTTP/2 header list accepted, bytes after HPACK decoding; a larger one is refused (431). [default: 65536]
    #[arg(long = "http2-max-header-list-size", value_name = "INT", value_parser = parse_positive, help_heading = "TLS and HTTP/2")]
    http2_max_header_list_size: [u32] = 65536;

    // ---- Application
    /// Change to this directory before loading the app. [default: the current directory]
    #[arg(long, value_name = "DIR", help_heading = "Application")]
    chdir: [PathBuf] = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    /// Set an environment variable for the app: KEY=VALUE. Repeatable. [default: none]
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        help_heading = "Application"
    )]
    #[serde(deserialize_with = "one_or_many")]
    raw_env: [Vec<String>] = Vec::new();
    /// Extra directories on sys.path, comma separated. [default: none]
    #[arg(long, value_name = "DIRS", help_heading = "Application")]
    pythonpath: [String] => Option<String> = None;
    /// The app's virtualenv (made with the same Python version). [default: $VIRTUAL_ENV, else the virtualenv whose bin/ holds ferricorn]
    #[arg(long, value_name = "DIR", help_heading = "Application")]
    virtualenv: [PathBuf] => Option<PathBuf> = None;

    // ---- Process
    /// Process name shown in ps: `ferricorn: master [NAME]`. [default: the app]
    #[arg(
        short = 'n',
        long = "name",
        value_name = "NAME",
        help_heading = "Process"
    )]
    proc_name: [String] => Option<String> = None;
    /// Write the master's PID to this file (removed on exit). [default: none]
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "FILE",
        help_heading = "Process"
    )]
    pidfile: [PathBuf] => Option<PathBuf> = None;
    /// Run workers as this user (name or uid). [default: the current user]
    #[arg(short = 'u', long, value_name = "USER", help_heading = "Process")]
    user: [String] => Option<String> = None;
    /// Run workers as this group (name or gid). [default: the user's group]
    #[arg(short = 'g', long, value_name = "GROUP", help_heading = "Process")]
    group: [String] => Option<String> = None;
    /// File mode creation mask, e.g. 0o022. [default: 0]
    #[arg(short = 'm', long, value_name = "INT", value_parser = parse_umask, help_heading = "Process")]
    umask: [Umask] = Umask(0);
    /// Also set the user's supplementary groups in workers. [default: off]
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Process"
    )]
    initgroups: [bool] = false;

    // ---- Logging
    /// Access log file; `-` is stdout. [default: none]
    #[arg(long = "access-logfile", value_name = "FILE", help_heading = "Logging")]
    accesslog: [String] => Option<String> = None;
    /// Access log format with gunicorn's atoms (h l u t r s m U q H b B f a T M D L p, {header}i, {header}o, {var}e).
    #[arg(
        long = "access-logformat",
        value_name = "FORMAT",
        help_heading = "Logging"
    )]
    access_log_format: [String] = crate::log::access::DEFAULT_FORMAT.to_string();
    /// Configure the app's Python logging from this file, in logging.config.fileConfig's format (gunicorn's logconfig). [default: none]
    #[arg(long = "log-config", value_name = "FILE", help_heading = "Logging")]
    logconfig: [PathBuf] => Option<PathBuf> = None;
    /// Configure the app's Python logging from this JSON file, in logging.config.dictConfig's format; above --log-config. [default: none]
    #[arg(long = "log-config-json", value_name = "FILE", help_heading = "Logging")]
    logconfig_json: [PathBuf] => Option<PathBuf> = None;
    /// Configure the app's Python logging from this dictConfig dictionary (a TOML table, a Python dict, or JSON text); above the two files. [default: none]
    #[arg(long = "log-config-dict", value_name = "JSON", help_heading = "Logging")]
    #[serde(deserialize_with = "json_text")]
    logconfig_dict: [String] => Option<String> = None;
    /// Send gunicorn's statsd metrics here over UDP (gunicorn.requests, gunicorn.request.duration, gunicorn.request.status.CODE, gunicorn.workers). HOST:PORT. [default: none]
    #[arg(long = "statsd-host", value_name = "HOST:PORT", help_heading = "Logging")]
    statsd_host: [String] => Option<String> = None;
    /// Put this before the statsd metrics' names (a dot is added). [default: ""]
    #[arg(long = "statsd-prefix", value_name = "PREFIX", help_heading = "Logging")]
    statsd_prefix: [String] = String::new();
    /// Error log file; `-` is stderr. [default: -]
    #[arg(
        long = "error-logfile",
        alias = "log-file",
        value_name = "FILE",
        help_heading = "Logging"
    )]
    errorlog: [String] = "-".into();
    /// Send the app's stdout and stderr (print(), warnings, C extensions) to the --error-logfile file, as gunicorn does; under journald they always go to the journal. [default: off]
    #[arg(
        long = "capture-output",
        num_args = 0,
        default_missing_value = "true",
        help_heading = "Logging"
    )]
    capture_output: [bool] = false;
    /// asgi: the event loop: auto (uvloop if installed), asyncio, uvloop. [default: auto]
    #[arg(long = "asgi-loop", value_name = "LOOP", help_heading = "ASGI")]
    asgi_loop: [AsgiLoop] = AsgiLoop::Auto;
    /// asgi: the lifespan protocol: auto (when the app supports it), on, off. [default: auto]
    #[arg(long = "asgi-lifespan", value_name = "WHEN", help_heading = "ASGI")]
    asgi_lifespan: [AsgiLifespan] = AsgiLifespan::Auto;
    /// asgi: the scope's root_path (the prefix the app is mounted under). [default: ""]
    #[arg(long = "root-path", value_name = "PATH", help_heading = "ASGI")]
    root_path: [String] = String::new();
    /// asgi: largest WebSocket message accepted, in bytes. [default: 16777216]
    #[arg(long = "websocket-max-message-size", value_name = "BYTES", value_parser = parse_positive_u64, help_heading = "ASGI")]
    websocket_max_message_size: [u64] = 16 * 1024 * 1024;
    /// Send logs to journald with structured fields: auto (when stderr is the journal), yes, no. [default: auto]
    #[arg(long = "journald", value_name = "WHEN", help_heading = "Logging")]
    journald: [Journald] = Journald::Auto;
    /// Error log level: debug, info, warning, error, critical. [default: info]
    #[arg(long = "log-level", value_name = "LEVEL", help_heading = "Logging")]
    loglevel: [String] = "info".into();

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

/// A dictConfig dictionary, kept as JSON text: a table or dict as it is,
/// a string as the JSON it holds.
fn json_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(Some(match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }))
}

/// gunicorn's config files may say `http2_cleartext = True` (prior knowledge).
fn http2_cleartext<'de, D: Deserializer<'de>>(d: D) -> Result<Option<H2Cleartext>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(true) => Ok(Some(H2Cleartext::PriorKnowledge)),
        serde_json::Value::Bool(false) | serde_json::Value::Null => Ok(Some(H2Cleartext::Off)),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Some(H2Cleartext::Off)),
            "prior-knowledge" => Ok(Some(H2Cleartext::PriorKnowledge)),
            "upgrade" | "both" => Err(serde::de::Error::custom(format!(
                "`{s}`: the HTTP/1.1 Upgrade to h2c is not served (hyper has no h2c upgrade); use prior-knowledge"
            ))),
            _ => Err(serde::de::Error::custom(format!(
                "`{s}` is not off or prior-knowledge"
            ))),
        },
        other => Err(serde::de::Error::custom(format!(
            "{other} is not off or prior-knowledge"
        ))),
    }
}

/// gunicorn before 23 took `proxy_protocol = True`: that is `auto` now.
fn proxy_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProxyProtocol>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Flag(bool),
        Named(ProxyProtocol),
    }
    Ok(Some(match Either::deserialize(d)? {
        Either::Flag(true) => ProxyProtocol::Auto,
        Either::Flag(false) => ProxyProtocol::Off,
        Either::Named(p) => p,
    }))
}

pub fn split_commas(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A declared default as the help text writes it.
    fn as_help_writes_it(json: &serde_json::Value) -> String {
        use serde_json::Value;
        match json {
            Value::Null => "none".into(),
            Value::Bool(true) => "on".into(),
            Value::Bool(false) => "off".into(),
            Value::String(s) if s.is_empty() => "\"\"".into(),
            Value::String(s) => s.clone(),
            Value::Array(a) if a.is_empty() => "none".into(),
            Value::Array(a) => a
                .iter()
                .map(as_help_writes_it)
                .collect::<Vec<_>>()
                .join(","),
            v => v.to_string(),
        }
    }

    /// The `[default: …]` of every flag's help is the declared default
    /// (the help is written by hand; the default is what runs).
    #[test]
    fn the_help_shows_the_declared_defaults() {
        // Defaults the help describes rather than spells (umask: gunicorn's
        // "0", printed by --print-config as "0o000").
        const DESCRIBED: &[&str] = &[
            "chdir",
            "proc_name",
            "user",
            "group",
            "virtualenv",
            "umask",
            "keyfile",
            "ciphers",
        ];
        let declared = serde_json::to_value(Settings::declared()).unwrap();
        let cmd = super::super::Cli::command();
        let mut checked = 0;
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(value) = declared.get(id) else {
                continue;
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let Some((_, shown)) = help.rsplit_once("[default: ") else {
                assert!(
                    id == "access_log_format" || id == "app",
                    "{id}: the help names no default"
                );
                continue;
            };
            if DESCRIBED.contains(&id) {
                continue;
            }
            let shown = shown.trim_end_matches(']');
            // "1, or $WEB_CONCURRENCY": the environment's part is not declared.
            let shown = shown.split(", or ").next().unwrap();
            assert_eq!(
                shown,
                as_help_writes_it(value),
                "{id}: help and default differ"
            );
            checked += 1;
        }
        assert!(checked > 30, "only {checked} defaults checked");
    }
}
