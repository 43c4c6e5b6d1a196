//! `--reload` (development): a worker watches the source files of every
//! module its app imported, and `--reload-extra-file`s, with inotify; the
//! first change asks the master for a reload (as HUP does: new workers
//! import the code anew, then the old ones finish and leave), so no request
//! is lost while editing. gunicorn's inotify reloader watches the same
//! files; it restarts only the worker that saw the change.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use pyo3::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The files of the modules imported so far (with the GIL).
pub fn module_files(py: Python<'_>) -> PyResult<Vec<PathBuf>> {
    let code = c"
import sys
def files():
    out = []
    for m in list(sys.modules.values()):
        f = getattr(m, '__file__', None)
        if isinstance(f, str):
            out.append(f)
    return out
";
    let module =
        pyo3::types::PyModule::from_code(py, code, c"ferricorn_reload.py", c"ferricorn_reload")?;
    let files: Vec<String> = module.getattr("files")?.call0()?.extract()?;
    Ok(files.into_iter().map(PathBuf::from).collect())
}

/// Watch `files` from a thread of their own; `changed` runs once, with the
/// first file that changed.
pub fn watch(
    files: Vec<PathBuf>,
    changed: impl FnOnce(&Path) + Send + 'static,
) -> std::io::Result<()> {
    // inotify watches directories: a file replaced by an editor's rename
    // is a new inode a file watch would lose.
    let mut by_dir: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
    for f in files {
        let f = std::fs::canonicalize(&f).unwrap_or(f);
        if let (Some(dir), Some(name)) = (f.parent(), f.file_name()) {
            by_dir
                .entry(dir.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
        }
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let mut watched = BTreeMap::new();
    let flags = AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE;
    for (dir, names) in by_dir {
        match inotify.add_watch(&dir, flags) {
            Ok(wd) => {
                watched.insert(wd, (dir, names));
            }
            // A module from a zip, or a directory gone: nothing to watch there.
            Err(e) => crate::debug!("reload: cannot watch {}: {e}", dir.display()),
        }
    }
    std::thread::Builder::new()
        .name("ferricorn-reload".into())
        .spawn(move || {
            loop {
                let Ok(events) = inotify.read_events() else {
                    return;
                };
                for e in events {
                    let (Some((dir, names)), Some(name)) = (watched.get(&e.wd), &e.name) else {
                        continue;
                    };
                    if names.contains(name) {
                        changed(&dir.join(name));
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
