//! The command line and configuration: flags, files, precedence, refusals.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(apps_dir())
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT")
        .env_remove("VIRTUAL_ENV")
        .env_remove("FERRICORN_CMD_ARGS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `--print-config` line for one setting.
fn setting(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| {
            l.starts_with(&format!("{name} = ")) || l.starts_with(&format!("# {name} is unset"))
        })
        .unwrap_or_else(|| panic!("{name} not printed:\n{out}"))
        .to_string()
}

#[test]
fn help_groups_every_gunicorn_option() {
    let o = run(&["--help"], &[]);
    assert!(o.status.success());
    let help = stdout(&o);
    for flag in [
        "--config",
        "--bind",
        "--backlog",
        "--workers",
        "--worker-class",
        "--threads",
        "--worker-connections",
        "--max-requests",
        "--max-requests-jitter",
        "--timeout",
        "--graceful-timeout",
        "--keep-alive",
        "--limit-request-line",
        "--limit-request-fields",
        "--limit-request-field_size",
        "--preload",
        "--chdir",
        "--env",
        "--pid",
        "--user",
        "--group",
        "--umask",
        "--initgroups",
        "--forwarded-allow-ips",
        "--access-logfile",
        "--access-logformat",
        "--error-logfile",
        "--log-level",
        "--name",
        "--pythonpath",
        "--check-config",
        "--print-config",
        "--version",
        "--virtualenv",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for short in [
        "-c,", "-b,", "-w,", "-k,", "-t,", "-e,", "-p,", "-u,", "-g,", "-m,", "-n,",
    ] {
        assert!(help.contains(short), "{short} missing from --help");
    }
    for heading in [
        "Binding:",
        "Workers:",
        "Request limits:",
        "Application:",
        "Process:",
        "Logging:",
        "Configuration:",
    ] {
        assert!(help.contains(heading), "{heading} missing:\n{help}");
    }
}

#[test]
fn version_is_printed() {
    let o = run(&["--version"], &[]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).trim(),
        format!("ferricorn {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_values_are_refused_in_one_line_naming_the_setting() {
    let cases: &[(&[&str], &str)] = &[
        (&["-w", "notanumber", "conformance:app"], "--workers"),
        (&["-w", "0", "conformance:app"], "--workers"),
        (&["-k", "eventlet", "conformance:app"], "--worker-class"),
        (&["-m", "0o7777", "conformance:app"], "--umask"),
        (&["-b", "127.0.0.1:99999", "conformance:app"], "bind"),
        (&["--log-level", "loud", "conformance:app"], "loglevel"),
        (
            &["--limit-request-line", "9000", "conformance:app"],
            "limit_request_line",
        ),
        (&["--chdir", "/does/not/exist", "conformance:app"], "chdir"),
        (&["-u", "no-such-user-here", "conformance:app"], "user"),
        (
            &["--access-logformat", "%(zz)s", "conformance:app"],
            "access_log_format",
        ),
        (&["-e", "NOEQUALS", "conformance:app"], "raw_env"),
        (&["--virtualenv", "/tmp", "conformance:app"], "virtualenv"),
        (
            &["-k", "asgi", "--asgi-loop", "tokio", "asgi_raw:app"],
            "--asgi-loop",
        ),
        (
            &["--asgi-lifespan", "maybe", "asgi_raw:app"],
            "--asgi-lifespan",
        ),
        (
            &["--websocket-max-message-size", "0", "asgi_raw:app"],
            "--websocket-max-message-size",
        ),
    ];
    for (args, name) in cases {
        let o = run(args, &[]);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert_ne!(o.status.code(), Some(0));
        let err = stderr(&o);
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("ferricorn: error: "), "{args:?}: {err}");
        assert!(first.contains(name), "{args:?} does not name {name}: {err}");
        assert!(!err.contains("Listening at"), "nothing may be bound: {err}");
    }
    let o = run(&["-w", "notanumber", "conformance:app"], &[]);
    let err = stderr(&o);
    assert!(
        err.contains("notanumber") && err.contains("at least 1"),
        "{err}"
    );
}

#[test]
fn missing_app_is_explained() {
    let o = run(&[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no application given"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_file_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "app = \"conformance:app\"\nworkers = \"three\"\n").unwrap();
    let o = run(&["-c", f.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("setting `workers`") && err.contains("three"),
        "{err}"
    );
    std::fs::write(&f, "wrokers = 3\n").unwrap();
    let o = run(&["-c", f.to_str().unwrap(), "conformance:app"], &[]);
    assert!(
        stderr(&o).contains("unknown setting `wrokers`"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&f, "workers = 0\napp = \"conformance:app\"\n").unwrap();
    let o = run(&["-c", f.to_str().unwrap()], &[]);
    assert!(
        stderr(&o).contains("setting `workers`: 0 is not allowed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn precedence_defaults_file_env_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("app.toml");
    std::fs::write(
        &f,
        "app = \"conformance:app\"\nworkers = 3\ntimeout = 40\nkeepalive = 7\nbind = [\"127.0.0.1:9001\", \"unix:/tmp/x.sock\"]\n",
    )
    .unwrap();
    let o = run(
        &["-c", f.to_str().unwrap(), "--print-config", "-t", "50"],
        &[(
            "FERRICORN_CMD_ARGS",
            "--timeout 45 --keep-alive 8 --threads 2",
        )],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        setting(&out, "workers").contains("workers = 3")
            && setting(&out, "workers").contains(&format!("# file {}", f.display()))
    );
    assert!(
        setting(&out, "timeout").contains("timeout = 50")
            && setting(&out, "timeout").contains("# command line")
    );
    assert!(
        setting(&out, "keepalive").contains("keepalive = 8")
            && setting(&out, "keepalive").contains("$FERRICORN_CMD_ARGS")
    );
    assert!(setting(&out, "threads").contains("threads = 2"));
    assert!(
        setting(&out, "graceful_timeout").contains("graceful_timeout = 30")
            && setting(&out, "graceful_timeout").contains("# default")
    );
    assert!(
        setting(&out, "bind").contains(r#"["127.0.0.1:9001","unix:/tmp/x.sock"]"#),
        "{out}"
    );
    assert!(setting(&out, "pidfile").contains("unset"));
}

#[test]
fn web_concurrency_and_port_act_as_in_gunicorn() {
    let o = run(
        &["--print-config", "conformance:app"],
        &[("WEB_CONCURRENCY", "5"), ("PORT", "9123")],
    );
    let out = stdout(&o);
    assert!(
        setting(&out, "workers").contains("workers = 5")
            && setting(&out, "workers").contains("$WEB_CONCURRENCY"),
        "{out}"
    );
    assert!(
        setting(&out, "bind").contains("0.0.0.0:9123") && setting(&out, "bind").contains("$PORT"),
        "{out}"
    );
    let o = run(
        &[
            "--print-config",
            "-w",
            "2",
            "-b",
            "127.0.0.1:1",
            "conformance:app",
        ],
        &[("WEB_CONCURRENCY", "5"), ("PORT", "9123")],
    );
    let out = stdout(&o);
    assert!(setting(&out, "workers").contains("workers = 2"));
    assert!(setting(&out, "bind").contains("127.0.0.1:1"));
}

#[test]
fn gunicorn_py_config_is_read_and_only_the_tls_hook_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("gunicorn.conf.py");
    std::fs::write(
        &f,
        "import multiprocessing\nworkers = 2 * 2\nbind = '127.0.0.1:9555'\nworker_class = 'gthread'\nthreads = 3\nwsgi_app = 'conformance:app'\nraw_env = ['A=1', 'B=2']\n\ndef post_fork(server, worker):\n    pass\n\ndef when_ready(server):\n    pass\n",
    )
    .unwrap();
    let o = run(&["-c", f.to_str().unwrap(), "--print-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(setting(&out, "workers").contains("workers = 4"), "{out}");
    assert!(setting(&out, "bind").contains("127.0.0.1:9555"));
    assert!(setting(&out, "worker_class").contains("gthread"));
    assert!(setting(&out, "app").contains("conformance:app"));
    assert!(setting(&out, "raw_env").contains(r#"["A=1","B=2"]"#));
    let err = stderr(&o);
    // Every hook runs (post_fork in the workers, when_ready in the hook
    // host); only gunicorn's TLS hook is named, as one that will not.
    assert!(!err.contains("hook"), "{err}");
    std::fs::write(
        &f,
        "wsgi_app = 'conformance:app'\ndef ssl_context(conf, default):\n    return default()\n",
    )
    .unwrap();
    let o = run(&["-c", f.to_str().unwrap(), "--print-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warned: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.contains("ssl_context"))
        .map(String::from)
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("will not run"), "{warned:?}");

    std::fs::write(&f, "workers = (\n").unwrap();
    let o = run(&["-c", f.to_str().unwrap(), "conformance:app"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("SyntaxError"), "{}", stderr(&o));
}

#[test]
fn check_config_imports_the_app() {
    let o = run(&["--check-config", "conformance:app"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("Configuration OK"));
    let o = run(&["--check-config", "broken_import:app"], &[]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("this_module_does_not_exist_anywhere"));
    let o = run(
        &["--check-config", "-b", "127.0.0.1:1", "conformance:app"],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "check-config must not bind: {}",
        stderr(&o)
    );
}

#[test]
fn env_and_pythonpath_reach_the_app() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("extra_mod.py"),
        "import os\ndef app(e, sr):\n    sr('200 OK', [])\n    return [os.environ['GREETING'].encode()]\n",
    )
    .unwrap();
    let s = server("extra_mod:app")
        .args([
            "-e",
            "GREETING=bonjour",
            "--pythonpath",
            dir.path().to_str().unwrap(),
        ])
        .start();
    assert_eq!(s.get("/").text(), "bonjour");
}

#[test]
fn virtualenv_from_another_python_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Refused in one line, exit 2: what it says.
    let refused = |pyvenv: String| -> String {
        std::fs::write(dir.path().join("pyvenv.cfg"), pyvenv).unwrap();
        let o = run(
            &[
                "--virtualenv",
                dir.path().to_str().unwrap(),
                "conformance:app",
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = refused("home = /usr/bin\nversion = 3.7.1\n".into());
    assert!(err.contains("3.7.1") && err.contains("3.11"), "{err}");
    assert!(
        err.contains("bin/pip install ferricorn"),
        "says what to run: {err}"
    );

    let version = String::from_utf8(
        std::process::Command::new("/usr/bin/python3")
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let version = version.trim();
    // A newer patch release than ours: its compiled stdlib modules need
    // functions ours lacks.
    let err = refused(format!("home = /usr/bin\nversion = {version}.99\n"));
    assert!(err.contains(&format!("{version}.99, newer than")), "{err}");

    // A free-threaded build of the same version.
    std::fs::create_dir_all(dir.path().join(format!("lib/python{version}t"))).unwrap();
    let err = refused(format!("home = /usr/bin\nversion = {version}.0\n"));
    assert!(err.contains("free-threaded"), "{err}");
}

#[test]
fn journald_yes_is_honoured_and_explained_when_there_is_no_journal() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        if !Path::new("/run/systemd/journal/socket").exists() {
            return run(args, env);
        }
        // A host with journald: hide it from the server in a mount namespace.
        let hidden = Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg("mount -t tmpfs none /run/systemd/journal && exec \"$0\" \"$@\"")
            .arg(bin())
            .args(args)
            .current_dir(apps_dir())
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&hidden.stderr).contains("unshare:"),
            "hiding this host's journal needs root (unshare --mount): {}",
            String::from_utf8_lossy(&hidden.stderr)
        );
        hidden
    };
    let o = run(&["--journald", "yes", "conformance:app"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("setting `journald`") && err.contains("--journald no"),
        "{err}"
    );
    let o = run(
        &[
            "--journald",
            "yes",
            "--error-logfile",
            "/tmp/x.log",
            "conformance:app",
        ],
        &[],
    );
    assert!(stderr(&o).contains("setting `journald`"), "{}", stderr(&o));
}

/// Every setting `--print-config` shows can be set from a gunicorn `*.py`
/// config and from a TOML file, under the name it is printed with (a
/// setting the `.py` reader did not know, `journald`, was silently
/// ignored).
#[test]
fn every_setting_can_be_set_from_a_py_and_a_toml_config() {
    let o = run(&["--print-config", "conformance:app"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    let settings: Vec<(String, String)> = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (assignment, _source) = l.rsplit_once(" # ").unwrap();
            let (name, value) = assignment.split_once(" = ").unwrap();
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    assert!(settings.len() > 30, "{printed}");
    let dir = tempfile::tempdir().unwrap();
    for ext in ["py", "toml"] {
        let f = dir.path().join(format!("all.{ext}"));
        let text: String = settings
            .iter()
            .map(|(name, value)| {
                // The values are JSON: TOML reads them as they are, Python
                // needs its own spelling of true and false.
                let value = match (ext, value.as_str()) {
                    ("py", "true") => "True",
                    ("py", "false") => "False",
                    (_, v) => v,
                };
                format!("{name} = {value}\n")
            })
            .collect();
        std::fs::write(&f, text).unwrap();
        let o = run(&["-c", f.to_str().unwrap(), "--print-config"], &[]);
        assert!(o.status.success(), "{ext}: {}", stderr(&o));
        let out = stdout(&o);
        for (name, value) in &settings {
            let line = setting(&out, name);
            assert!(
                line.contains(&format!("{name} = {value}")) && line.contains("# file "),
                "{ext}: {name} not taken from the file: {line}"
            );
        }
    }
}

#[test]
fn a_statsd_host_that_is_no_address_is_refused_before_anything_is_bound() {
    let o = run(
        &[
            "--statsd-host",
            "no-port-here",
            "-b",
            "127.0.0.1:0",
            "conformance:app",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("setting `statsd_host`"), "{err}");
    assert!(err.contains("HOST:PORT"), "{err}");
    assert!(!err.contains("Listening at"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn gunicorns_settings_that_do_not_apply_load_with_one_notice_each() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("app.toml");
    std::fs::write(
        &toml,
        "app = \"conformance:app\"\nworker_tmp_dir = \"/dev/shm\"\nsendfile = false\n",
    )
    .unwrap();
    let py = dir.path().join("gunicorn.conf.py");
    std::fs::write(
        &py,
        "import ssl\nwsgi_app = 'conformance:app'\nworker_tmp_dir = '/dev/shm'\nsyslog = True\nssl_version = ssl.PROTOCOL_TLS_SERVER\n",
    )
    .unwrap();
    for (file, expected) in [
        (&toml, &["worker_tmp_dir", "sendfile"][..]),
        (&py, &["worker_tmp_dir", "syslog", "ssl_version"][..]),
    ] {
        let s = server("conformance:app")
            .args(["-c", &file.display().to_string()])
            .start();
        let log = s.log_text();
        for name in expected {
            let notices: Vec<_> = log
                .lines()
                .filter(|l| l.contains(&format!("gunicorn's setting `{name}` does not apply")))
                .collect();
            assert_eq!(notices.len(), 1, "{name}:\n{log}");
            assert!(notices[0].contains("skipped"), "{log}");
        }
        assert_eq!(s.get("/pid").status, 200);
    }
    std::fs::write(
        &toml,
        "app = \"conformance:app\"\ncertfile = \"/etc/ssl/x.pem\"\n",
    )
    .unwrap();
    // TLS is served: a certificate that is not there is refused, naming it.
    let o = run(&["-c", toml.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("setting `certfile`") && err.contains("/etc/ssl/x.pem"),
        "{err}"
    );
}

#[test]
fn gunicorns_options_that_do_not_apply_are_accepted_with_a_notice() {
    let s = server("conformance:app")
        .args(["--worker-tmp-dir", "/dev/shm", "--no-sendfile"])
        .start();
    let log = s.log_text();
    for flag in ["--worker-tmp-dir", "--no-sendfile"] {
        let notices = log
            .lines()
            .filter(|l| l.contains(&format!("gunicorn's option {flag} does not apply")))
            .count();
        assert_eq!(notices, 1, "{flag}:\n{log}");
    }
    assert_eq!(s.get("/pid").status, 200);
    // Hidden: --help lists what ferricorn does.
    let o = run(&["--help"], &[]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("worker-tmp-dir"));
}

/// A FileHandler writing `LEVEL|logger|message` lines to `out`, as dictConfig takes it.
fn dict_config(out: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "formatters": {"plain": {"format": "%(levelname)s|%(name)s|%(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": out, "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["file"]},
    })
}

fn logged_by_the_app(s: &Server, out: &std::path::Path, tag: &str) {
    assert_eq!(s.get(&format!("/log?{tag}")).status, 200);
    let want = format!("WARNING|conformance|app log line {tag}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(out)
        .unwrap_or_default()
        .contains(&want)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} not in {out:?}; log:\n{}",
            s.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn logconfig_dict_json_and_ini_configure_the_apps_python_logging() {
    let dir = tempfile::tempdir().unwrap();
    // TOML table.
    let out = dir.path().join("dict.log");
    let toml = dir.path().join("app.toml");
    let table = toml::Value::try_from(dict_config(&out)).unwrap();
    let mut doc = toml::Table::new();
    doc.insert("app".into(), "conformance:app".into());
    doc.insert("logconfig_dict".into(), table);
    std::fs::write(&toml, toml::to_string(&doc).unwrap()).unwrap();
    let s = server("conformance:app")
        .args(["-c", &toml.display().to_string()])
        .start();
    logged_by_the_app(&s, &out, "dict");
    drop(s);
    // A gunicorn *.py config's dict.
    let out = dir.path().join("py.log");
    let py = dir.path().join("gunicorn.conf.py");
    std::fs::write(&py, format!("logconfig_dict = {}\n", dict_config(&out))).unwrap();
    let s = server("conformance:app")
        .args(["-c", &py.display().to_string()])
        .start();
    logged_by_the_app(&s, &out, "py");
    drop(s);
    // --log-config-json FILE.
    let out = dir.path().join("json.log");
    let json = dir.path().join("logging.json");
    std::fs::write(&json, dict_config(&out).to_string()).unwrap();
    let s = server("conformance:app")
        .args(["--log-config-json", &json.display().to_string()])
        .start();
    logged_by_the_app(&s, &out, "json");
    drop(s);
    // --log-config FILE (fileConfig's ini).
    let out = dir.path().join("ini.log");
    let ini = dir.path().join("logging.ini");
    std::fs::write(
        &ini,
        format!(
            "[loggers]\nkeys=root\n[handlers]\nkeys=file\n[formatters]\nkeys=plain\n\
             [logger_root]\nlevel=INFO\nhandlers=file\n\
             [handler_file]\nclass=FileHandler\nformatter=plain\nargs=({:?},)\n\
             [formatter_plain]\nformat=%(levelname)s|%(name)s|%(message)s\n",
            out.display().to_string()
        ),
    )
    .unwrap();
    let s = server("conformance:app")
        .args(["--log-config", &ini.display().to_string()])
        .start();
    logged_by_the_app(&s, &out, "ini");
    drop(s);
    // A dictionary that is none: one line naming the setting, exit 2.
    let o = run(&["--log-config-dict", "[1, 2]", "conformance:app"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("setting `logconfig_dict`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn capture_output_sends_print_and_stderr_to_the_error_log_file_across_usr1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("printing.py"),
        "import sys\n\ndef app(environ, start_response):\n    \
         print('printed', environ['QUERY_STRING'])\n    \
         sys.stderr.write('stderr ' + environ['QUERY_STRING'] + '\\n')\n    \
         start_response('200 OK', [])\n    return [b'ok']\n",
    )
    .unwrap();
    let log = dir.path().join("error.log");
    let start = |capture: bool| {
        let mut b = command()
            .args([
                "-b",
                "127.0.0.1:0",
                "--error-logfile",
                log.to_str().unwrap(),
            ])
            .args(["--chdir", dir.path().to_str().unwrap(), "printing:app"]);
        if capture {
            b = b.arg("--capture-output");
        }
        b.start_with_log(&log)
    };
    // Without it, the app's output is not the log's (it goes to stdout/stderr).
    let s = start(false);
    assert_eq!(s.get("/?one").status, 200);
    drop(s);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("stderr one"), "{text}");
    std::fs::remove_file(&log).unwrap();

    let s = start(true);
    assert_eq!(s.get("/?two").status, 200);
    // Line by line, while the worker runs (Python would buffer a block).
    s.wait_log("printed two", std::time::Duration::from_secs(10));
    s.wait_log("stderr two", std::time::Duration::from_secs(10));
    // USR1 after a rotation: the app's output follows the new file.
    let rotated = dir.path().join("error.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("printed three")) {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing in the new log"
        );
        // Until every process has reopened, output may still land in the old file.
        assert_eq!(s.get("/?three").status, 200);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("stderr three")
    );
}
