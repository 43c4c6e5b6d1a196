//! The deb and rpm packages: what is in them, and (in a real systemd
//! container) that installing, upgrading under load, removing and purging the
//! deb do what an administrator expects.

mod common;

use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

struct Packages {
    deb: PathBuf,
    deb_newer: PathBuf,
    rpm: PathBuf,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build both packages once, as the README says, in a target dir of their own
/// (the test run holds the lock on the main one).
fn packages() -> &'static Packages {
    static P: OnceLock<Packages> = OnceLock::new();
    P.get_or_init(|| {
        let target = root().join("target/package-build");
        let out = root().join("target/packages");
        std::fs::create_dir_all(&out).unwrap();
        let cargo = env!("CARGO");
        run(Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(root())
            .env("CARGO_TARGET_DIR", &target));
        let deb = out.join("ferricorn_0.1.0-1_amd64.deb");
        let deb_newer = out.join("ferricorn_0.1.0-2_amd64.deb");
        for (path, version) in [(&deb, "0.1.0-1"), (&deb_newer, "0.1.0-2")] {
            run(Command::new(cargo)
                .args(["deb", "--no-build", "--deb-version", version, "--output"])
                .arg(path)
                .current_dir(root())
                .env("CARGO_TARGET_DIR", &target));
        }
        run(Command::new(cargo)
            .args(["generate-rpm", "--target-dir"])
            .arg(&target)
            .arg("--output")
            .arg(&out)
            .current_dir(root()));
        let rpm = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "rpm"))
            .expect("an .rpm");
        Packages {
            deb,
            deb_newer,
            rpm,
        }
    })
}

const FILES: &[&str] = &[
    "/usr/bin/ferricorn",
    "systemd/system/ferricorn@.service",
    "systemd/system/ferricorn@.socket",
    "/usr/lib/sysusers.d/ferricorn.conf",
    "/usr/lib/tmpfiles.d/ferricorn.conf",
    "/etc/ferricorn/example.toml",
    "/usr/share/man/man1/ferricorn.1",
    "/usr/share/man/man5/ferricorn.toml.5",
    "/usr/share/man/man7/ferricorn-deploy.7",
    "/usr/share/bash-completion/completions/ferricorn",
    "_ferricorn",
    "/usr/share/fish/vendor_completions.d/ferricorn.fish",
    "/usr/share/doc/ferricorn/README.md",
    "/usr/share/doc/ferricorn/CHANGELOG.md",
];

#[test]
fn deb_contents_dependencies_and_scripts() {
    let p = packages();
    let list = run(Command::new("dpkg-deb").arg("-c").arg(&p.deb));
    for f in FILES {
        assert!(list.contains(f), "{f} missing from the deb:\n{list}");
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&p.deb));
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("{info}"));
    // The interpreter is linked in; its standard library comes from Debian.
    assert!(depends.contains("libpython3.11-stdlib"), "{depends}");
    // The rest is computed from what the binary links.
    assert!(
        depends.contains("libc6") && depends.contains("libexpat1"),
        "{depends}"
    );
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&p.deb)
        .arg(dir.path()));
    let conffiles = std::fs::read_to_string(dir.path().join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/ferricorn/example.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(dir.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("systemd-sysusers ferricorn.conf")
            && postinst.contains("systemctl reload"),
        "{postinst}"
    );
    assert!(
        !postinst.contains("systemctl start") && !postinst.contains("enable"),
        "installing starts nothing"
    );
    let prerm = std::fs::read_to_string(dir.path().join("prerm")).unwrap();
    assert!(prerm.contains("remove|deconfigure") && prerm.contains("systemctl stop"));
    let postrm = std::fs::read_to_string(dir.path().join("postrm")).unwrap();
    assert!(postrm.contains("rm -rf /etc/ferricorn"));
}

