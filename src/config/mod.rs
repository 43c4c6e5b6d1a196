//! Settings: defaults < config file < `$FERRICORN_CMD_ARGS` < command line.
//!
//! The result is validated as a whole before anything is bound; every refusal
//! is one line naming the setting, the value and what is allowed.

pub mod bind;
mod gunicorn_only;
mod pyfile;
mod settings;
mod values;

pub use bind::BindAddr;
use settings::split_commas;
pub use settings::{Layer, SETTING_NAMES, Settings};
pub use values::{
    AsgiLifespan, AsgiLoop, H2Cleartext, HeaderMap, Journald, Networks, ProxyProtocol, WorkerClass,
};

use clap::Parser;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::log::Level;

/// The command line: a settings layer plus actions that only make sense there.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferricorn",
    version = crate::VERSION,
    // As with gunicorn's argparse, a repeated single-valued option takes the last value.
    args_override_self = true,
    about = "A pre-fork HTTP server for Python WSGI and ASGI apps, built for systemd.",
    long_about = "A pre-fork HTTP server for Python WSGI and ASGI apps, built for systemd.\n\n\
        Options keep gunicorn's names and defaults. Settings are layered: defaults < \
        config file (-c) < $FERRICORN_CMD_ARGS < command line.",
    after_help = "Signals: TERM graceful stop, INT/QUIT fast stop, HUP reload, USR2 upgrade in place (same PID), TTIN/TTOU one worker more/less, USR1 reopen logs.\nA running server with --control-socket: ferricorn ctl --socket PATH status|stats --json|reload|upgrade|scale N|stop [--graceful].\nSee ferricorn(1) and ferricorn.toml(5)."
)]
pub struct Cli {
    #[command(flatten)]
    pub layer: Layer,

    /// Read settings from this file: TOML (gunicorn's setting names, plus `app`) or a gunicorn *.py config.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        help_heading = "Configuration"
    )]
    pub config: Option<PathBuf>,
    /// Check the configuration and that the app imports, then exit (0 when it does).
    #[arg(long = "check-config", help_heading = "Configuration")]
    pub check_config: bool,
    /// Print the effective settings and where each came from, then exit.
    #[arg(long = "print-config", help_heading = "Configuration")]
    pub print_config: bool,

    #[command(flatten)]
    pub gunicorn_only: gunicorn_only::Flags,
}

/// Where a setting's value came from, for `--print-config`.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Default,
    Env(&'static str),
    File(PathBuf),
    CmdArgsEnv,
    CommandLine,
    /// The virtualenv whose `bin/` holds this executable (`pip install`).
    Installed,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Env(var) => write!(f, "${var}"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::CmdArgsEnv => f.write_str("$FERRICORN_CMD_ARGS"),
            Source::CommandLine => f.write_str("command line"),
            Source::Installed => f.write_str("the virtualenv ferricorn is installed in"),
        }
    }
}

/// A refusal: one line, naming what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(setting: &str, value: impl fmt::Display, allowed: &str) -> ConfigError {
    ConfigError(format!(
        "setting `{setting}`: {value} is not allowed ({allowed})"
    ))
}

/// Settings after validation, with the values derived from them.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub sources: BTreeMap<&'static str, Source>,
    pub binds: Vec<BindAddr>,
    /// `--health-bind`: where the master answers health checks.
    pub health: Option<BindAddr>,
    /// `--metrics-bind`: where the master serves `/metrics`.
    pub metrics: Option<BindAddr>,
    /// `--statsd-host`, resolved.
    pub statsd: Option<std::net::SocketAddr>,
    /// `--proxy-allow-from`, parsed.
    pub proxy_allow: Networks,
    /// A gunicorn `*.py` config: workers run it again for its hooks.
    pub hooks_file: Option<PathBuf>,
    pub log_level: Level,
    pub worker_class: WorkerClass,
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    pub env: Vec<(String, String)>,
    pub forwarded_allow_all: bool,
    pub forwarded_allow: Vec<std::net::IpAddr>,
    /// The name in process titles: `--name`, else the app.
    pub proc_name: String,
    /// `--certfile` and friends, read: every connection is TLS.
    pub tls: Option<crate::tls::Tls>,
    /// `--http-protocols`, `--http2-cleartext`.
    pub protocols: Protocols,
}

