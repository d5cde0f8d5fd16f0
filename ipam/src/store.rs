//! The allocation store: one JSON document per network, guarded by an
//! exclusive `flock` and replaced atomically and durably on every change.
//!
//! Layout under `<data_dir>/<network>/`:
//! - `lock`: the flock target (never renamed, so every process locks the same inode);
//! - `state.json`: the current state, only ever replaced by `rename(2)`;
//! - `state.json.prev`: the state before the last commit, which the next
//!   commit overwrites.
//!
//! A commit writes `state.json.prev`, fsyncs it, renames it over `state.json`
//! and fsyncs the directory, so after a crash the file is either the old or
//! the new state, never a mix. The rename is `RENAME_EXCHANGE`: the old
//! state's inode becomes the next scratch file instead of being freed, so a
//! steady-state commit allocates no inode and frees no block. Both showed in
//! every ADD's profile: ext4 searching its inode bitmap past recently deleted
//! inodes, and, on a `discard` mount, a TRIM issued inside `rename(2)` for the
//! freed file. Readers take the lock shared, because the file a lockless
//! reader opened could be rewritten two commits later.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use tracing::error;

use crate::error::{Error, Result};
pub use crate::sticky::Sticky;

const STATE: &str = "state.json";
const STATE_PREV: &str = "state.json.prev";
const LOCK: &str = "lock";
const VERSION: u32 = 1;
/// The store holds pod names and namespaces: owner-only (issue 10, item 7).
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

mod recovery;
pub(crate) mod state;
pub use recovery::{decode, Unusable};
pub use state::{Allocation, PodRef, ProcId, Quarantine, State};

/// A handle on one network's store directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `network` is the CNI network name; it becomes a directory name, so it
    /// is restricted to a safe character set rather than trusted.
    pub fn new(data_dir: &Path, network: &str) -> Result<Store> {
        let ok = !network.is_empty()
            && network.len() <= 128
            && network != "."
            && network != ".."
            && network
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(Error::InvalidNetworkName(network.to_string()));
        }
        Ok(Store {
            dir: data_dir.join(network),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the exclusive lock and loads the state. The lock is held until
    /// the returned guard is dropped or committed.
    ///
    /// An unreadable `state.json` does not fail the command: it is moved
    /// aside and the store recovers (see `store/recovery.rs`), so that DEL, which
    /// must succeed, can always run (issue 10, item 3).
    pub fn lock(&self) -> Result<Locked> {
        let lock_path = self.dir.join(LOCK);
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(FILE_MODE)
                .open(&lock_path)
        };
        // The directory exists on every ADD but a node's first: try first.
        let file = match open() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.create_dir()?;
                open()
            }
            r => r,
        }
        .map_err(|e| Error::io("open", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Error::io("lock", &lock_path, errno.into()))?;
        self.tighten_modes(&lock)?;
        let (state, recovered) = recovery::load(&self.dir)?;
        let mut locked = Locked {
            _lock: lock,
            dir: self.dir.clone(),
            state,
            recovered,
        };
        if let Some(e) = &locked.recovered {
            error!("{e}");
            // Recovered at once, not at the next change: a DEL that frees
            // nothing commits nothing, and the moved-aside file must not
            // leave the store without a state.json.
            locked.commit()?;
        }
        Ok(locked)
    }

    /// The store holds pod names: its directory is 0700 and its files 0600.
    /// The parents (the data directory) keep the usual modes.
    fn create_dir(&self) -> Result<()> {
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        match fs::DirBuilder::new().mode(DIR_MODE).create(&self.dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                Err(Error::io("create", &self.dir, e))
            }
            _ => Ok(()),
        }
    }

    /// Stores made before the modes were tightened had 0755 and 0644: the
    /// lock file's mode (one `fstat` per command) tells, and fixes them once.
    fn tighten_modes(&self, lock: &File) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mode = lock
            .metadata()
            .map_err(|e| Error::io("stat", self.dir.join(LOCK), e))?
            .permissions()
            .mode();
        if mode & 0o777 == FILE_MODE {
            return Ok(());
        }
        let set = |p: &Path, m: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(m))
                .map_err(|e| Error::io("chmod", p, e))
        };
        set(&self.dir, DIR_MODE)?;
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("read", &self.dir, e))?;
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                set(&entry.path(), FILE_MODE)?;
            }
        }
        Ok(())
    }

    /// Reads the state under a shared lock, which waits out a commit in
    /// progress. Nothing is created: a node that never ran an ADD has no
    /// store, and an inspection command must not make one.
    pub fn peek(&self) -> Result<State> {
        let lock_path = self.dir.join(LOCK);
        let _shared = match File::open(&lock_path) {
            Ok(f) => Some(
                Flock::lock(f, FlockArg::LockShared)
                    .map_err(|(_, errno)| Error::io("lock", &lock_path, errno.into()))?,
            ),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &lock_path, e)),
        };
        recovery::read(&self.dir.join(STATE)).map(Option::unwrap_or_default)
    }
}

