//! Private temporary directories (config files, leases, service files).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::names::state_dir;

/// A directory under the state dir, removed on drop. Its name starts with a
/// lab prefix so stale ones can be found after a crash.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(name: &str) -> Result<Self> {
        let path = state_dir().join(name);
        // A leftover from a dead process with a recycled PID would confuse
        // the daemons we point at it; start empty.
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(|e| Error::io(format!("remove old {}", path.display()), e))?;
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, file: &str, contents: &str) -> Result<PathBuf> {
        let p = self.path.join(file);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::fs::write(&p, contents).map_err(|e| Error::io(format!("write {}", p.display()), e))?;
        Ok(p)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove scratch dir");
            }
        }
    }
}