/// Which HTTP versions a connection may speak. HTTP/1.1 is always served:
/// a TLS client that does not choose h2 by ALPN gets it (as gunicorn does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protocols {
    /// HTTP/2 is offered by ALPN over TLS.
    pub h2: bool,
    /// Cleartext connections that open with the HTTP/2 preface are HTTP/2.
    pub h2c: bool,
}

impl Config {
    /// The server hooks set as `module:function` references, by hook name.
    pub fn hook_refs(&self) -> Vec<(&'static str, &str)> {
        let s = &self.settings;
        [
            ("on_starting", &s.on_starting),
            ("on_reload", &s.on_reload),
            ("when_ready", &s.when_ready),
            ("pre_fork", &s.pre_fork),
            ("post_fork", &s.post_fork),
            ("post_worker_init", &s.post_worker_init),
            ("worker_int", &s.worker_int),
            ("worker_abort", &s.worker_abort),
            ("pre_exec", &s.pre_exec),
            ("pre_request", &s.pre_request),
            ("post_request", &s.post_request),
            ("child_exit", &s.child_exit),
            ("worker_exit", &s.worker_exit),
            ("nworkers_changed", &s.nworkers_changed),
            ("on_exit", &s.on_exit),
        ]
        .into_iter()
        .filter_map(|(name, r)| r.as_deref().map(|r| (name, r)))
        .collect()
    }

    /// gunicorn's logconfig settings, for the app's Python logging.
    pub fn logconfig(&self) -> crate::python::LogConfig<'_> {
        let s = &self.settings;
        crate::python::LogConfig {
            dict_json: s.logconfig_dict.as_deref(),
            json: s.logconfig_json.as_deref(),
            ini: s.logconfig.as_deref(),
        }
    }
}

impl Settings {
    /// The declared defaults, with those the environment gives
    /// (`$WEB_CONCURRENCY`, `$PORT`, `$VIRTUAL_ENV`).
    fn defaults() -> (Settings, BTreeMap<&'static str, Source>) {
        let mut s = Settings::declared();
        let mut sources = BTreeMap::new();
        if let Some(n) = std::env::var("WEB_CONCURRENCY")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&n| n >= 1)
        {
            sources.insert("workers", Source::Env("WEB_CONCURRENCY"));
            s.workers = n;
        }
        if let Ok(port) = std::env::var("PORT")
            && !port.is_empty()
        {
            sources.insert("bind", Source::Env("PORT"));
            s.bind = vec![format!("0.0.0.0:{port}")];
        }
        if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|v| !v.is_empty()) {
            // systemd may list several directories; the first is ours.
            let first = dir
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            sources.insert("control_socket", Source::Env("RUNTIME_DIRECTORY"));
            s.control_socket = Some(PathBuf::from(first).join("ferricorn.ctl"));
        }
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
            sources.insert("virtualenv", Source::Env("VIRTUAL_ENV"));
            s.virtualenv = Some(PathBuf::from(venv));
        } else if let Some(venv) = installed_in_virtualenv() {
            sources.insert("virtualenv", Source::Installed);
            s.virtualenv = Some(venv);
        }
        (s, sources)
    }
}

/// `pip install ferricorn` puts us in a virtualenv's `bin/`: that venv is
/// the app's, as it is for gunicorn installed there.
fn installed_in_virtualenv() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    let venv = bin.parent()?;
    (bin.file_name()? == "bin" && venv.join("pyvenv.cfg").is_file()).then(|| venv.to_path_buf())
}

