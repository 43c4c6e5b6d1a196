//! Shared by the tests that need a real systemd.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Inside the container: the test apps, readable by the units' user.
pub const APPS: &str = "/srv/ferricorn-apps";

/// A real systemd in systemd-nspawn (tests/systemd/container.sh); powered off on drop.
pub struct Container {
    name: String,
    pub leader: i32,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd/container.sh")
}

impl Container {
    pub fn boot(name: &str) -> Container {
        let out = Command::new(script())
            .args(["boot", name, env!("CARGO_MANIFEST_DIR")])
            .output()
            .expect("run container.sh");
        assert!(
            out.status.success(),
            "boot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let leader = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("leader pid");
        let c = Container {
            name: name.into(),
            leader,
        };
        // The repository is bind-mounted with its own mode, which may keep
        // out the units' unprivileged user (a clone in a `mktemp -d`
        // directory is 0700). The services run the test apps from a copy
        // they can read.
        c.ok(&format!(
            "cp -r /opt/ferricorn/tests/apps {APPS} && chmod -R a+rX {APPS}"
        ));
        c
    }

    /// Run a shell command inside; returns (exit code, stdout+stderr).
    pub fn sh(&self, cmd: &str) -> (i32, String) {
        let out = Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "/bin/sh", "-c", cmd])
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn ok(&self, cmd: &str) -> String {
        let (code, text) = self.sh(cmd);
        assert_eq!(code, 0, "`{cmd}` failed:\n{text}");
        text
    }

    pub fn write(&self, path: &str, content: &str) {
        self.ok(&format!(
            "mkdir -p $(dirname {path}) && cat > {path} <<'FERRICORN_EOF'\n{content}\nFERRICORN_EOF"
        ));
    }

    /// Wait until a unit property has `value` (systemd state changes trail the socket traffic).
    pub fn wait_prop(&self, unit: &str, prop: &str, value: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let now = self.prop(unit, prop);
            if now == value {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{unit} {prop}={now}, expected {value}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.name]).status();
    }
}
