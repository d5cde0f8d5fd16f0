//! Replacing one file atomically and durably, never through a symlink.
//!
//! k3s's CNI dir is full of symlinks to its multi-call `cni` binary
//! (DESIGN.md §2): opening such a name for writing would overwrite k3s
//! itself. So nothing existing is ever opened for writing: the content
//! goes to a new temp file in the same directory (O_EXCL, so not even a
//! planted symlink is followed), is fsynced, and is renamed over the name.
//! rename(2) replaces the directory entry, which unlinks a symlink rather
//! than following it, and leaves no moment without a file: containerd may
//! exec the binary or read the conflist at any time.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What [`replace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file already had this content and mode: nothing was touched.
    Unchanged,
    Written,
    /// A symlink (pointing here) was replaced; its target was not touched.
    ReplacedSymlink(PathBuf),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Unchanged => write!(f, "unchanged"),
            Outcome::Written => write!(f, "written"),
            Outcome::ReplacedSymlink(t) => write!(
                f,
                "written (replaced a symlink to {}; its target is untouched)",
                t.display()
            ),
        }
    }
}

/// Makes `path` a regular file holding `bytes` with `mode`, atomically;
/// a no-op when it already is one.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<Outcome> {
    let (dir, name) = match (path.parent(), path.file_name()) {
        (Some(d), Some(n)) => (d, n.to_string_lossy()),
        _ => {
            return Err(Error::Usage(format!(
                "{} is not a file path",
                path.display()
            )))
        }
    };
    let symlink = match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Some(fs::read_link(path).map_err(|e| Error::io("readlink", path.display(), e))?)
        }
        Ok(m) if m.is_file() => {
            let same_mode = m.permissions().mode() & 0o7777 == mode;
            if same_mode
                && m.len() == bytes.len() as u64
                && fs::read(path).is_ok_and(|b| b == bytes)
            {
                return Ok(Outcome::Unchanged);
            }
            None
        }
        Ok(_) => {
            return Err(Error::Usage(format!(
                "{} exists and is not a regular file or symlink; remove it first",
                path.display()
            )))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("stat", path.display(), e)),
    };
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir.display(), e))?;
    // A dot name with a suffix no runtime reads (libcni takes only .conf,
    // .conflist and .json), unique per process.
    let tmp = dir.join(format!(".{name}.flatlan-tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // a leftover of a killed run with our pid
    let written = write_new(&tmp, bytes, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path.display(), e))
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(match symlink {
        Some(t) => Outcome::ReplacedSymlink(t),
        None => Outcome::Written,
    })
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| Error::io("create", tmp.display(), e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", tmp.display(), e))?;
    // The umask may have narrowed the mode given to open.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", tmp.display(), e))?;
    f.sync_all()
        .map_err(|e| Error::io("fsync", tmp.display(), e))
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir.display(), e))
}

/// Removes `path` if it is a regular file; a symlink there is someone
/// else's (k3s re-creates its own) and is left alone. Returns what it did.
pub fn remove_regular(path: &Path) -> Result<&'static str> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            fs::remove_file(path).map_err(|e| Error::io("remove", path.display(), e))?;
            if let Some(d) = path.parent() {
                sync_dir(d)?;
            }
            Ok("removed")
        }
        Ok(_) => Ok("left alone (no longer a regular file, so not flatlan's)"),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok("already gone"),
        Err(e) => Err(Error::io("stat", path.display(), e)),
    }
}