/// Build the configuration from the command line, the environment and the config file.
pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let (mut s, mut sources) = Settings::defaults();

    let env_cli = match std::env::var("FERRICORN_CMD_ARGS") {
        Ok(raw) if !raw.trim().is_empty() => {
            let words = shell_words::split(&raw)
                .map_err(|e| ConfigError(format!("$FERRICORN_CMD_ARGS: {e}")))?;
            let parsed = Cli::try_parse_from(std::iter::once("ferricorn".to_string()).chain(words))
                .map_err(|e| {
                    ConfigError(format!(
                        "$FERRICORN_CMD_ARGS: {}",
                        first_line(&e.to_string())
                    ))
                })?;
            Some(parsed)
        }
        _ => None,
    };

    let config_file = cli
        .config
        .clone()
        .or_else(|| env_cli.as_ref().and_then(|c| c.config.clone()));
    if let Some(path) = &config_file {
        // A *.py config runs in the app's Python, as gunicorn's runs in
        // the venv it is installed in (its imports may need the venv).
        let venv = cli
            .layer
            .virtualenv
            .clone()
            .or_else(|| env_cli.as_ref().and_then(|c| c.layer.virtualenv.clone()))
            .or_else(|| s.virtualenv.clone())
            // One of another Python is refused below, naming the setting.
            .filter(|v| crate::python::check_virtualenv(v).is_ok());
        let layer = read_file(path, venv.as_deref())?;
        let src = Source::File(path.clone());
        s.apply(&layer, &mut sources, &src);
    }
    if let Some(env_cli) = &env_cli {
        s.apply(&env_cli.layer, &mut sources, &Source::CmdArgsEnv);
    }
    s.apply(&cli.layer, &mut sources, &Source::CommandLine);
    for (flag, setting) in env_cli
        .iter()
        .chain([cli])
        .flat_map(|c| c.gunicorn_only.given())
    {
        let why = gunicorn_only::skipped(setting).unwrap_or("");
        crate::warning!("gunicorn's option {flag} does not apply to ferricorn ({why}): skipped");
    }

    let mut cfg = validate(s, sources)?;
    cfg.hooks_file = config_file
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .map(|p| p.canonicalize().unwrap_or(p));
    Ok(cfg)
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// Read a config file into a layer; `.py` files are gunicorn configs.
fn read_file(path: &Path, virtualenv: Option<&Path>) -> Result<Layer, ConfigError> {
    let shown = path.display();
    if path.extension().is_some_and(|e| e == "py") {
        let map = pyfile::read(path, virtualenv)
            .map_err(|e| ConfigError(format!("config file {shown}: {e}")))?;
        return layer_from_map(map, &shown.to_string());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config file {shown}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!("config file {shown}: {}", first_line(e.message())))
    })?;
    let map: serde_json::Map<String, serde_json::Value> = table
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
        .collect();
    layer_from_map(map, &shown.to_string())
}

/// Deserialize a layer key by key, so an error names the setting it is about.
fn layer_from_map(
    map: serde_json::Map<String, serde_json::Value>,
    file: &str,
) -> Result<Layer, ConfigError> {
    let mut map = map;
    map.retain(|key, _| match gunicorn_only::skipped(key) {
        Some(why) => {
            crate::warning!("config file {file}: gunicorn's setting `{key}` does not apply to ferricorn ({why}): skipped");
            false
        }
        None => true,
    });
    for (key, value) in &map {
        let one = serde_json::Value::Object([(key.clone(), value.clone())].into_iter().collect());
        if let Err(e) = serde_json::from_value::<Layer>(one) {
            let msg = e.to_string();
            return Err(if msg.starts_with("unknown field") {
                ConfigError(format!(
                    "config file {file}: unknown setting `{key}` (see ferricorn.toml(5) for the names)"
                ))
            } else {
                ConfigError(format!(
                    "config file {file}: setting `{key}`: {value} is not allowed ({msg})"
                ))
            });
        }
    }
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ConfigError(format!("config file {file}: {e}")))
}

