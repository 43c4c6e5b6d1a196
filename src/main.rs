//! ferricorn: parse the command line, load the configuration, run the master.

mod asgi;
mod config;
mod ctl;
mod docs;
mod http;
mod listen;
mod log;
mod master;
mod metrics;
mod privileges;
mod proctitle;
mod proto;
mod python;
mod request;
mod statsd;
mod sys;
mod systemd;
mod tls;
mod worker;
mod wsgi;

use clap::Parser;
use clap::error::ErrorKind;

use config::Cli;

/// This build's version; `FERRICORN_BUILD_VERSION` at build time overrides it
/// (the upgrade tests build a second, differently versioned binary).
pub const VERSION: &str = match option_env!("FERRICORN_BUILD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// Exit code for a configuration the user must fix.
const USAGE_ERROR: i32 = 2;

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("ferricorn: error: {msg}");
    std::process::exit(USAGE_ERROR);
}

fn main() {
    // Read argv before anything rewrites it for the process title; an
    // upgrade re-executes the same command line from the same path.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "ctl") {
        std::process::exit(ctl::main(argv[2..].to_vec()));
    }
    let exe = master::upgrade::resolve_exe(argv.first().map(|a| a.as_os_str()));
    let started_in = std::env::current_dir().ok();
    let mut cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            eprintln!("ferricorn: error: {line}");
            eprintln!("Try 'ferricorn --help' for more information.");
            std::process::exit(USAGE_ERROR);
        }
    };
    // HUP reads the file again after --chdir moved us: keep where it was.
    if let Some(path) = &mut cli.config
        && path.is_relative()
        && let Ok(cwd) = std::env::current_dir()
    {
        *path = cwd.join(&*path);
    }
    let cfg = match config::load(&cli) {
        Ok(cfg) => cfg,
        Err(e) => fail(e),
    };
    if cli.print_config {
        print!("{}", cfg.render());
        return;
    }
    let journal = cfg.use_journal();
    if let Err(e) = log::init(
        log::Sink::parse(&cfg.settings.errorlog),
        cfg.log_level,
        journal,
    ) {
        if journal {
            fail(format_args!(
                "setting `journald`: cannot reach the journal ({e}); is systemd-journald running? Use --journald no"
            ));
        }
        fail(format_args!(
            "setting `errorlog`: cannot open {}: {e}",
            cfg.settings.errorlog
        ));
    }

    if cfg.settings.capture_output
        && let Err(e) = log::capture_output()
    {
        fail(format_args!(
            "setting `capture_output`: cannot send stdout and stderr to {}: {e}",
            cfg.settings.errorlog
        ));
    }

    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        cfg.settings.umask.0 as libc::mode_t,
    ));
    if let Err(e) = std::env::set_current_dir(&cfg.settings.chdir) {
        fail(format_args!(
            "setting `chdir`: {}: {e}",
            cfg.settings.chdir.display()
        ));
    }
    for (k, v) in &cfg.env {
        // SAFETY: still single-threaded; workers inherit the environment at fork.
        unsafe { std::env::set_var(k, v) };
    }

    if cli.check_config {
        std::process::exit(check_config(&cfg));
    }

    let notifier = systemd::notify::Notifier::from_env();
    // Shared with the workers, so made before the preloader forks.
    if cfg.metrics.is_some()
        && let Err(e) = metrics::install()
    {
        error!("Could not make the metrics' shared counters: {e}");
        std::process::exit(1);
    }
    let board = match listen::balance::Board::new() {
        Ok(board) => Some(board),
        Err(e) => {
            warning!("Connections will not be balanced between workers: {e}");
            None
        }
    };
    // gunicorn imports a preloaded app before it binds: a failure binds nothing.
    let preloader = if cfg.settings.preload_app {
        match master::preload::Preloader::start(&cfg, board) {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                error!("Exception while preloading the app\n{e}");
                error!("Reason: App failed to load.");
                std::process::exit(proto::APP_LOAD_ERROR);
            }
            Err(e) => {
                error!("Could not start the preloader: {e:#}");
                std::process::exit(proto::WORKER_BOOT_ERROR);
            }
        }
    } else {
        None
    };
    let inherited = listen::activation::take();
    let handover = master::upgrade::take_handover();
    // gunicorn's arbiter hooks, in a Python child; on_starting runs before
    // anything is bound, as in gunicorn.
    // It keeps no copy of the sockets systemd or the previous image passed.
    let passed: Vec<i32> = inherited
        .iter()
        .map(|i| i.fd)
        .chain(handover.iter().flat_map(|h| h.workers.iter().map(|w| w.fd)))
        .collect();
    // After an upgrade's exec the workers are serving: a hook failure there
    // is logged, never the end of the server (the check ran them before).
    let upgrading = handover.is_some();
    let mut hooks = match master::hook_host::HookHost::start(&cfg, &passed) {
        Ok(h) => h,
        Err(e) if upgrading => {
            error!("Server hooks will not run: {e:#}");
            None
        }
        Err(e) => fail(format_args!("the server hooks cannot be loaded: {e:#}")),
    };
    if let Some(h) = &mut hooks {
        let workers = cfg.settings.workers;
        h.run(
            "nworkers_changed",
            master::hook_host::Call::NworkersChanged {
                new: workers,
                old: None,
            },
            workers,
        );
        if let Err(e) = h.call("on_starting", master::hook_host::Call::Server, workers) {
            error!("{e}");
            if !upgrading {
                std::process::exit(1);
            }
        }
    }

    let binds_explicit = cfg.sources.contains_key("bind");
    let listeners =
        match listen::adopt_and_bind(inherited, &cfg.binds, binds_explicit, cfg.settings.backlog) {
            Ok(l) => l,
            Err(e) => {
                error!("{e}");
                std::process::exit(1);
            }
        };
    let master = match master::Master::new(
        cli,
        cfg,
        listeners,
        notifier,
        preloader,
        board,
        master::upgrade::Image {
            exe,
            argv,
            cwd: started_in,
        },
        handover,
        hooks,
    ) {
        Ok(m) => m,
        Err(e) => {
            error!("{e:#}");
            std::process::exit(1);
        }
    };
    std::process::exit(master.run());
}

/// `--check-config`: the settings are valid (or we would not be here); import
/// the app in a child so the master stays free of Python.
fn check_config(cfg: &config::Config) -> i32 {
    // SAFETY: single-threaded; the child only boots Python and exits.
    let pid = match unsafe { nix::unistd::fork() } {
        Err(e) => {
            error!("fork: {e}");
            return 1;
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child.as_raw(),
        Ok(nix::unistd::ForkResult::Child) => 0,
    };
    if pid == 0 {
        let code = match worker::boot(cfg, false) {
            Ok(_) => 0,
            Err(code) => code,
        };
        worker::exit(code);
    }
    match sys::wait_pid(pid) {
        Some(0) => {
            // The arbiter's hooks load too (an upgrade runs them next).
            match master::hook_host::HookHost::start(cfg, &[]) {
                Ok(Some(h)) => h.stop(),
                Ok(None) => {}
                Err(e) => {
                    error!("The server hooks cannot be loaded: {e:#}");
                    return USAGE_ERROR;
                }
            }
            println!("Configuration OK: {} loads.", cfg.settings.app);
            0
        }
        Some(code) => code,
        None => proto::WORKER_BOOT_ERROR,
    }
}
