//! Which CNI config the runtime uses. containerd (and CRI-O) take the
//! lexically first `.conf`/`.conflist`/`.json` in the conf dir that
//! parses; a second CNI's file that sorts first silently wins.

use std::path::Path;

use super::finding::Finding;
use crate::install::shadow;

/// `dir` is the host path (for the report), `seen` the same under --root;
/// `ours` the file name of flatlan's conflist there.
pub fn check(dir: &Path, seen: &Path, ours: &str) -> Finding {
    let others = match shadow::others(seen, ours, &[]) {
        Ok(o) => o,
        Err(e) => {
            return Finding::warn(
                "cni_config",
                format!("cannot list {}: {e}", dir.display()),
                "the runtime reads its pod network from this directory",
                "run flatlan doctor as root",
            )
        }
    };
    let Some(first) = others.first() else {
        return Finding::ok(
            "cni_config",
            format!("{ours} is the only CNI config in {}", dir.display()),
        );
    };
    let list = others.join(", ");
    if first.as_str() < ours {
        return Finding::fail(
            "cni_config",
            format!(
                "{first} wins: it sorts before {ours} in {}, and containerd uses the lexically first .conf/.conflist/.json there",
                dir.display()
            ),
            format!("pods get {first}'s network, not flatlan's; flatlan looks installed but is never called"),
            format!(
                "remove the other CNI's config: rm {}   (k3s: start it with --flannel-backend=none first, or flannel writes it back)\n\
                 or make flatlan's sort first: flatlan install --name 00-flatlan.conflist --conflist FILE",
                dir.join(first).display()
            ),
        );
    }
    Finding::warn(
        "cni_config",
        format!(
            "{ours} wins in {}, but other CNI configs are there too: {list}",
            dir.display()
        ),
        "they are ignored today, and win as soon as flatlan's file is renamed or removed",
        format!(
            "remove what is not in use: rm {}",
            dir.join(first).display()
        ),
    )
}
