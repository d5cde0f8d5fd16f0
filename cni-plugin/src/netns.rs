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
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};

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

/// Refuses the plugin's own network namespace (the node's): ADD would
/// configure the node as if it were a pod. Namespaces are the same when
/// their nsfs inodes are (what `ip netns identify` compares).
pub fn refuse_own(ns: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| Error::io("stat", "/proc/self/ns/net", e))?;
    let pod = ns
        .metadata()
        .map_err(|e| Error::io("stat", path.display(), e))?;
    if (pod.dev(), pod.ino()) == (own.dev(), own.ino()) {
        return Err(Error::InvalidEnv {
            var: "CNI_NETNS",
            reason: format!(
                "{} is the plugin's own network namespace (the node's), not a pod's; nothing was changed",
                path.display()
            ),
        });
    }
    Ok(())
}

/// A thread inside a pod's namespace that was started ahead of need: it
/// entered the namespace and ran its first step while the caller did other
/// work, and runs its second step when [`Pending::finish`] is called.
pub struct Pending<'scope, U> {
    go: mpsc::Sender<()>,
    worker: ScopedJoinHandle<'scope, Result<U>>,
}

impl<U> Pending<'_, U> {
    /// Lets the second step run and waits for it.
    pub fn finish(self) -> Result<U> {
        // A send can only fail if the thread already returned (its first
        // step failed); join reports that error.
        let _ = self.go.send(());
        joined(self.worker.join())
    }
}

/// Starts a thread in the namespace behind `ns` that runs `early` at once,
/// then waits for [`Pending::finish`] to run `late`. ADD starts it before
/// allocating, so the thread's start, the `setns` and the pod's netlink
/// socket (about a quarter of a millisecond together, on the critical path
/// when done in order) overlap the store's fsync. Dropping the `Pending`
/// unfinished ends the thread without running `late`.
pub fn start_in<'scope, T, U: Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    ns: &'scope File,
    early: impl FnOnce() -> Result<T> + Send + 'scope,
    late: impl FnOnce(T) -> Result<U> + Send + 'scope,
) -> Pending<'scope, U> {
    let (go, wait) = mpsc::channel();
    let worker = scope.spawn(move || {
        enter(ns)?;
        let t = early()?;
        wait.recv()
            .map_err(|_| Error::TryAgain("ADD ended before the pod side was needed".into()))?;
        late(t)
    });
    Pending { go, worker }
}

fn enter(ns: &File) -> Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::io("setns", "pod network namespace", std::io::Error::from(e)))
}

fn joined<T>(r: std::thread::Result<Result<T>>) -> Result<T> {
    r.unwrap_or_else(|_| Err(Error::TryAgain("netns worker thread panicked".into())))
}

/// Runs `f` on a new thread inside the namespace behind `ns`.
pub fn run_in<T: Send>(ns: &File, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        joined(
            s.spawn(|| {
                enter(ns)?;
                f()
            })
            .join(),
        )
    })
}

/// setns(2) into our own namespace needs root but changes nothing, so these
/// run anywhere the privileged suites run.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Fails with the reason, not a bare EPERM from setns, when not root.
    fn own_netns() -> File {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the netns tests call setns(2) and need root: run them via scripts/test"
        );
        File::open("/proc/self/ns/net").expect("own netns")
    }

    #[test]
    fn the_own_namespace_is_refused_and_another_is_not() {
        let own = File::open("/proc/self/ns/net").expect("own netns");
        let e = refuse_own(&own, Path::new("/proc/self/ns/net")).unwrap_err();
        assert_eq!(e.code(), 4, "{e}");
        assert!(e.to_string().contains("own network namespace"), "{e}");
        // Any other namespace passes; the init process's is another one
        // only inside a container, so compare with a file that is no netns.
        let other = File::open("/dev/null").expect("/dev/null");
        refuse_own(&other, Path::new("/dev/null")).expect("not our namespace");
    }

    #[test]
    fn the_early_step_runs_at_once_and_the_late_one_on_finish() {
        let ns = own_netns();
        let early_done = AtomicBool::new(false);
        let late_done = AtomicBool::new(false);
        let got = std::thread::scope(|s| {
            let p = start_in(
                s,
                &ns,
                || {
                    early_done.store(true, Ordering::SeqCst);
                    Ok(20)
                },
                |t| {
                    late_done.store(true, Ordering::SeqCst);
                    Ok(t + 1)
                },
            );
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !early_done.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert!(early_done.load(Ordering::SeqCst), "early step never ran");
            assert!(!late_done.load(Ordering::SeqCst), "late step ran unasked");
            p.finish()
        });
        assert_eq!(got.expect("finish"), 21);
    }

    #[test]
    fn an_unfinished_thread_ends_without_its_late_step() {
        let ns = own_netns();
        let late_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let p = start_in(
                s,
                &ns,
                || Ok(()),
                |()| {
                    late_done.store(true, Ordering::SeqCst);
                    Ok(())
                },
            );
            drop(p);
        });
        assert!(!late_done.load(Ordering::SeqCst));
    }

    #[test]
    fn an_early_failure_is_what_finish_returns() {
        let ns = own_netns();
        let r: Result<()> = std::thread::scope(|s| {
            start_in(
                s,
                &ns,
                || Err::<(), _>(Error::TryAgain("early".into())),
                |()| Ok(()),
            )
            .finish()
        });
        assert!(matches!(r, Err(Error::TryAgain(m)) if m == "early"));
    }
}