/// Settings sent to another process (`--preload`'s fork server) made a
/// configuration again there.
pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
    validate(s, BTreeMap::new())
}

/// An address the master itself listens at (health, metrics): not an
/// inherited descriptor, which the workers would share.
fn master_bind(setting: &str, value: Option<&str>) -> Result<Option<BindAddr>, ConfigError> {
    let Some(v) = value else {
        return Ok(None);
    };
    match bind::parse(v) {
        Ok(BindAddr::Fd(_)) => Err(bad(setting, format!("{v:?}"), "HOST:PORT or unix:PATH")),
        Ok(a) => Ok(Some(a)),
        Err(e) => Err(bad(setting, format!("{v:?}"), &e)),
    }
}

fn validate(
    mut s: Settings,
    sources: BTreeMap<&'static str, Source>,
) -> Result<Config, ConfigError> {
    if s.app.trim().is_empty() {
        return Err(ConfigError(
            "no application given: pass APP_MODULE (e.g. `ferricorn myapp:app`) or set `app` in the config file".into(),
        ));
    }
    for (name, v) in [
        ("workers", s.workers),
        ("threads", s.threads),
        ("worker_connections", s.worker_connections),
        ("backlog", s.backlog),
    ] {
        if v == 0 {
            return Err(bad(name, v, "must be at least 1"));
        }
    }
    if s.limit_request_line == 0 {
        s.limit_request_line = 8190;
    }
    if s.limit_request_line > 8190 {
        return Err(bad("limit_request_line", s.limit_request_line, "0 to 8190"));
    }
    if s.limit_request_fields == 0 {
        s.limit_request_fields = 32768;
    }
    if s.limit_request_fields > 32768 {
        return Err(bad(
            "limit_request_fields",
            s.limit_request_fields,
            "0 to 32768",
        ));
    }
    if s.limit_request_field_size == 0 {
        // As gunicorn: 0 is its default maximum, not no limit at all.
        s.limit_request_field_size = 8190;
    }
    if s.header_timeout == 0 {
        return Err(bad("header_timeout", 0, "must be at least 1 second"));
    }
    if s.journald == Journald::Yes && s.errorlog != "-" {
        return Err(bad(
            "journald",
            "yes",
            "only with the error log on stderr (errorlog = \"-\")",
        ));
    }
    let log_level = Level::parse(&s.loglevel).ok_or_else(|| {
        bad(
            "loglevel",
            &s.loglevel,
            "debug, info, warning, error or critical",
        )
    })?;
    crate::log::access::Format::compile(&s.access_log_format)
        .map_err(|e| ConfigError(format!("setting `access_log_format`: {e}")))?;

    let statsd = match &s.statsd_host {
        None => None,
        Some(host) => Some(
            std::net::ToSocketAddrs::to_socket_addrs(host.as_str())
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    bad(
                        "statsd_host",
                        format!("{host:?}"),
                        "HOST:PORT of a statsd server (e.g. 127.0.0.1:8125)",
                    )
                })?,
        ),
    };
    let proxy_allow_ips: Vec<String> = s
        .proxy_allow_ips
        .iter()
        .flat_map(|i| split_commas(i))
        .collect();
    let proxy_allow = Networks::parse(&proxy_allow_ips).map_err(|item| {
        bad(
            "proxy_allow_ips",
            item,
            "addresses or networks (10.0.0.0/8) separated by commas, or *",
        )
    })?;
    if let Some(d) = &s.logconfig_dict
        && !serde_json::from_str::<serde_json::Value>(d).is_ok_and(|v| v.is_object())
    {
        return Err(bad(
            "logconfig_dict",
            format!("{d:?}"),
            "a dictionary in logging.config.dictConfig's format",
        ));
    }
    // Workers read them after --chdir: resolve them against where we started.
    for (name, file) in [
        ("logconfig", &mut s.logconfig),
        ("logconfig_json", &mut s.logconfig_json),
    ] {
        if let Some(f) = file {
            match f.canonicalize() {
                Ok(full) if full.is_file() => *f = full,
                _ => return Err(bad(name, f.display(), "a file that exists")),
            }
        }
    }
    let health = master_bind("health_bind", s.health_bind.as_deref())?;
    let metrics = master_bind("metrics_bind", s.metrics_bind.as_deref())?;
    let mut binds = Vec::new();
    for b in &s.bind {
        binds.push(bind::parse(b).map_err(|e| bad("bind", format!("{b:?}"), &e))?);
    }

    // gunicorn: the sync class with threads is gthread.
    let worker_class = if s.worker_class == WorkerClass::Sync && s.threads > 1 {
        WorkerClass::Gthread
    } else {
        s.worker_class
    };

    if !s.chdir.is_dir() {
        return Err(bad(
            "chdir",
            s.chdir.display(),
            "must be an existing directory",
        ));
    }
    s.chdir = s.chdir.canonicalize().unwrap_or(s.chdir);

    crate::python::check_installation().map_err(ConfigError)?;
    if let Some(venv) = &s.virtualenv {
        crate::python::check_virtualenv(venv)
            .map_err(|e| ConfigError(format!("setting `virtualenv`: {e}")))?;
    }

    let mut env = Vec::new();
    for kv in &s.raw_env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_string(), v.to_string())),
            _ => return Err(bad("raw_env", format!("{kv:?}"), "expected KEY=VALUE")),
        }
    }

    let uid = s
        .user
        .as_deref()
        .map(crate::privileges::lookup_user)
        .transpose()
        .map_err(|e| bad("user", s.user.as_deref().unwrap_or(""), &e))?;
    let gid = match s.group.as_deref() {
        Some(g) => Some(crate::privileges::lookup_group(g).map_err(|e| bad("group", g, &e))?),
        None => match uid {
            Some(uid) => crate::privileges::primary_group(uid),
            None => None,
        },
    };

    let mut forwarded_allow_all = false;
    let mut forwarded_allow = Vec::new();
    let mut expanded = Vec::new();
    for item in s.forwarded_allow_ips.iter().flat_map(|i| split_commas(i)) {
        if item == "*" {
            forwarded_allow_all = true;
        } else {
            forwarded_allow.push(item.parse().map_err(|_| {
                bad(
                    "forwarded_allow_ips",
                    format!("{item:?}"),
                    "IP addresses separated by commas, or *",
                )
            })?);
        }
        expanded.push(item);
    }
    s.forwarded_allow_ips = expanded;
    s.forwarder_headers = s
        .forwarder_headers
        .iter()
        .flat_map(|i| split_commas(i))
        .collect();

    let (protocols, alpn) = protocols(&s)?;
    let tls = tls(&mut s, alpn)?;
    if protocols.h2 && tls.is_none() && !protocols.h2c {
        crate::warning!(
            "http_protocols includes h2 but there is no TLS (certfile) and http2_cleartext is off: HTTP/2 will not be served"
        );
    }

    let proc_name = s.proc_name.clone().unwrap_or_else(|| s.app.clone());
    Ok(Config {
        settings: s,
        sources,
        binds,
        health,
        statsd,
        proxy_allow,
        hooks_file: None,
        metrics,
        log_level,
        worker_class,
        uid,
        gid,
        env,
        forwarded_allow_all,
        forwarded_allow,
        proc_name,
        tls,
        protocols,
    })
}

