//! Unique, recognisable names for everything a lab creates on the host.
//!
//! Namespace names, scratch directories and log files all start with
//! `fl<pid>l<n>`: the creating process's PID lets [`crate::cleanup_stale`]
//! tell leftovers of a dead process from a lab that is still running, and
//! the per-process counter keeps parallel tests apart. Interface names
//! never carry the prefix: interfaces live inside our namespaces, so they
//! can keep fixed, readable names (eth0, br0) within the 15-byte IFNAMSIZ.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};

/// Every name the testkit creates starts with this.
pub const NAME_PREFIX: &str = "fl";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh `fl<pid>l<n>` prefix, unique within this process.
pub(crate) fn new_prefix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}{}l{n}", std::process::id())
}

/// The PID encoded in a name made from [`new_prefix`], if it is one.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits_end = rest.find(|c: char| !c.is_ascii_digit())?;
    let (pid, rest) = rest.split_at(digits_end);
    let rest = rest.strip_prefix('l')?;
    let counter_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if pid.is_empty() || counter_len == 0 {
        return None;
    }
    pid.parse().ok()
}

/// Where scratch directories and process logs go.
pub(crate) fn state_dir() -> PathBuf {
    std::env::temp_dir().join("flatlan-lab")
}

/// Checks a role or pod name: it becomes part of a file name under
/// /run/netns and of avahi host names, so keep it to `[a-z0-9-]`.
pub(crate) fn validate_label(label: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: label.to_owned(),
            reason,
        })
    };
    if label.is_empty() {
        return bad("empty");
    }
    if label.len() > 40 {
        return bad("longer than 40 bytes");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only a-z, 0-9 and '-' are allowed");
    }
    Ok(())
}

/// Fails with [`Error::NotRoot`] unless we can create namespaces.
pub fn require_root() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot {
            euid: euid.as_raw(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_carry_our_pid() {
        let a = new_prefix();
        let b = new_prefix();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(owner_pid(&format!("{b}-switch")), Some(std::process::id()));
    }

    #[test]
    fn foreign_names_have_no_owner() {
        for n in [
            "", "fl", "fl123", "flx1l2", "fl12l", "fl12x3-a", "cni-1234", "flannel",
        ] {
            assert_eq!(owner_pid(n), None, "{n}");
        }
        assert_eq!(owner_pid("fl42l7-node1"), Some(42));
    }

    #[test]
    fn labels_are_checked() {
        assert!(validate_label("node1").is_ok());
        assert!(validate_label("pod-a").is_ok());
        for bad in ["", "Node", "a b", "a/b", "x.y", &"a".repeat(41)] {
            assert!(validate_label(bad).is_err(), "{bad:?}");
        }
    }
}
