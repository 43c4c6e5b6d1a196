//! USR2 upgrades in place and HUP reloads, under load, with zero failed requests.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(30);

/// A private copy of the binary (so the test can replace it) and of the versioned app.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        copy_executable(Path::new(bin()), &dir.path().join("ferricorn"));
        std::fs::copy(
            apps_dir().join("versioned.py"),
            dir.path().join("versioned.py"),
        )
        .unwrap();
        std::fs::copy(
            apps_dir().join("conformance.py"),
            dir.path().join("conformance.py"),
        )
        .unwrap();
        std::fs::write(dir.path().join("version.txt"), "v1").unwrap();
        Site { dir }
    }

    fn exe(&self) -> PathBuf {
        self.dir.path().join("ferricorn")
    }

    /// Install `from` at the executable's path as a new inode, as dpkg does.
    fn install(&self, from: &Path) {
        let tmp = self.dir.path().join("ferricorn.dpkg-new");
        copy_executable(from, &tmp);
        std::fs::rename(&tmp, self.exe()).unwrap();
    }

    fn server(&self, app: &str) -> Builder {
        command()
            .bin(self.exe())
            .args([
                "-b",
                "127.0.0.1:0",
                "--chdir",
                self.dir.path().to_str().unwrap(),
                "-w",
                "2",
                app,
            ])
            .wait_workers(2)
    }
}

fn exe_inode(pid: i32) -> (u64, String) {
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    (meta.ino(), link.display().to_string())
}

#[test]
fn usr2_and_hup_under_load_lose_nothing() {
    let site = Site::new();
    for class in ["sync", "gthread"] {
        let s = site.server("versioned:app").args(["-k", class]).start();
        // A signal before the master counts them ready would be refused.
        s.wait_log("Ready: ", LONG);
        let first_workers = s.workers();
        let load = Load::start(s.addr(), "/");
        load.wait_answered(100);
        for round in 1..=3 {
            site.install(Path::new(bin()));
            s.signal(libc::SIGUSR2);
            s.wait_count("Upgraded in place", round, LONG);
            s.wait_count("Reload complete", 2 * round - 1, LONG);
            load.wait_answered(50);
            s.signal(libc::SIGHUP);
            s.wait_count("Reload complete", 2 * round, LONG);
            load.wait_answered(50);
        }
        let (ok, failed) = load.finish();
        assert_eq!(
            failed,
            0,
            "{class}: {failed} failed, {ok} ok; log:\n{}",
            s.log_text()
        );
        assert!(ok > 100, "{class}: only {ok} requests");
        // Same master, all workers new, running the file now at the path.
        let now = s.wait_worker_count(2, LONG);
        assert!(
            now.iter().all(|p| !first_workers.contains(p)),
            "{first_workers:?} -> {now:?}"
        );
        let (ino, link) = exe_inode(s.pid);
        assert_eq!(
            ino,
            std::fs::metadata(site.exe()).unwrap().ino(),
            "the master runs the new file"
        );
        assert!(!link.ends_with("(deleted)"), "{link}");
        // Old workers drain and exit cleanly (3 upgrades + 3 reloads, 2 workers each).
        s.wait_count("Worker exiting", 12, LONG);
        assert!(
            !s.log_text().contains("exited with code"),
            "{}",
            s.log_text()
        );
    }
}

#[test]
fn a_broken_binary_is_refused_and_the_old_one_keeps_serving() {
    let site = Site::new();
    let s = site.server("versioned:app").start();
    // A signal before the master counts them ready would be refused.
    s.wait_log("Ready: ", LONG);
    let workers = s.workers();
    let script = site.dir.path().join("broken");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'this build is broken' >&2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    site.install(&script);
    s.signal(libc::SIGUSR2);
    let line = s.wait_log("Upgrade refused", LONG);
    assert!(
        line.contains("exit code 7") && line.contains("this build is broken"),
        "{line}"
    );
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.workers(), workers);
    // Garbage that cannot even be executed.
    std::fs::write(&script, b"\x7fELF garbage").unwrap();
    site.install(&script);
    s.signal(libc::SIGUSR2);
    s.wait_count("Upgrade refused", 2, LONG);
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.workers(), workers);
    // A good binary afterwards works.
    site.install(Path::new(bin()));
    s.signal(libc::SIGUSR2);
    s.wait_log("Upgraded in place", LONG);
}

