//! The man pages render cleanly and match what the binary does.

use std::path::Path;
use std::process::Command;

fn man_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("man")
}

#[test]
fn every_man_page_renders_without_warnings() {
    let mut pages = 0;
    for entry in std::fs::read_dir(man_dir()).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man (man-db) is installed by scripts/install-deps.sh");
        assert!(out.status.success(), "{}", path.display());
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{}: {warnings}", path.display());
        assert!(
            out.stdout.len() > 1000,
            "{} rendered almost nothing",
            path.display()
        );
        pages += 1;
    }
    assert_eq!(
        pages, 3,
        "ferricorn(1), ferricorn.toml(5), ferricorn-deploy(7)"
    );
}

#[test]
fn the_deploy_page_describes_the_shipped_units() {
    let page = std::fs::read_to_string(man_dir().join("ferricorn-deploy.7")).unwrap();
    let service = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ferricorn@.service"),
    )
    .unwrap();
    assert!(service.contains("ExecReload=/bin/kill -USR2 $MAINPID"));
    assert!(page.contains("systemctl reload ferricorn@shop\\fR upgrades in place"));
    for setting in [
        "WatchdogSec=30",
        "ProtectSystem=strict",
        "MemoryDenyWriteExecute=yes",
        "PrivateUsers=yes",
    ] {
        assert!(service.contains(setting), "{setting} not in the unit");
        let shown = setting.replace('-', "\\-");
        assert!(
            page.contains(&shown),
            "{setting} not in ferricorn-deploy(7)"
        );
    }
}
