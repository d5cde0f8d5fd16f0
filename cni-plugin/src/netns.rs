//! Running code inside a pod's network namespace.
//!
//! `setns(2)` changes the calling thread's namespace. Doing that on a thread
//! a runtime might reuse leaks the namespace into unrelated work, so each
//! call gets a fresh thread that exits afterwards (STYLE.md rule 4).
//! Sockets keep the namespace they were created in, which is how the
//! returned netlink socket keeps working on the main thread.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};

/// Opens a network namespace file. A missing file means the container is
/// gone (CNI code 3).
pub fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::UnknownContainer(path.display().to_string()),
        _ => Error::io("open netns", path.display(), e),
    })
}

/// Runs `f` on a new thread inside the namespace behind `ns`.
pub fn run_in<T: Send>(ns: &File, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::io("setns", "pod network namespace", std::io::Error::from(e))
            })?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::TryAgain("netns worker thread panicked".into())))
    })
}
