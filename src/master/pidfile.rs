//! `--pid FILE`: written atomically, removed on exit if it is still ours.

use anyhow::Context;
use std::path::{Path, PathBuf};

pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> anyhow::Result<PidFile> {
        let pid = std::process::id();
        let tmp = path.with_extension(format!("tmp.{pid}"));
        std::fs::write(&tmp, format!("{pid}\n"))
            .with_context(|| format!("cannot write pid file {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot write pid file {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    pub fn remove(self) {
        let ours = std::fs::read_to_string(&self.path)
            .map(|s| s.trim() == std::process::id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