#[test]
fn rpm_contents_requirements_and_scriptlets() {
    let p = packages();
    let list = run(Command::new("rpm").args(["-qlp"]).arg(&p.rpm));
    for f in FILES {
        assert!(list.contains(f), "{f} missing from the rpm:\n{list}");
    }
    assert!(list.contains("/usr/lib/systemd/system/ferricorn@.service"));
    let config = run(Command::new("rpm").args(["-qcp"]).arg(&p.rpm));
    assert!(config.contains("/etc/ferricorn/example.toml"), "{config}");
    let requires = run(Command::new("rpm").args(["-qp", "--requires"]).arg(&p.rpm));
    // Built here the interpreter is linked in (no libpython.so to require);
    // built on RHEL it links the shared one and rpm adds that requirement.
    assert!(requires.contains("python(abi) = 3.11"), "{requires}");
    assert!(requires.contains("libc.so.6"), "{requires}");
    let scripts = run(Command::new("rpm").args(["-qp", "--scripts"]).arg(&p.rpm));
    assert!(
        scripts.contains("postinstall scriptlet") && scripts.contains("systemctl reload"),
        "{scripts}"
    );
    assert!(
        scripts.contains("preuninstall scriptlet") && scripts.contains("systemctl stop"),
        "{scripts}"
    );
    assert!(
        scripts.contains("postuninstall scriptlet") && scripts.contains("daemon-reload"),
        "{scripts}"
    );
}

/// One request over a unix socket on a new connection.
fn unix_get(path: &Path) -> Option<u16> {
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    parse_response(&buf, false).map(|r| r.0.status)
}

#[test]
fn deb_install_upgrade_under_load_remove_and_purge_in_systemd() {
    let p = packages();
    let c = systemd_container::Container::boot(&format!("ferricorn-pkg-{}", std::process::id()));
    let rel = |path: &Path| {
        format!(
            "/opt/ferricorn/{}",
            path.strip_prefix(root()).unwrap().display()
        )
    };

    c.ok(&format!("dpkg -i {}", rel(&p.deb)));
    assert!(
        c.ok("systemctl list-units --all --plain --no-legend 'ferricorn@*'")
            .trim()
            .is_empty(),
        "installing starts nothing"
    );
    assert!(c.ok("getent passwd ferricorn").starts_with("ferricorn:"));
    c.write(
        "/etc/ferricorn/shop.toml",
        "app = \"conformance:app\"\nchdir = \"/srv/ferricorn-apps\"\nworkers = 2\nworker_class = \"gthread\"\n",
    );
    c.ok("systemctl enable --now ferricorn@shop.socket");
    let r = c.ok("curl -s -o /dev/null -w '%{http_code}' --unix-socket /run/ferricorn/shop.sock http://x/pid");
    assert_eq!(r, "200");
    let main_pid = c.prop("ferricorn@shop.service", "MainPID");
    let sock = PathBuf::from(format!("/proc/{}/root/run/ferricorn/shop.sock", c.leader));

    // A client keeps sending requests over the socket while the newer package is installed.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed, sock) = (stop.clone(), ok.clone(), failed.clone(), sock.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match unix_get(&sock) {
                        Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    c.ok(&format!("dpkg -i {}", rel(&p.deb_newer)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c
        .ok("journalctl -u ferricorn@shop.service --no-pager -o cat")
        .contains("Reload complete")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            c.ok("journalctl -u ferricorn@shop.service --no-pager -o cat")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} ok",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(c.ok("dpkg-query -W -f='${Version}' ferricorn"), "0.1.0-2");
    assert_eq!(
        c.prop("ferricorn@shop.service", "MainPID"),
        main_pid,
        "upgraded in place, same PID"
    );
    assert_eq!(c.prop("ferricorn@shop.service", "NRestarts"), "0");
    let journal = c.ok("journalctl -u ferricorn@shop.service --no-pager -o cat");
    assert!(journal.contains("Upgraded in place"), "{journal}");
    assert!(!journal.contains("Stopping ferricorn@shop"), "{journal}");
    let running = c
        .ok(&format!("stat -L -c %i /proc/{main_pid}/exe"))
        .trim()
        .to_string();
    let installed = c.ok("stat -c %i /usr/bin/ferricorn").trim().to_string();
    assert_eq!(
        running, installed,
        "the service runs the newly installed file"
    );

    // Removing stops the instance and keeps the configuration; purging removes it.
    c.ok("dpkg -r ferricorn");
    assert_eq!(c.prop("ferricorn@shop.service", "ActiveState"), "inactive");
    assert_eq!(c.prop("ferricorn@shop.socket", "ActiveState"), "inactive");
    c.ok("test -f /etc/ferricorn/shop.toml");
    c.ok("dpkg -P ferricorn");
    c.ok("test ! -e /etc/ferricorn");
    c.ok("test ! -e /etc/systemd/system/sockets.target.wants/ferricorn@shop.socket");
}

#[path = "systemd/container.rs"]
mod systemd_container;
