//! The record of what `flatlan install` wrote, so that `uninstall` removes
//! exactly those files and nothing another CNI (or k3s) owns. Paths are
//! host paths: the record stays valid whether the installer ran in the
//! init container (`--root /host`) or by hand.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files;
use super::layout::under;
use crate::error::{Error, Result};

pub const FILE_NAME: &str = "installed.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Conflists come first: uninstall removes them before the binary, so
    /// no new pod is sent to a plugin that is about to vanish.
    #[serde(default)]
    pub conflists: Vec<PathBuf>,
    #[serde(default)]
    pub binaries: Vec<PathBuf>,
}

impl Installed {
    /// The recorded files, in removal order.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.conflists.iter().chain(self.binaries.iter())
    }

    /// Both records' files, each once.
    pub fn union(&self, other: &Installed) -> Installed {
        let merge = |a: &[PathBuf], b: &[PathBuf]| {
            let mut v = a.to_vec();
            v.extend(b.iter().filter(|p| !a.contains(p)).cloned());
            v
        };
        Installed {
            conflists: merge(&self.conflists, &other.conflists),
            binaries: merge(&self.binaries, &other.binaries),
        }
    }

    /// The record under `root`; an absent record is an empty one.
    pub fn load(root: &Path, state_dir: &Path) -> Result<Installed> {
        let path = under(root, &state_dir.join(FILE_NAME));
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Decode(format!(
                    "{}: {e} (flatlan's install record; fix or delete it)",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Installed::default()),
            Err(e) => Err(Error::io("read", path.display(), e)),
        }
    }

    /// Written before the files it names, so a crash in between still
    /// leaves a record uninstall can act on.
    pub fn store(&self, root: &Path, state_dir: &Path) -> Result<files::Outcome> {
        let path = under(root, &state_dir.join(FILE_NAME));
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Decode(format!("install record: {e}")))?;
        text.push('\n');
        files::replace(&path, text.as_bytes(), 0o644)
    }

    pub fn remove(root: &Path, state_dir: &Path) -> Result<&'static str> {
        files::remove_regular(&under(root, &state_dir.join(FILE_NAME)))
    }
}
