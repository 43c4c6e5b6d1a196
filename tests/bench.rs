//! The benchmark scripts keep working: `bench/run.sh --smoke` starts every
//! server of every scenario, loads each for a second (the idle and slow
//! client scenarios with a tenth of their connections), and prints one
//! table per scenario. Timings are not checked (on a shared machine they are too
//! noisy for pass or fail); that every server started and answered, that
//! ferricorn answered without errors, and that its `READY=1` was timed, is.

use std::path::Path;
use std::process::{Command, Stdio};

/// One row of a table: the server's name and its cells, in column order.
struct Row {
    scenario: String,
    server: String,
    cells: Vec<String>,
}

impl Row {
    fn cell(&self, header: &[String], column: &str) -> &str {
        let i = header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column:?} in {header:?}"));
        &self.cells[i]
    }

    fn number(&self, header: &[String], column: &str) -> f64 {
        let cell = self.cell(header, column);
        cell.parse().unwrap_or_else(|_| {
            panic!(
                "{} / {}: {column} is {cell:?}, not a number",
                self.scenario, self.server
            )
        })
    }
}

/// The tables of `bench.py`'s output: each with its header.
fn tables(out: &str) -> Vec<(Vec<String>, Vec<Row>)> {
    let mut tables = Vec::new();
    let mut scenario = String::new();
    for line in out.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            scenario = title.to_owned();
            continue;
        }
        let Some(inner) = line.strip_prefix("| ").and_then(|l| l.strip_suffix(" |")) else {
            continue;
        };
        let cells: Vec<String> = inner.split(" | ").map(|c| c.trim().to_owned()).collect();
        if cells[0] == "server" {
            tables.push((cells, Vec::new()));
        } else if let Some((_, rows)) = tables.last_mut() {
            rows.push(Row {
                scenario: scenario.clone(),
                server: cells[0].clone(),
                cells,
            });
        }
    }
    tables
}

#[test]
fn every_server_of_every_scenario_starts_and_is_measured() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The running test holds cargo's lock on target/; build where the
    // package tests build their release binary.
    let out = Command::new("bash")
        .arg(root.join("bench/run.sh"))
        .arg("--smoke")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target/package-build"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running bench/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Shown when the test fails (or with --nocapture).
    println!("{stdout}");
    assert!(
        out.status.success(),
        "bench/run.sh --smoke failed:\n{stdout}"
    );
    assert!(
        !stdout.contains("failed to start"),
        "a server did not start:\n{stdout}"
    );

    let tables = tables(&stdout);
    // One table per scenario of bench.py, each with its servers.
    assert_eq!(tables.len(), 20, "{stdout}");
    let mut ferricorns = 0;
    for (header, rows) in &tables {
        assert!(rows.len() >= 3, "{header:?}: {} rows\n{stdout}", rows.len());
        for row in rows {
            assert_eq!(row.cells.len(), header.len(), "{}", row.server);
            ferricorns += usize::from(row.server.starts_with("ferricorn"));
            if header.iter().any(|h| h == "KB per connection") {
                held_connections(header, row);
            } else if header.iter().any(|h| h == "slow connections") {
                beside_slow_clients(header, row);
            } else {
                under_load(header, row);
            }
        }
    }
    // sync and gthread in nine WSGI scenarios, gevent in plain and Flask
    // hello, gthread with metrics and with an access log and with 4 workers
    // (twice), gthread and gevent in slow I/O, asgi in three,
    // gthread, gevent and asgi with idle connections and with slow clients,
    // gthread over HTTPS and over HTTP/2.
    assert_eq!(
        ferricorns,
        2 * 9 + 2 + 2 + 2 + 2 + 3 + 3 + 3 + 2,
        "{stdout}"
    );
}

/// A row of a wrk or `loadgen close` scenario.
fn under_load(header: &[String], row: &Row) {
    let what = format!("{} / {}", row.scenario, row.server);
    assert!(row.number(header, "req/s") > 0.0, "{what}");
    assert!(row.number(header, "RSS MB") > 0.0, "{what}");
    // A number below the run's limit: a server up within 5 ms shows 0.00.
    let up = row.number(header, "ready s");
    assert!((0.0..30.0).contains(&up), "{what}: up after {up} s");
    let ready = row.cell(header, "READY=1 s");
    if row.server.starts_with("ferricorn") {
        assert_eq!(row.number(header, "errors"), 0.0, "{what}");
        let notified = row.number(header, "READY=1 s");
        assert!(
            (0.0..30.0).contains(&notified),
            "{what}: READY=1 after {ready} s"
        );
    } else {
        // Only ferricorn speaks sd_notify.
        assert_eq!(ready, "–", "{what}");
    }
}

/// A row of the idle keep-alive scenario: every connection was opened and
/// answered, and ferricorn kept them all open while it was measured.
fn held_connections(header: &[String], row: &Row) {
    let what = format!("{} / {}", row.scenario, row.server);
    let held = row.number(header, "held");
    assert!(held > 0.0, "{what}");
    row.number(header, "KB per connection");
    if row.server.starts_with("ferricorn") {
        assert_eq!(row.number(header, "still open after"), held, "{what}");
    }
}

/// A row of the slow-client scenario: the slow clients connected, normal
/// clients were answered, and none failed on ferricorn.
fn beside_slow_clients(header: &[String], row: &Row) {
    let what = format!("{} / {}", row.scenario, row.server);
    assert!(row.number(header, "slow connections") > 0.0, "{what}");
    assert!(row.number(header, "normal req/s") > 0.0, "{what}");
    row.number(header, "p99 ms");
    if row.server.starts_with("ferricorn") {
        assert_eq!(row.number(header, "failed"), 0.0, "{what}");
    }
}
