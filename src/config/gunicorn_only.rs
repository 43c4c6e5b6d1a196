//! gunicorn settings ferricorn does not have. A config file written for
//! gunicorn that sets one still loads: each is skipped with one notice
//! saying why.

/// Skipped, and why.
pub const SKIPPED: &[(&str, &str)] = &[
    (
        "worker_tmp_dir",
        "workers report to the master over a pipe, not a heartbeat file",
    ),
    ("daemon", "run ferricorn in the foreground, under systemd"),
    ("sendfile", "the I/O thread writes every response"),
    ("reuse_port", "workers share the master's listening sockets"),
    ("reload_engine", "--reload always uses inotify"),
    ("spew", "no tracing of every executed line"),
    ("tmp_upload_dir", "gunicorn does not use it either"),
    (
        "enable_stdio_inheritance",
        "the app's stdout and stderr go to the error log",
    ),
    (
        "disable_redirect_access_to_syslog",
        "there is no syslog output",
    ),
    (
        "syslog",
        "under systemd, logs go to the journal (--journald)",
    ),
    (
        "syslog_addr",
        "under systemd, logs go to the journal (--journald)",
    ),
    (
        "syslog_prefix",
        "under systemd, logs go to the journal (--journald)",
    ),
    (
        "syslog_facility",
        "under systemd, logs go to the journal (--journald)",
    ),
    (
        "logger_class",
        "the log is ferricorn's own, in gunicorn's format",
    ),
    ("dogstatsd_tags", "statsd lines carry no tags"),
    (
        "enable_backlog_metric",
        "/metrics always shows ferricorn_listen_queue",
    ),
    ("default_proc_name", "process titles name the app"),
    (
        "secure_scheme_headers",
        "the scheme comes from X-Forwarded-Proto and Forwarded of trusted peers",
    ),
    ("paste", "no PasteDeploy: give APP_MODULE"),
    ("raw_paste_global_conf", "no PasteDeploy"),
    ("protocol", "only HTTP is served"),
    ("uwsgi_allow_ips", "only HTTP is served"),
    ("http_parser", "ferricorn has one parser"),
    (
        "permit_unconventional_http_version",
        "only HTTP/1.0 and 1.1 are served",
    ),
    (
        "asgi_disconnect_grace_period",
        "asgi apps see a disconnect at once",
    ),
    (
        "control_socket_mode",
        "the control socket is always owner-only (0600)",
    ),
    (
        "control_socket_disable",
        "the control socket is off unless --control-socket or RuntimeDirectory= sets it",
    ),
    (
        "ssl_version",
        "gunicorn ignores it too (deprecated): TLS 1.2 and 1.3 are served",
    ),
    (
        "suppress_ragged_eofs",
        "a TLS connection cut without close_notify ends as a TCP one does",
    ),
    (
        "do_handshake_on_connect",
        "the handshake always completes on the I/O thread before a request is read",
    ),
    ("dirty_apps", "no dirty workers"),
    ("dirty_workers", "no dirty workers"),
    ("dirty_timeout", "no dirty workers"),
    ("dirty_threads", "no dirty workers"),
    ("dirty_graceful_timeout", "no dirty workers"),
];

/// Why `name` is skipped, if it is one of gunicorn's settings we skip.
pub fn skipped(name: &str) -> Option<&'static str> {
    SKIPPED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, why)| *why)
}

/// gunicorn's command-line options for the settings above that deployments
/// commonly pass (a container's `--worker-tmp-dir /dev/shm`): accepted,
/// hidden from `--help`, and skipped with the same notice.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Flags {
    #[arg(long = "worker-tmp-dir", value_name = "DIR", hide = true)]
    worker_tmp_dir: Option<String>,
    #[arg(long = "no-sendfile", hide = true)]
    no_sendfile: bool,
    #[arg(long = "reuse-port", hide = true)]
    reuse_port: bool,
    #[arg(long = "enable-stdio-inheritance", hide = true)]
    enable_stdio_inheritance: bool,
    #[arg(long = "log-syslog", hide = true)]
    log_syslog: bool,
    #[arg(long = "reload-engine", value_name = "ENGINE", hide = true)]
    reload_engine: Option<String>,
    #[arg(long = "dogstatsd-tags", value_name = "TAGS", hide = true)]
    dogstatsd_tags: Option<String>,
    #[arg(long = "ssl-version", value_name = "VERSION", hide = true)]
    ssl_version: Option<String>,
    #[arg(long = "suppress-ragged-eofs", hide = true)]
    suppress_ragged_eofs: bool,
    #[arg(long = "do-handshake-on-connect", hide = true)]
    do_handshake_on_connect: bool,
}

impl Flags {
    /// The options given, each with the setting it stands for.
    pub fn given(&self) -> Vec<(&'static str, &'static str)> {
        [
            (
                self.worker_tmp_dir.is_some(),
                "--worker-tmp-dir",
                "worker_tmp_dir",
            ),
            (self.no_sendfile, "--no-sendfile", "sendfile"),
            (self.reuse_port, "--reuse-port", "reuse_port"),
            (
                self.enable_stdio_inheritance,
                "--enable-stdio-inheritance",
                "enable_stdio_inheritance",
            ),
            (self.log_syslog, "--log-syslog", "syslog"),
            (
                self.reload_engine.is_some(),
                "--reload-engine",
                "reload_engine",
            ),
            (
                self.dogstatsd_tags.is_some(),
                "--dogstatsd-tags",
                "dogstatsd_tags",
            ),
            (self.ssl_version.is_some(), "--ssl-version", "ssl_version"),
            (
                self.suppress_ragged_eofs,
                "--suppress-ragged-eofs",
                "suppress_ragged_eofs",
            ),
            (
                self.do_handshake_on_connect,
                "--do-handshake-on-connect",
                "do_handshake_on_connect",
            ),
        ]
        .into_iter()
        .filter(|(given, _, _)| *given)
        .map(|(_, flag, setting)| (flag, setting))
        .collect()
    }
}
