//! ferricorn under a real systemd 252, booted in systemd-nspawn with the
//! project's unit files installed. One container serves the whole scenario;
//! each step says what it shows.

mod common;
#[path = "systemd/container.rs"]
mod systemd_container;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use systemd_container::Container;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<Response> {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    std::io::Write::write_all(
        &mut s,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).ok()?;
    parse_response(&buf, false).map(|r| r.0)
}

fn json_entries(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The unit's journal as JSON entries (large fields too), once one matches
/// `until`; waits for journald up to 10 s.
fn wait_entries(
    c: &Container,
    unit: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    wait_until_entries(c, unit, |entries| entries.iter().any(&until))
}

/// The unit's journal once `until` holds for its entries; up to 30 s.
fn wait_until_entries(
    c: &Container,
    unit: &str,
    until: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries =
            json_entries(&c.ok(&format!("journalctl -u {unit} -o json --all --no-pager")));
        if until(&entries) {
            return entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the journal of {unit} did not show what was awaited in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn under_real_systemd() {
    let c = Container::boot(&format!("ferricorn-test-{}", std::process::id()));
    let port = free_port();
    c.ok("install -m 755 /opt/ferricorn/target/debug/ferricorn /usr/bin/ferricorn");
    c.ok("install -m 644 /opt/ferricorn/systemd/ferricorn@.service /opt/ferricorn/systemd/ferricorn@.socket /etc/systemd/system/");
    c.write(
        "/etc/sysusers.d/ferricorn.conf",
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ferricorn.sysusers"),
        )
        .unwrap(),
    );
    c.ok("systemd-sysusers");
    c.write(
        "/etc/ferricorn/demo.toml",
        "app = \"conformance:app\"\nchdir = \"/srv/ferricorn-apps\"\nworkers = 2\nworker_class = \"gthread\"\nthreads = 4\naccesslog = \"-\"\n",
    );
    c.write(
        "/etc/systemd/system/ferricorn@demo.socket.d/tcp.conf",
        &format!("[Socket]\nListenStream=127.0.0.1:{port}\n"),
    );
    c.ok("systemctl daemon-reload");

    // Unit files pass systemd's own checks.
    let (_, verify) = c.sh("systemd-analyze verify /etc/systemd/system/ferricorn@.socket /etc/systemd/system/ferricorn@demo.service 2>&1");
    let problems: Vec<&str> = verify
        .lines()
        .filter(|l| !l.contains("Command 'man ") && !l.trim().is_empty())
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {verify}");
    let security =
        c.ok("systemd-analyze security ferricorn@demo.service --no-pager 2>&1 | tail -1");
    let exposure: f64 = security
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{security}"));
    assert!(exposure <= 2.5, "exposure {exposure}: {security}");

    // Socket activation: nothing runs until the first connection.
    c.ok("systemctl start ferricorn@demo.socket");
    assert_eq!(c.prop("ferricorn@demo.service", "ActiveState"), "inactive");
    let r = get(port, "/pid").expect("first connection answered");
    assert_eq!(r.status, 200);
    // READY=1 follows the workers' first accept by a moment.
    c.wait_prop("ferricorn@demo.service", "ActiveState", "active");
    let main_pid = c.prop("ferricorn@demo.service", "MainPID");
    let journal = c.ok("journalctl -u ferricorn@demo.service --no-pager -o cat");
    assert!(
        journal.contains("Adopted 2 inherited socket(s)"),
        "{journal}"
    );
    assert!(journal.contains("/run/ferricorn/demo.sock"), "{journal}");
    let r = c.ok("curl -s --unix-socket /run/ferricorn/demo.sock http://x/pid");
    assert!(r.trim().parse::<u32>().is_ok(), "{r}");
    // RuntimeDirectory= gives the control socket its default place.
    let status = c.ok("ferricorn ctl --socket /run/ferricorn/demo/ferricorn.ctl status");
    assert!(status.contains("2/2 workers serving"), "{status}");

    // STATUS= tells the truth about the pool.
    for _ in 0..3 {
        get(port, "/pid").unwrap();
    }
    // STATUS= changes at most once a second: wait for the count to show
    // these requests and the two before.
    let served = |status: &str| -> u64 {
        status
            .split(" requests served")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = c.prop("ferricorn@demo.service", "StatusText");
        if served(&status) >= 5 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.starts_with("2/2 workers ready,") && served(&status) >= 5,
        "{status}"
    );

    // Native journal entries with structured fields, one of them over the
    // datagram limit (it travels in a memfd).
    get(port, "/log?journal").unwrap();
    get(port, "/print?journal").unwrap();
    get(port, "/log-large?journal").unwrap();
    let entries = wait_entries(&c, "ferricorn@demo.service", |e| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("large entry journal"))
    });
    let large = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("large entry journal"))
        })
        .unwrap();
    let text = large["MESSAGE"].as_str().unwrap();
    assert!(text.len() > 300 * 1024, "{} bytes", text.len());
    assert!(text.ends_with("line 8499, in handler"), "cut short");
    assert!(large["WORKER_PID"].is_string());
    let access = entries
        .iter()
        .find(|e| e["HTTP_PATH"] == "/log" && e["FERRICORN_LOG"] == "access")
        .unwrap_or_else(|| panic!("no access entry: {entries:?}"));
    assert_eq!(access["HTTP_METHOD"], "GET");
    assert_eq!(access["HTTP_STATUS"], "200");
    assert_eq!(access["RESPONSE_BYTES"], "6");
    assert_eq!(access["REMOTE_ADDR"], "127.0.0.1");
    assert!(
        access["DURATION_US"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(access["PRIORITY"], "6");
    assert_eq!(access["SYSLOG_IDENTIFIER"], "ferricorn");
    assert!(
        access["MESSAGE"]
            .as_str()
            .unwrap()
            .contains("\"GET /log?journal HTTP/1.1\" 200"),
        "{access}"
    );
    let worker_pid = access["WORKER_PID"].as_str().unwrap().to_string();
    assert_eq!(access["_PID"], worker_pid.as_str());
    assert_ne!(worker_pid, main_pid);
    let app_log = entries
        .iter()
        .find(|e| e["MESSAGE"] == "app log line journal")
        .expect("app logging entry");
    assert_eq!(app_log["PRIORITY"], "4");
    assert!(app_log["WORKER_PID"].is_string());
    let printed = entries
        .iter()
        .find(|e| e["MESSAGE"] == "printed by the app journal")
        .expect("print() entry");
    assert_eq!(printed["_PID"], printed["WORKER_PID"]);
    let master_line = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("Booting worker"))
        })
        .unwrap();
    assert_eq!(master_line["_PID"], main_pid.as_str());
    assert!(master_line.get("WORKER_PID").is_none());

    // An asgi instance of the same template: READY after lifespan startup,
    // the same journal fields, lifespan shutdown on stop.
    let api_port = free_port();
    c.write(
        "/etc/ferricorn/api.toml",
        "app = \"asgi_raw:app\"\nchdir = \"/srv/ferricorn-apps\"\nworker_class = \"asgi\"\naccesslog = \"-\"\n",
    );
    c.write(
        "/etc/systemd/system/ferricorn@api.socket.d/tcp.conf",
        &format!("[Socket]\nListenStream=127.0.0.1:{api_port}\n"),
    );
    c.ok("systemctl daemon-reload");
    c.ok("systemctl start ferricorn@api.service");
    assert_eq!(c.prop("ferricorn@api.service", "ActiveState"), "active");
    assert_eq!(
        get(api_port, "/").expect("asgi answers").text(),
        "hello asgi"
    );
    let api = wait_entries(&c, "ferricorn@api.service", |e| {
        e["FERRICORN_LOG"] == "access" && e["HTTP_PATH"] == "/"
    });
    let startup = api
        .iter()
        .position(|e| e["MESSAGE"] == "Application startup complete.")
        .unwrap_or_else(|| panic!("no lifespan startup: {api:?}"));
    let ready = api
        .iter()
        .position(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.starts_with("Ready:"))
        })
        .expect("ready line");
    assert!(startup < ready, "lifespan startup before READY");
    let access = api
        .iter()
        .find(|e| e["FERRICORN_LOG"] == "access" && e["HTTP_PATH"] == "/")
        .unwrap_or_else(|| panic!("no asgi access entry: {api:?}"));
    assert_eq!(access["HTTP_STATUS"], "200");
    assert_eq!(access["RESPONSE_BYTES"], "10");
    assert_eq!(access["_PID"], access["WORKER_PID"]);
    c.ok("systemctl stop ferricorn@api.service ferricorn@api.socket");
    assert_eq!(c.prop("ferricorn@api.service", "Result"), "success");
    let journal = c.ok("journalctl -u ferricorn@api.service --no-pager -o cat");
    assert!(journal.contains("lifespan shutdown ran"), "{journal}");

    // A TLS instance: the socket unit is the plain one (TCP; TLS is
    // ferricorn's), and a key only root may read reaches the service's
    // unprivileged master through LoadCredential=.
    let pki = common::pki::Pki::new();
    let web_port = free_port();
    let read = |f: &str| std::fs::read_to_string(pki.path(f)).unwrap();
    c.write("/etc/ferricorn/web.pem", &read("server.pem"));
    c.write("/etc/ssl/private/web.key", &read("server.key"));
    c.ok("chmod 600 /etc/ssl/private/web.key && chmod 644 /etc/ferricorn/web.pem");
    c.write(
        "/etc/ferricorn/web.toml",
        "app = \"conformance:app\"\nchdir = \"/srv/ferricorn-apps\"\nworker_class = \"gthread\"\n\
         certfile = \"/etc/ferricorn/web.pem\"\n\
         keyfile = \"/run/credentials/ferricorn@web.service/tls.key\"\n\
         http_protocols = \"h2,h1\"\n",
    );
    c.write(
        "/etc/systemd/system/ferricorn@web.socket.d/tcp.conf",
        &format!("[Socket]\nListenStream=127.0.0.1:{web_port}\n"),
    );
    c.write(
        "/etc/systemd/system/ferricorn@web.service.d/tls.conf",
        "[Service]\nLoadCredential=tls.key:/etc/ssl/private/web.key\n",
    );
    c.ok("systemctl daemon-reload");
    c.ok("systemctl start ferricorn@web.socket");
    assert_eq!(c.prop("ferricorn@web.service", "ActiveState"), "inactive");
    let r = common::pki::client(&[
        "get",
        &format!("https://localhost:{web_port}/pid"),
        "--ca",
        &pki.arg("ca.pem"),
        "--http2",
    ]);
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["http_version"], "HTTP/2", "{r}");
    c.wait_prop("ferricorn@web.service", "ActiveState", "active");
    let journal = c.ok("journalctl -u ferricorn@web.service --no-pager -o cat");
    assert!(journal.contains("Adopted"), "{journal}");
    c.ok("systemctl stop ferricorn@web.service ferricorn@web.socket");
    assert_eq!(c.prop("ferricorn@web.service", "Result"), "success");

    // systemctl reload under load: no failed request, same main PID, no restart.
    let load = Load::start(format!("127.0.0.1:{port}").parse().unwrap(), "/pid");
    load.wait_answered(50);
    let completed = |e: &serde_json::Value| {
        e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("Reload complete"))
    };
    let before = json_entries(&c.ok("journalctl -u ferricorn@demo.service -o json --no-pager"))
        .iter()
        .filter(|e| completed(e))
        .count();
    for round in 1..=3 {
        // ExecReload sends USR2 and returns (systemd 252 has no
        // notify-reload): the journal says when the upgrade is done.
        c.ok("systemctl reload ferricorn@demo.service");
        wait_until_entries(&c, "ferricorn@demo.service", |entries| {
            entries.iter().filter(|e| completed(e)).count() >= before + round
        });
        load.wait_answered(50);
    }
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 50);
    assert_eq!(c.prop("ferricorn@demo.service", "MainPID"), main_pid);
    assert_eq!(c.prop("ferricorn@demo.service", "NRestarts"), "0");
    let journal = c.ok("journalctl -u ferricorn@demo.service --no-pager -o cat");
    assert_eq!(
        journal.matches("Upgraded in place").count(),
        3,
        "each reload is an in-place upgrade:\n{journal}"
    );
    c.wait_prop("ferricorn@demo.service", "ActiveState", "active");

    // systemctl stop lets an in-flight request complete.
    let inflight = std::thread::spawn(move || get(port, "/sleep-logged?2"));
    wait_entries(&c, "ferricorn@demo.service", |e| {
        e["MESSAGE"] == "sleeping 2"
    });
    c.ok("systemctl stop ferricorn@demo.service");
    let r = inflight
        .join()
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    assert_eq!(c.prop("ferricorn@demo.service", "Result"), "success");
    assert_eq!(c.prop("ferricorn@demo.service", "ExecMainStatus"), "0");
    // The socket stays with systemd: the next client starts the service again.
    assert_eq!(get(port, "/pid").map(|r| r.status), Some(200));
    c.ok("systemctl stop ferricorn@demo.service ferricorn@demo.socket");

    // READY=1 waits for the app: `systemctl start` of a 3 s import takes 3 s.
    c.write(
        "/etc/ferricorn/slow.toml",
        "app = \"slow_import:app\"\nchdir = \"/srv/ferricorn-apps\"\nraw_env = [\"SLOW_IMPORT_SECONDS=3\"]\n",
    );
    let t0 = Instant::now();
    c.ok("systemctl start ferricorn@slow.service");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "start returned after {took:?}, before the app was imported"
    );
    assert_eq!(c.prop("ferricorn@slow.service", "ActiveState"), "active");
    let r = c.ok("curl -s --unix-socket /run/ferricorn/slow.sock http://x/");
    assert_eq!(r, "finally");
    c.ok("systemctl stop ferricorn@slow.service ferricorn@slow.socket");

    // A frozen master stops the watchdog pings: systemd kills it (Result=watchdog).
    c.write(
        "/etc/ferricorn/dog.toml",
        "app = \"conformance:app\"\nchdir = \"/srv/ferricorn-apps\"\n",
    );
    c.write(
        "/etc/systemd/system/ferricorn@dog.service.d/watchdog.conf",
        "[Service]\nWatchdogSec=2\nRestart=no\n",
    );
    c.ok("systemctl daemon-reload && systemctl start ferricorn@dog.service");
    // The window under test: longer than WatchdogSec.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.prop("ferricorn@dog.service", "ActiveState"),
        "active",
        "pings keep a healthy service alive"
    );
    let pid = c.prop("ferricorn@dog.service", "MainPID");
    c.ok(&format!("kill -STOP {pid}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if c.prop("ferricorn@dog.service", "Result") == "watchdog" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no watchdog kill: {}",
            c.ok("systemctl status ferricorn@dog.service --no-pager || true")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let journal = c.ok("journalctl -u ferricorn@dog.service --no-pager -o cat");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
}
