//! `--reload` (development): editing the app's source, or a
//! `--reload-extra-file`, reloads the workers (new ones first), so the next
//! answers come from the new code and no request fails meanwhile.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Write as editors do: a new file renamed over the old one.
fn edit(path: &Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn app_source(answer: &str) -> String {
    format!(
        "import pathlib\n\
         EXTRA = pathlib.Path(__file__).with_name('extra.txt').read_text().strip()\n\
         def app(environ, start_response):\n\
         \x20   start_response('200 OK', [('Content-Type', 'text/plain')])\n\
         \x20   return [('{answer} ' + EXTRA).encode()]\n"
    )
}

/// Ask until the answer is `want`: it must come within 2 s of the edit.
fn answer_becomes(s: &Server, want: &str) {
    let edited = Instant::now();
    loop {
        let r = s.get("/");
        if r.status == 200 && r.text() == want {
            return;
        }
        assert!(
            edited.elapsed() < Duration::from_secs(2),
            "still {:?} after {:?}; log:\n{}",
            r.text(),
            edited.elapsed(),
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn editing_the_app_or_an_extra_file_changes_the_answer_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("reloadable.py");
    let extra = dir.path().join("extra.txt");
    std::fs::write(&extra, "v1").unwrap();
    std::fs::write(&app, app_source("one")).unwrap();
    let s = command()
        .args(["-b", "127.0.0.1:0", "-w", "2", "-k", "gthread", "--reload"])
        .args(["--reload-extra-file", &extra.display().to_string()])
        .args([
            "--chdir",
            &dir.path().display().to_string(),
            "reloadable:app",
        ])
        .wait_workers(2)
        .start();
    s.wait_log("Ready: 2 workers accepting", Duration::from_secs(30));
    assert_eq!(s.get("/").text(), "one v1");
    let load = Load::start(s.addr(), "/");
    load.wait_answered(20);

    edit(&app, &app_source("second"));
    answer_becomes(&s, "second v1");
    s.wait_log("reloadable.py modified", Duration::from_secs(10));
    s.wait_count("Reload complete", 1, Duration::from_secs(30));

    edit(&extra, "v2");
    answer_becomes(&s, "second v2");
    s.wait_count("Reload complete", 2, Duration::from_secs(30));
    load.wait_answered(20);
    let (ok, failed) = load.finish();
    assert_eq!(failed, 0, "{ok} ok; log:\n{}", s.log_text());
    // One reload per edit, though every worker saw each (the others'
    // word arrives during the reload, or from the old generation).
    assert_eq!(s.count("Reloading: worker"), 2, "{}", s.log_text());
}