#[test]
fn a_new_app_version_that_fails_to_import_is_refused() {
    let site = Site::new();
    let s = site.server("versioned:app").start();
    // A signal before the master counts them ready would be refused.
    s.wait_log("Ready: ", LONG);
    assert!(s.get("/").text().starts_with("v1 "));
    std::fs::write(site.dir.path().join("BROKEN"), "").unwrap();
    std::fs::write(site.dir.path().join("version.txt"), "v2").unwrap();
    s.signal(libc::SIGUSR2);
    let line = s.wait_log("Upgrade refused", LONG);
    assert!(line.contains("this version of the app is broken"), "{line}");
    assert!(s.get("/").text().starts_with("v1 "));
    // HUP with the broken code: the new workers fail, the old ones keep serving.
    s.signal(libc::SIGHUP);
    s.wait_log("Reload failed", LONG);
    assert!(s.get("/").text().starts_with("v1 "));
    let v1_workers = s.wait_worker_count(2, LONG);
    assert_eq!(v1_workers.len(), 2);
    // Fixed: the next reload picks up v2.
    std::fs::remove_file(site.dir.path().join("BROKEN")).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("Reload complete", LONG);
    // The v1 workers were told to stop when the reload completed; until
    // they have, one may still take a new connection.
    wait_gone(&v1_workers, LONG);
    assert!(s.get("/").text().starts_with("v2 "));
}

#[test]
fn a_second_usr2_during_an_upgrade_is_refused() {
    let site = Site::new();
    let s = site.server("versioned:app").start();
    // A signal before the master counts them ready would be refused.
    s.wait_log("Ready: ", LONG);
    s.signal(libc::SIGUSR2);
    s.wait_log("Upgrade: checking", LONG);
    s.signal(libc::SIGUSR2);
    s.wait_log(
        "USR2 ignored: an upgrade or reload is already in progress",
        LONG,
    );
    s.wait_log("Upgraded in place", LONG);
    s.wait_log("Reload complete", LONG);
    assert_eq!(s.count("Upgraded in place"), 1);
}

#[test]
fn workers_exit_if_the_master_is_killed_mid_upgrade() {
    let site = Site::new();
    std::fs::copy(
        apps_dir().join("slow_import.py"),
        site.dir.path().join("slow_import.py"),
    )
    .unwrap();
    let s = site
        .server("slow_import:app")
        .env("SLOW_IMPORT_SECONDS", "1")
        .start();
    // A signal before the master counts them ready would be refused.
    s.wait_log("Ready: ", LONG);
    let workers = s.wait_worker_count(2, LONG);
    s.signal(libc::SIGUSR2);
    s.wait_log("Upgrade: checking", LONG);
    s.signal(libc::SIGKILL);
    // Each worker notices its master is gone and exits.
    wait_gone(&workers, LONG);
}

#[test]
fn hup_applies_changed_binds() {
    let site = Site::new();
    let conf = site.dir.path().join("app.toml");
    let a = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &conf,
        format!("bind = [\"{a}\"]\napp = \"versioned:app\"\n"),
    )
    .unwrap();
    let s = command()
        .bin(site.exe())
        .args([
            "-c",
            conf.to_str().unwrap(),
            "--chdir",
            site.dir.path().to_str().unwrap(),
        ])
        .start();
    assert_eq!(
        request(a, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status,
        200
    );
    std::fs::write(
        &conf,
        format!("bind = [\"{b}\"]\napp = \"versioned:app\"\n"),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    s.wait_log("Reload complete", LONG);
    s.wait_log(&format!("No longer listening at: http://{a}"), LONG);
    assert_eq!(
        request(b, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status,
        200
    );
    let deadline = Instant::now() + LONG;
    while std::net::TcpStream::connect(a).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{a} still accepts after the old workers retired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second build of ferricorn with another version string (cached under target/).
fn other_build() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/upgrade-build");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "ferricorn", "--target-dir"])
        .arg(&target)
        .current_dir(root)
        .env("FERRICORN_BUILD_VERSION", "99.0.0-upgrade-test")
        .status()
        .unwrap();
    assert!(status.success());
    target.join("debug/ferricorn")
}

#[test]
fn upgrade_from_this_build_to_a_newer_one() {
    let newer = other_build();
    let site = Site::new();
    let s = site.server("versioned:app").start();
    // A signal before the master counts them ready would be refused.
    s.wait_log("Ready: ", LONG);
    assert_eq!(
        s.get("/").header("server"),
        Some(format!("ferricorn/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let load = Load::start(s.addr(), "/");
    site.install(&newer);
    s.signal(libc::SIGUSR2);
    let line = s.wait_log("Upgraded in place", LONG);
    assert!(
        line.contains(&format!(
            "ferricorn {} -> 99.0.0-upgrade-test",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    s.wait_log("Reload complete", LONG);
    load.wait_answered(100);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok");
    assert_eq!(
        s.get("/").header("server"),
        Some("ferricorn/99.0.0-upgrade-test")
    );
    // And back again (a downgrade speaks the same handover version).
    site.install(Path::new(bin()));
    s.signal(libc::SIGUSR2);
    let line = s.wait_count("Upgraded in place", 2, LONG);
    assert!(line.contains("99.0.0-upgrade-test -> "), "{line}");
}
