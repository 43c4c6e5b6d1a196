//! `pip install ferricorn`: the wheels scripts/build-wheels.sh builds, one
//! per CPython 3.9–3.13 (pyenv's interpreters on this machine kind), each
//! installed with Flask, FastAPI and gevent into a virtualenv of its
//! version. The venv's `bin/ferricorn`, with no `--virtualenv`, serves with
//! the venv's Python: every worker class answers, and a HUP and a USR2
//! under load lose no request. Each wheel brings its own standard library,
//! so it also serves a venv of the distribution's Python of its version. A
//! venv of another version is refused in one line, and pip refuses a wheel
//! of another version.

mod common;
#[path = "systemd/container.rs"]
mod container;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The interpreter scripts/build-wheels.sh builds the `version` wheel
/// with (the venvs are made from it); a missing one fails the test with
/// what to install.
fn interpreter(version: &str) -> PathBuf {
    static LIST: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = run(Command::new(root.join("scripts/build-wheels.sh")).arg("--list"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .collect()
    });
    list.iter()
        .find(|p| {
            let out = Command::new(p)
                .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
                .output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == version)
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no CPython {version} here for scripts/build-wheels.sh ({list:?}): \
                 `pyenv install {version}` (or the distribution's python{version}) and run the test again"
            )
        })
}

/// The wheels, built once for every version (the dev profile: these tests
/// check packaging and behaviour; bench/ measures the release build).
fn wheel(version: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/test-wheels");
        let _ = std::fs::remove_dir_all(&out);
        // Every version on the machine, as the script finds them by default
        // (after checking here that each is present).
        for v in ["3.9", "3.10", "3.11", "3.12", "3.13"] {
            interpreter(v);
        }
        let status = Command::new(root.join("scripts/build-wheels.sh"))
            .args(["--profile", "dev", "--out", out.to_str().unwrap()])
            .status()
            .expect("run scripts/build-wheels.sh");
        assert!(status.success(), "scripts/build-wheels.sh failed");
        out
    });
    let tag = format!("-cp{0}-cp{0}-", version.replace('.', ""));
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(&tag))
        .unwrap_or_else(|| panic!("no {tag} wheel in {}", out.display()))
}

/// Build the wheel of `python` alone into `out` (dev profile); its path.
fn one_wheel(out: &Path, python: &Path, env: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new(root.join("scripts/build-wheels.sh"))
        .args(["--profile", "dev", "--out", out.to_str().unwrap()])
        .arg(python)
        .envs(env.iter().copied()));
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("no wheel in {}", out.display()))
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A virtualenv of CPython `version` with the wheel, Flask, FastAPI and gevent.
fn venv_with_wheel(version: &str, dir: &Path) -> PathBuf {
    let venv = dir.join(format!("venv{version}"));
    run(Command::new(interpreter(version)).args(["-m", "venv", venv.to_str().unwrap()]));
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(wheel(version))
        .args(["flask>=3,<4", "fastapi>=0.110,<1", "gevent>=24"]));
    venv
}

fn serves_with_its_venv(version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let venv = venv_with_wheel(version, dir.path());
    let bin = venv.join("bin/ferricorn");
    assert!(bin.is_file(), "pip put no ferricorn in {}", venv.display());
    let apps = apps_dir().display().to_string();
    let start = |args: &[&str], app: &str, workers: usize| {
        command()
            .bin(&bin)
            .args(["-b", "127.0.0.1:0", "--chdir", &apps])
            .args(args.iter().copied())
            .arg(app)
            .wait_workers(workers)
            .start()
    };

    // gthread with Flask, on the venv's Python; a HUP and a USR2 (the
    // venv's binary runs again) under load fail nothing.
    let s = start(
        &["-w", "2", "-k", "gthread", "--threads", "4"],
        "flaskapp:app",
        2,
    );
    let r = s.get("/python");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{version} {}", venv.display()));
    let load = Load::start(s.addr(), "/");
    load.wait_answered(50);
    s.signal(libc::SIGHUP);
    s.wait_count("Reload complete", 1, LONG);
    load.wait_answered(50);
    s.signal(libc::SIGUSR2);
    s.wait_log("Upgraded in place", LONG);
    s.wait_count("Reload complete", 2, LONG);
    load.wait_answered(50);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
    drop(s);

    // The other classes: sync and gevent with Flask, asgi with FastAPI.
    for class in ["sync", "gevent"] {
        let s = start(&["-k", class], "flaskapp:app", 1);
        assert_eq!(
            s.get("/python").text(),
            format!("{version} {}", venv.display()),
            "{class}"
        );
    }
    let s = start(&["-k", "asgi"], "fastapi_app:app", 1);
    let r = s.get("/items/7");
    assert_eq!(r.status, 200, "{}", r.text());

    // A venv of another Python, given as $VIRTUAL_ENV: one line, exit 2.
    let other = if version == "3.12" { "3.11" } else { "3.12" };
    let foreign = dir.path().join("foreign");
    run(Command::new(interpreter(other)).args([
        "-m",
        "venv",
        "--without-pip",
        foreign.to_str().unwrap(),
    ]));
    let out = Command::new(&bin)
        .args(["-b", "127.0.0.1:0", "--chdir", &apps, "flaskapp:app"])
        .env("VIRTUAL_ENV", &foreign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("runs Python {version}")), "{err}");
    assert!(err.contains("pip install ferricorn"), "{err}");
}

