//! Reading `state.json`, and recovering when it cannot be used.
//!
//! Renames make a torn `state.json` impossible short of disk damage or a
//! hand edit, but when it happens the store must heal itself: DEL must
//! succeed, and it could not while every command refused the file (issue
//! 10, item 3). The unreadable file is moved aside as evidence, and:
//! - if `state.json.prev`, the state before the last change, is usable, it
//!   is restored. Only that last change is lost. If it was an ADD, the
//!   pod's address is missing from the store; "recently verified free"
//!   verdicts are dropped, so the conflict probe finds the pod answering
//!   before the address is handed out again. If it was a DEL, GC frees the
//!   address it still lists;
//! - otherwise both are moved aside and the store starts empty, with the
//!   same two safety nets for everything it held.
//!
//! A store written by a newer flatlan is not corrupt: moving it aside would
//! lose every allocation, so it is refused with what to do instead.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{now_secs, State, STATE, STATE_PREV, VERSION};
use crate::error::{Error, Result};

/// Why a state document cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Not a flatlan store document: bad JSON, a torn write, a JSON array,
    /// no `version`.
    Corrupt(String),
    /// A `version` this flatlan does not know: a newer flatlan wrote it.
    Newer(u32),
}

/// Decodes a state document, accepting only this version's format.
pub fn decode(bytes: &[u8]) -> std::result::Result<State, Unusable> {
    // serde reads a JSON array into a struct field by field, and every
    // field has a default: `[]` would load as an empty store.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Unusable::Corrupt("not a JSON object".into()));
    }
    match serde_json::from_slice::<State>(bytes) {
        Ok(s) if s.version == VERSION => Ok(s),
        Ok(s) if s.version == 0 => Err(Unusable::Corrupt("no \"version\" field".into())),
        Ok(s) => Err(Unusable::Newer(s.version)),
        Err(e) => {
            // A newer format may not parse as ours at all; its version
            // still decides which error this is.
            #[derive(Deserialize)]
            struct Versioned {
                version: u32,
            }
            match serde_json::from_slice::<Versioned>(bytes) {
                Ok(v) if v.version > VERSION => Err(Unusable::Newer(v.version)),
                _ => Err(Unusable::Corrupt(e.to_string())),
            }
        }
    }
}

fn newer(path: &Path, found: u32) -> Error {
    Error::StoreVersion {
        path: path.to_path_buf(),
        found,
        supported: VERSION,
    }
}

/// The state at `path` for a reader that changes nothing (`peek`); `None`
/// when there is no file yet.
pub(super) fn read(path: &Path) -> Result<Option<State>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    match decode(&bytes) {
        Ok(s) => Ok(Some(s)),
        Err(Unusable::Newer(v)) => Err(newer(path, v)),
        Err(Unusable::Corrupt(reason)) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason,
            action: format!(
                "the next CNI command on this network moves it aside and restores {STATE_PREV}, or starts an empty store"
            ),
        }),
    }
}

/// Loads `dir`'s state under the exclusive lock, recovering from an
/// unusable file. The second value describes a recovery, for the log.
pub(super) fn load(dir: &Path) -> Result<(State, Option<Error>)> {
    let path = dir.join(STATE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((State::default(), None)),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let reason = match decode(&bytes) {
        Ok(s) => return Ok((s, None)),
        Err(Unusable::Newer(v)) => return Err(newer(&path, v)),
        Err(Unusable::Corrupt(reason)) => reason,
    };
    let stamp = now_secs();
    let moved_to = aside(&path, stamp)?;
    let prev = dir.join(STATE_PREV);
    let restored = fs::read(&prev).ok().and_then(|b| decode(&b).ok());
    let (state, action) = match restored {
        Some(mut s) => {
            s.verified.clear();
            s.ahead_started = None;
            let action = format!(
                "it was moved aside to {} and {STATE_PREV}, the state before the last change, was restored; every address will be probed again",
                moved_to.display()
            );
            (s, action)
        }
        None => {
            let prev_note = match fs::metadata(&prev) {
                Ok(_) => format!(
                    "{STATE_PREV} was unusable too and was moved aside to {}",
                    aside(&prev, stamp)?.display()
                ),
                Err(_) => format!("there was no {STATE_PREV}"),
            };
            let action = format!(
                "it was moved aside to {}, {prev_note}, and an empty store was started; the conflict probe and GC find what it held",
                moved_to.display()
            );
            (State::default(), action)
        }
    };
    Ok((
        state,
        Some(Error::Corrupt {
            path,
            reason,
            action,
        }),
    ))
}

/// Renames `path` to `<name>.corrupt-<stamp>`, kept for inspection.
fn aside(path: &Path, stamp: u64) -> Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    let to = path.with_file_name(name);
    fs::rename(path, &to).map_err(|e| Error::io("rename", path, e))?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_version_1_object_decodes() {
        assert!(decode(br#"{"version": 1}"#).is_ok());
        assert!(decode(b" \n{\"version\":1,\"allocations\":[]}").is_ok());
        for corrupt in [
            &b"[]"[..],
            b"null",
            b"",
            b"{}",
            br#"{"allocations": []}"#,
            br#"{"version": 1, "allocations": 5}"#,
            br#"{"version": "1"}"#,
        ] {
            assert!(
                matches!(decode(corrupt), Err(Unusable::Corrupt(_))),
                "{:?}",
                String::from_utf8_lossy(corrupt)
            );
        }
        assert_eq!(decode(br#"{"version": 99}"#), Err(Unusable::Newer(99)));
        // A newer format that is not ours in shape is still "newer".
        assert_eq!(
            decode(br#"{"version": 2, "allocations": {"x": 1}}"#),
            Err(Unusable::Newer(2))
        );
    }
}
