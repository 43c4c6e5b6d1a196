//! `pip install ferricorn`: the wheels scripts/build-wheels.sh builds, one
//! per CPython 3.9–3.13 (pyenv's interpreters on this machine kind), each
//! installed with Flask, FastAPI and gevent into a virtualenv of its
//! version. The venv's `bin/ferricorn`, with no `--virtualenv`, serves with
//! the venv's Python: every worker class answers, and a HUP and a USR2
//! under load lose no request. A venv of another version is refused in one
//! line, and pip refuses a wheel of another version.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// pyenv's newest CPython `version` (e.g. "3.12"); a missing one fails the
/// test with what to install.
fn interpreter(version: &str) -> PathBuf {
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
    let python = found.last().map(|p| p.join("bin/python3"));
    match python {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "CPython {version} is not installed here (looked in {}/versions): \
             `pyenv install {version}` and run the test again",
            root.display()
        ),
    }
}

/// The wheels, built once for every version (the dev profile: these tests
/// check packaging and behaviour; bench/ measures the release build).
fn wheel(version: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = root.join("target/test-wheels");
        let _ = std::fs::remove_dir_all(&out);
        let status = Command::new(root.join("scripts/build-wheels.sh"))
            .args(["--profile", "dev", "--out", out.to_str().unwrap()])
            .args(["3.9", "3.10", "3.11", "3.12", "3.13"].map(interpreter))
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