macro_rules! version_tests {
    ($($name:ident: $version:literal,)*) => {$(
        #[test]
        fn $name() {
            serves_with_its_venv($version);
        }
    )*};
}

version_tests! {
    the_wheel_serves_python_3_9: "3.9",
    the_wheel_serves_python_3_10: "3.10",
    the_wheel_serves_python_3_11: "3.11",
    the_wheel_serves_python_3_12: "3.12",
    the_wheel_serves_python_3_13: "3.13",
}

#[test]
fn pip_refuses_a_wheel_of_another_python_version() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    run(Command::new(interpreter("3.11")).args(["-m", "venv", venv.to_str().unwrap()]));
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--disable-pip-version-check"])
        .arg(wheel("3.12"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a supported wheel on this platform"),
        "{err}"
    );
}

/// `pip install --force-reinstall` of a newer build, then USR2 (what
/// `systemctl reload` sends): the venv's new binary takes over in place
/// and no request fails.
#[test]
fn pip_installing_a_new_build_then_usr2_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let venv = venv_with_wheel("3.11", dir.path());
    // The same wheel built as another version of ferricorn.
    let newer = dir.path().join("newer");
    let newer_wheel = one_wheel(
        &newer,
        &interpreter("3.11"),
        &[("FERRICORN_BUILD_VERSION", "99.0.0-wheel-test")],
    );

    let s = command()
        .bin(venv.join("bin/ferricorn"))
        .args(["-b", "127.0.0.1:0", "-w", "2", "-k", "gthread"])
        .args(["--chdir", &apps_dir().display().to_string(), "flaskapp:app"])
        .wait_workers(2)
        .start();
    // USR2 before the master counts the workers ready would be refused.
    s.wait_log("Ready: ", LONG);
    let load = Load::start(s.addr(), "/");
    load.wait_answered(50);
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(["--force-reinstall", "--no-deps"])
        .arg(&newer_wheel));
    s.signal(libc::SIGUSR2);
    let line = s.wait_log("Upgraded in place", LONG);
    assert!(line.contains("-> 99.0.0-wheel-test"), "{line}");
    s.wait_log("Reload complete", LONG);
    load.wait_answered(50);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} answered, {failed} failed");
}

/// In a container with Debian's Python and neither Rust nor python3-dev:
/// pip installs the 3.11 wheel offline into a venv, and its ferricorn runs
/// as a systemd notify service (READY once the worker answers). With a
/// shared library of its standard library removed, it says what to install.
#[test]
fn the_wheel_installs_and_runs_where_nothing_can_build_it() {
    let wheel = wheel("3.11");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inside = Path::new("/opt/ferricorn").join(wheel.strip_prefix(root).unwrap());
    let c = container::Container::boot(&format!("ferricorn-wheel-{}", std::process::id()));
    // Nothing here could have built it.
    c.ok("! command -v cargo && ! command -v rustc && ! command -v cc");
    c.ok("! ls /usr/include/python3*/Python.h /usr/lib/python3*/config-*/libpython*.a 2>/dev/null");
    c.ok(&format!(
        "python3 -m venv /srv/venv && /srv/venv/bin/pip install --no-index --quiet {}",
        inside.display()
    ));
    // It needs nothing but the C library: no libpython, zlib or expat that
    // a machine may lack (the loader, not ferricorn, would report those).
    let libs = c.ok("ldd /srv/venv/bin/ferricorn");
    for lib in libs.lines().filter(|l| l.contains("=>")) {
        let name = lib.split_whitespace().next().unwrap_or("");
        assert!(
            ["libc.so", "libm.so", "libgcc_s.so"]
                .iter()
                .any(|g| name.starts_with(g)),
            "{libs}"
        );
    }
    let (code, out) = c.sh(&format!(
        "systemd-run --unit=wheel -p Type=notify -p WorkingDirectory={} \
         /srv/venv/bin/ferricorn -b 127.0.0.1:8000 -w 2 conformance:app",
        container::APPS
    ));
    assert_eq!(
        code,
        0,
        "{out}\n{}",
        c.sh("journalctl -u wheel.service --no-pager").1
    );
    assert_eq!(c.prop("wheel.service", "ActiveState"), "active");
    // READY=1 came once the workers answered; the status line follows.
    let deadline = std::time::Instant::now() + LONG;
    while !c
        .prop("wheel.service", "StatusText")
        .contains("2/2 workers")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            c.prop("wheel.service", "StatusText")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = c.ok("curl -sf http://127.0.0.1:8000/environ");
    assert!(body.contains("\"REQUEST_METHOD\": \"GET\""), "{body}");
    // The venv's Python: Debian's 3.11 under /usr, the venv as sys.prefix.
    let config = c.ok("cd / && /srv/venv/bin/ferricorn --print-config conformance:app");
    assert!(
        config.contains("virtualenv = \"/srv/venv\"") && config.contains("installed in"),
        "{config}"
    );
    c.ok("systemctl stop wheel.service");

    // A shared library its standard library's compiled modules load,
    // missing here: named at start with what to install, exit 2, nothing
    // bound (the container's root is a throw-away overlay).
    c.ok("rm /usr/lib/x86_64-linux-gnu/libsqlite3.so.0* && ldconfig");
    let (code, err) = c.sh(&format!(
        "cd {} && /srv/venv/bin/ferricorn -b 127.0.0.1:8001 conformance:app 2>&1",
        container::APPS
    ));
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("needs libsqlite3.so.0 (for its module `_sqlite3`)")
            && err.contains("apt install libsqlite3-0"),
        "{err}"
    );
    c.ok("! curl -s http://127.0.0.1:8001/");
}

