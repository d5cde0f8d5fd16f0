//! Which config in the conf dir the runtime uses. containerd's CRI (and
//! CRI-O, and the old dockershim) load the conf dir through libcni's
//! `ConfFiles`: every `.conf`, `.conflist` and `.json`, sorted by name, and
//! the first one that parses is *the* pod network. A second CNI's file
//! there means one of the two is silently ignored, so the installer says
//! which one wins and refuses unless told to go ahead.

use std::path::Path;

use crate::error::{Error, Result};

/// The extensions libcni reads.
const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// The other CNI configs in `dir`, sorted as libcni sorts them (byte
/// order), leaving out `ours` and `also_ours` (a conflist an earlier
/// install wrote under another name).
pub fn others(dir: &Path, ours: &str, also_ours: &[String]) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir.display(), e)),
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            Path::new(n)
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x))
        })
        .filter(|n| n != ours && !also_ours.contains(n))
        .collect();
    v.sort();
    Ok(v)
}

/// Ok when `others` is empty; otherwise the refusal, naming the winner.
/// With `force`, Ok with the warning to log instead.
pub fn check(dir: &Path, ours: &str, others: &[String], force: bool) -> Result<Option<String>> {
    let Some(first) = others.first() else {
        return Ok(None);
    };
    let list = others.join(", ");
    let verdict = if first.as_str() < ours {
        format!(
            "{first} sorts before {ours}, so pods would get {first}'s network and flatlan's config would be ignored"
        )
    } else {
        format!(
            "{ours} sorts before {first}, so flatlan's would win and {list} would be ignored while still looking installed"
        )
    };
    let msg = format!(
        "{dir} already holds another CNI's config: {list}. containerd and kubelet use only the lexically first \
         .conf/.conflist/.json file there: {verdict}",
        dir = dir.display()
    );
    if force {
        return Ok(Some(format!("--force: installing anyway; {msg}")));
    }
    Err(Error::Usage(format!(
        "refusing to install: {msg}. Uninstall the other CNI (with k3s's flannel: start k3s with \
         --flannel-backend=none, then delete its config), or rerun with --force{hint}",
        hint = if first.as_str() < ours {
            format!(" and --name 00-flatlan.conflist (or another name that sorts before {first})")
        } else {
            String::new()
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_winner_and_why() {
        let dir = Path::new("/etc/cni/net.d");
        let first = vec!["05-cilium.conflist".to_string()];
        let e = check(dir, "10-flatlan.conflist", &first, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("05-cilium.conflist sorts before 10-flatlan.conflist"),
            "{e}"
        );
        assert!(e.contains("lexically first"), "{e}");
        assert!(e.contains("--name 00-flatlan.conflist"), "{e}");
        let later = vec!["87-podman-bridge.conflist".to_string()];
        let e = check(dir, "10-flatlan.conflist", &later, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("so flatlan's would win"), "{e}");
        let w = check(dir, "10-flatlan.conflist", &first, true).unwrap();
        assert!(w.is_some_and(|w| w.starts_with("--force")));
        assert_eq!(check(dir, "10-flatlan.conflist", &[], false).unwrap(), None);
    }
}