/// `http_protocols` and `http2_*`: what is served, and the ALPN names to offer.
fn protocols(s: &Settings) -> Result<(Protocols, Vec<Vec<u8>>), ConfigError> {
    let allowed = "h1, h2 or both, comma separated, preferred first";
    let mut alpn: Vec<Vec<u8>> = Vec::new();
    for p in split_commas(&s.http_protocols) {
        let name: &[u8] = match p.to_ascii_lowercase().as_str() {
            "h1" => b"http/1.1",
            "h2" => b"h2",
            _ => return Err(bad("http_protocols", format!("{p:?}"), allowed)),
        };
        if alpn.iter().any(|n| n == name) {
            return Err(bad("http_protocols", format!("{p:?} twice"), allowed));
        }
        alpn.push(name.to_vec());
    }
    if alpn.is_empty() {
        return Err(bad("http_protocols", "nothing", allowed));
    }
    let h2 = alpn.iter().any(|n| n == b"h2");
    // HTTP/1.1 stays available to clients that do not offer h2.
    if !alpn.iter().any(|n| n == b"http/1.1") {
        alpn.push(b"http/1.1".to_vec());
    }
    let h2c = s.http2_cleartext == H2Cleartext::PriorKnowledge;
    if h2c && !h2 {
        return Err(bad(
            "http2_cleartext",
            "prior-knowledge",
            "needs h2 in http_protocols",
        ));
    }
    if s.http2_initial_window_size > (1 << 31) - 1 {
        return Err(bad(
            "http2_initial_window_size",
            s.http2_initial_window_size,
            "at most 2147483647",
        ));
    }
    if !(16384..=16_777_215).contains(&s.http2_max_frame_size) {
        return Err(bad(
            "http2_max_frame_size",
            s.http2_max_frame_size,
            "16384 to 16777215",
        ));
    }
    Ok((Protocols { h2, h2c }, alpn))
}