/// The locked store. Changes reach disk only through [`Locked::commit`].
pub struct Locked {
    _lock: Flock<File>,
    dir: PathBuf,
    pub state: State,
    /// Set when the on-disk state was unreadable and was replaced.
    pub recovered: Option<Error>,
}

impl Locked {
    pub fn commit(&mut self) -> Result<()> {
        self.state.version = VERSION;
        let prev = self.dir.join(STATE_PREV);
        let path = self.dir.join(STATE);
        let bytes = serde_json::to_vec(&self.state)
            .map_err(|e| Error::io("encode", &path, std::io::Error::other(e)))?;
        let dir = File::open(&self.dir).map_err(|e| Error::io("open", &self.dir, e))?;
        // Overwritten in place, not truncated first: truncating would free
        // the blocks that the write then allocates again.
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&prev)
            .map_err(|e| Error::io("create", &prev, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.set_len(bytes.len() as u64))
            .map_err(|e| Error::io("write", &prev, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &prev, e))?;
        exchange_or_rename(&dir, &prev, &path)?;
        dir.sync_all()
            .map_err(|e| Error::io("fsync", &self.dir, e))?;
        Ok(())
    }
}

/// Swaps `prev` and `path`, so the replaced state survives as the next
/// commit's scratch file. The first commit (no `path` yet) and filesystems
/// without `RENAME_EXCHANGE` get a plain rename, which is just as atomic.
fn exchange_or_rename(dir: &File, prev: &Path, path: &Path) -> Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(dir, STATE_PREV, dir, STATE, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            fs::rename(prev, path).map_err(|e| Error::io("rename", prev, e))
        }
        Err(e) => Err(Error::io("rename", prev, e.into())),
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current boot ID. Allocations stamped with another one predate a reboot.
pub fn read_boot_id(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::io("read boot id", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::state::tests::alloc;

    #[test]
    fn commit_then_reload_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        {
            let mut l = store.lock().unwrap();
            l.state
                .allocations
                .push(alloc("192.168.2.210", "c1", None, "b1"));
            l.commit().unwrap();
        }
        let l = store.lock().unwrap();
        assert_eq!(l.state.allocations.len(), 1);
        assert!(l.recovered.is_none());
        // The first commit has nothing to exchange with: a plain rename.
        assert!(!dir.path().join("lan").join(STATE_PREV).exists());
    }

    fn inode(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn commits_recycle_the_replaced_state_as_the_next_scratch_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        let (state, tmp) = (
            dir.path().join("lan/state.json"),
            dir.path().join("lan/state.json.prev"),
        );
        let ips = ["192.168.2.210", "192.168.2.211", "192.168.2.212"];
        // Growing, then shrinking: a shorter state must not keep the tail
        // of the longer one it overwrote in place.
        let sizes = [1, 3, 2, 1, 3, 1];
        let mut inodes = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let mut l = store.lock().unwrap();
            l.state.allocations.clear();
            for ip in &ips[..*n] {
                l.state
                    .allocations
                    .push(alloc(ip, &format!("c{i}"), None, "b1"));
            }
            l.commit().unwrap();
            drop(l);
            assert_eq!(store.peek().unwrap().allocations.len(), *n, "commit {i}");
            inodes.push(inode(&state));
            if i > 0 {
                assert_eq!(inode(&tmp), inodes[i - 1], "commit {i} kept the old inode");
                let prev: State = serde_json::from_slice(&fs::read(&tmp).unwrap()).unwrap();
                assert_eq!(prev.allocations.len(), sizes[i - 1], "commit {i}");
            }
        }
        // From the second commit on, two inodes take turns.
        assert_eq!(inodes[3], inodes[1]);
        assert_eq!(inodes[4], inodes[2]);
        assert_ne!(inodes[1], inodes[2]);
    }

    #[test]
    fn peek_waits_for_a_commit_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        let held = store.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Store::new(dir.path(), "lan").unwrap();
        let t = std::thread::spawn(move || tx.send(reader.peek().map(|s| s.allocations.len())));
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert!(
            rx.try_recv().is_err(),
            "peek read while the store was locked"
        );
        let mut held = held;
        held.state
            .allocations
            .push(alloc("192.168.2.210", "c1", None, "b1"));
        held.commit().unwrap();
        drop(held);
        let n = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(n.unwrap(), 1, "peek sees the committed state");
        t.join().unwrap().expect("the result was received");
    }

    #[test]
    fn peek_of_a_node_without_a_store_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        assert!(store.peek().unwrap().allocations.is_empty());
        assert!(!dir.path().join("lan").exists());
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Two commits, so that `state.json.prev` holds the first.
    fn store_with_prev(dir: &Path) -> Store {
        let store = Store::new(dir, "lan").unwrap();
        let mut l = store.lock().unwrap();
        l.state
            .allocations
            .push(alloc("192.168.2.210", "c1", None, "b1"));
        l.state.verified.insert("192.168.2.220".parse().unwrap(), 7);
        l.commit().unwrap();
        l.state
            .allocations
            .push(alloc("192.168.2.211", "c2", None, "b1"));
        l.commit().unwrap();
        store
    }

    #[test]
    fn a_corrupt_state_is_replaced_by_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_prev(dir.path());
        fs::write(store.dir().join(STATE), b"{\"allocations\": [{\"ip\": ").unwrap();
        let l = store.lock().unwrap();
        let Some(Error::Corrupt { action, .. }) = &l.recovered else {
            panic!("not reported: {:?}", l.recovered)
        };
        assert!(action.contains("state.json.prev"), "{action}");
        let ips: Vec<String> = l
            .state
            .allocations
            .iter()
            .map(|a| a.ip.to_string())
            .collect();
        assert_eq!(ips, ["192.168.2.210"], "the state before the last commit");
        // The lost commit may have handed out an address: probe everything.
        assert!(l.state.verified.is_empty());
        drop(l);
        // Recovered on disk at once, even by a command that changes nothing.
        assert_eq!(store.peek().unwrap().allocations.len(), 1);
        let names = files(store.dir());
        // The restored state became state.json by the recovery's commit.
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[2].starts_with("state.json.corrupt-"), "{names:?}");
        assert!(store.lock().unwrap().recovered.is_none(), "healed for good");
    }

    #[test]
    fn with_both_states_corrupt_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_prev(dir.path());
        fs::write(store.dir().join(STATE), b"\x00\x00").unwrap();
        fs::write(store.dir().join(STATE_PREV), b"[]").unwrap();
        let mut l = store.lock().unwrap();
        assert!(matches!(l.recovered, Some(Error::Corrupt { .. })));
        assert!(l.state.allocations.is_empty());
        l.state
            .allocations
            .push(alloc("192.168.2.212", "c3", None, "b1"));
        l.commit().unwrap();
        drop(l);
        let names = files(store.dir());
        assert!(names.iter().any(|n| n.starts_with("state.json.corrupt-")));
        assert!(names
            .iter()
            .any(|n| n.starts_with("state.json.prev.corrupt-")));
        assert_eq!(store.peek().unwrap().allocations.len(), 1);
    }

    #[test]
    fn a_json_array_is_corrupt_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.dir().join(STATE), b"[]").unwrap();
        let e = store.peek().unwrap_err().to_string();
        assert!(
            e.contains("not a JSON object") && e.contains("moves it aside"),
            "{e}"
        );
        let l = store.lock().unwrap();
        assert!(matches!(l.recovered, Some(Error::Corrupt { .. })));
    }

    #[test]
    fn a_newer_store_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "lan").unwrap();
        fs::create_dir_all(store.dir()).unwrap();
        let doc = br#"{"version": 99, "allocations": []}"#;
        fs::write(store.dir().join(STATE), doc).unwrap();
        for e in [
            store.lock().err().unwrap().to_string(),
            store.peek().unwrap_err().to_string(),
        ] {
            assert!(
                e.contains("version 99") && e.contains("newer flatlan"),
                "{e}"
            );
            assert!(
                e.contains("move") && e.contains("aside"),
                "says what to do: {e}"
            );
        }
        assert_eq!(fs::read(store.dir().join(STATE)).unwrap(), doc);
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn store_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_prev(dir.path());
        let check = |what: &str| {
            assert_eq!(mode(store.dir()), 0o700, "{what}: directory");
            for f in ["lock", STATE, STATE_PREV] {
                assert_eq!(mode(&store.dir().join(f)), 0o600, "{what}: {f}");
            }
        };
        check("a new store");
        // A store from before: world-readable.
        let open = |p: &Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        open(store.dir(), 0o755);
        for f in ["lock", STATE, STATE_PREV] {
            open(&store.dir().join(f), 0o644);
        }
        drop(store.lock().unwrap());
        check("an old store after one command");
    }

    #[test]
    fn unsafe_network_names_are_rejected() {
        for bad in ["", "..", "a/b", "x y"] {
            assert!(Store::new(Path::new("/tmp"), bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever is on disk, taking the lock never panics: garbage is
        /// moved aside and reported, a store document is loaded, and only
        /// a newer format is refused.
        #[test]
        fn any_store_file_is_loaded_or_recovered(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                "\\{\"allocations\": \\[\\{\"ip\": \"[0-9.:a-f]{0,20}\"\\}\\]\\}".prop_map(String::into_bytes),
            ],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::new(dir.path(), "lan").unwrap();
            fs::create_dir_all(store.dir()).unwrap();
            fs::write(store.dir().join(STATE), &bytes).unwrap();
            match store.lock() {
                Ok(locked) if locked.recovered.is_none() => {
                    prop_assert_eq!(decode(&bytes).ok(), Some(locked.state.clone()));
                }
                Ok(_) => {}
                Err(e) => prop_assert!(matches!(e, Error::StoreVersion { .. }), "{}", e),
            }
        }
    }
}