/// pyenv's newest CPython `version` (python.org's layout).
fn pyenv_interpreter(version: &str) -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".pyenv"));
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(version))
            .is_some_and(|rest| rest.starts_with('.'))
    });
    found.sort();
    found
        .last()
        .map(|p| p.join("bin/python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("pyenv has no CPython {version}: `pyenv install {version}`"))
}

/// The `X.Y.Z` of an interpreter.
fn full_version(python: &Path) -> String {
    let out =
        run(Command::new(python)
            .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Install `wheel` into a venv of `base` and serve
/// tests/apps/stdlib_probe.py with it: the venv is `sys.prefix`, the
/// version is the wheel's core, not `base`'s, every compiled module of the
/// standard library comes from the wheel's own library, and a package
/// from where the venv finds it: `system` (a package of `base`'s
/// installation and where `base` keeps it) with `--system-site-packages`,
/// else pip from the venv. A HUP brings new workers that import it all
/// again.
fn serves_a_venv_of_another_build(wheel: &Path, base: &Path, system: Option<(&str, &str)>) {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let mut make = Command::new(base);
    make.args(["-m", "venv", venv.to_str().unwrap()]);
    if system.is_some() {
        make.arg("--system-site-packages");
    }
    run(&mut make);
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(wheel));
    let own = venv
        .join("lib/python3.11/site-packages")
        .display()
        .to_string();
    let (package, location) = system.unwrap_or(("pip", &own));
    let s = command()
        .bin(venv.join("bin/ferricorn"))
        .args(["-b", "127.0.0.1:0", "-k", "gthread", "--chdir"])
        .arg(apps_dir().display().to_string())
        .arg("stdlib_probe:app")
        .start();
    let r = s.get(&format!("/?import={package}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let probe = r.json();
    let home = venv.join("lib/ferricorn-python");
    assert_eq!(probe["prefix"], venv.display().to_string(), "{probe}");
    assert_eq!(probe["base_prefix"], home.display().to_string(), "{probe}");
    assert_ne!(probe["version"], full_version(base).as_str(), "{probe}");
    for (name, file) in probe["modules"].as_object().unwrap() {
        let file = file.as_str().unwrap();
        if name == package {
            assert!(file.starts_with(location), "{probe}");
        } else {
            assert!(
                file == "built-in" || Path::new(file).starts_with(&home),
                "{name}: {file}"
            );
        }
    }
    s.signal(libc::SIGHUP);
    s.wait_count("Reload complete", 1, LONG);
    assert_eq!(s.get("/").status, 200);
}

/// The 3.11 wheel (built with Debian's 3.11, which compiles `math`,
/// `_socket`, `zlib` ... in) serves a venv of pyenv's 3.11, a newer patch
/// release whose own `_ssl` would need functions our core lacks. Without
/// the wheel's library the start is refused (`newer than the CPython`).
#[test]
fn the_wheel_serves_a_venv_of_a_newer_patch_release() {
    serves_a_venv_of_another_build(&wheel("3.11"), &pyenv_interpreter("3.11"), None);
}

/// A 3.11 wheel built with pyenv's 3.11 (python.org's layout: those
/// modules as files in lib-dynload) serves a venv of Debian's 3.11, which
/// has no files for them, with Debian's PyYAML from `dist-packages`.
/// Without the wheel's library `import math` fails, or the start is refused.
#[test]
fn a_wheel_of_python_orgs_layout_serves_a_venv_of_debians_python() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = one_wheel(&dir.path().join("wheel"), &pyenv_interpreter("3.11"), &[]);
    serves_a_venv_of_another_build(
        &wheel,
        Path::new("/usr/bin/python3.11"),
        Some(("yaml", "/usr/lib/python3/dist-packages/")),
    );
}