/// The TLS settings read into a rustls configuration: files are read now,
/// by the master, before anything is bound.
fn tls(s: &mut Settings, alpn: Vec<Vec<u8>>) -> Result<Option<crate::tls::Tls>, ConfigError> {
    let client_certs = crate::tls::ClientCerts::from_setting(s.cert_reqs).ok_or_else(|| {
        bad(
            "cert_reqs",
            s.cert_reqs,
            "0 (none), 1 (optional) or 2 (required)",
        )
    })?;
    // Shown absolute by --print-config, and read again from there on HUP.
    for f in [&mut s.certfile, &mut s.keyfile, &mut s.ca_certs]
        .into_iter()
        .flatten()
    {
        if let Ok(full) = f.canonicalize() {
            *f = full;
        }
    }
    let Some(certfile) = s.certfile.as_deref() else {
        for (name, set) in [
            ("keyfile", s.keyfile.is_some()),
            ("ca_certs", s.ca_certs.is_some()),
            ("cert_reqs", s.cert_reqs != 0),
            ("ciphers", s.ciphers.is_some()),
        ] {
            if set {
                return Err(ConfigError(format!(
                    "setting `{name}`: is a TLS setting, but certfile is not set (give the server's certificate with --certfile)"
                )));
            }
        }
        return Ok(None);
    };
    let files = crate::tls::Files {
        certfile,
        keyfile: s.keyfile.as_deref(),
        ca_certs: s.ca_certs.as_deref(),
        client_certs,
        ciphers: s.ciphers.as_deref(),
        alpn,
    };
    crate::tls::Tls::load(&files)
        .map(Some)
        .map_err(|r| ConfigError(format!("setting `{}`: {}", r.setting, r.message)))
}

impl Config {
    /// Do logs go to journald's native socket?
    pub fn use_journal(&self) -> bool {
        match self.settings.journald {
            Journald::Yes => true,
            Journald::No => false,
            Journald::Auto => {
                self.settings.errorlog == "-" && crate::log::journal::stderr_is_journal()
            }
        }
    }

    /// `--print-config`: every setting, its value, and where it came from.
    pub fn render(&self) -> String {
        self.settings.render(&self.sources)
    }
}
