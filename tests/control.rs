//! `ferricorn ctl` against a running server, every command.

mod common;

use common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn ctl(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_ctl_command_answers_with_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let mut s = server("conformance:app")
        .args(["-w", "2", "--control-socket", socket.to_str().unwrap()])
        .wait_workers(2)
        .start();
    s.wait_log("Ready: 2 workers accepting", LONG);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner-only");

    s.get("/pid");
    let o = ctl(&socket, &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let status = text(&o);
    assert!(status.contains("2/2 workers serving"), "{status}");
    assert_eq!(
        status.lines().filter(|l| l.contains(" serving ")).count(),
        2,
        "{status}"
    );

    // Workers report their counts with their heartbeat: the request shows
    // within one.
    let deadline = std::time::Instant::now() + LONG;
    let stats = loop {
        let o = ctl(&socket, &["stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if stats["requests"].as_u64().unwrap() >= 1 {
            break stats;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["serving"], 2);
    assert_eq!(stats["workers"].as_array().unwrap().len(), 2);

    // reload answers once the new workers are ready: the old ones are gone
    // from the pool by then.
    let old = s.workers();
    let o = ctl(&socket, &["reload"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).starts_with("reloaded: 2 new workers ready in "),
        "{}",
        text(&o)
    );
    assert!(s.log_text().contains("Reload complete"));
    let stats: serde_json::Value =
        serde_json::from_slice(&ctl(&socket, &["stats"]).stdout).unwrap();
    let serving: Vec<i64> = stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "serving")
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(serving.len(), 2);
    assert!(
        serving.iter().all(|p| !old.contains(&(*p as i32))),
        "{stats}"
    );

    let o = ctl(&socket, &["scale", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(text(&o).trim(), "scaled: 3 workers serving");
    let o = ctl(&socket, &["scale", "1"]);
    assert_eq!(text(&o).trim(), "scaled: 1 workers serving");

    let o = ctl(&socket, &["restart"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown command"), "{}", text(&o));

    let o = ctl(&socket, &["stop", "--graceful"]);
    assert!(text(&o).starts_with("stopping"), "{}", text(&o));
    assert!(s.wait_exit(LONG).success());
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[test]
fn upgrade_through_ctl_re_executes_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let s = server("conformance:app")
        .args(["--control-socket", socket.to_str().unwrap()])
        .start();
    // An upgrade is refused before the first workers are ready.
    s.wait_log("Ready: 1 workers accepting", LONG);
    let o = ctl(&socket, &["upgrade"]);
    assert!(text(&o).starts_with("upgrading"), "{}", text(&o));
    s.wait_log("Upgraded in place", LONG);
    s.wait_log("Reload complete", LONG);
    // The new image listens on the control socket again.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let o = ctl(&socket, &["status"]);
        if o.status.success() {
            assert!(
                text(&o).contains(&format!("(pid {})", s.pid)),
                "{}",
                text(&o)
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", text(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(
    not(feature = "full"),
    ignore = "full tier: acting as another user needs root"
)]
fn another_user_cannot_use_the_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    // The directory is open to all: only the socket's own mode keeps others out.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("ctl.sock");
    let s = server("conformance:app")
        .args(["--control-socket", socket.to_str().unwrap()])
        .start();
    s.wait_log("Control socket:", LONG);
    // A copy others may run: the build's own directory may be closed to them.
    let exe = dir.path().join("ferricorn");
    copy_executable(std::path::Path::new(bin()), &exe);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = Command::new(&exe)
        .args(["ctl", "--socket"])
        .arg(&socket)
        .arg("status")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!nobody.status.success());
    assert!(
        text(&nobody).contains("Permission denied"),
        "{}",
        text(&nobody)
    );
    assert!(ctl(&socket, &["status"]).status.success(), "its owner can");
}
