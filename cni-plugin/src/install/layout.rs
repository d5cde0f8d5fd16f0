//! Where the CNI binary and its config go on this node (DESIGN.md §2 "k3s").
//!
//! Every path here is a *host* path (what containerd sees); `--root` maps
//! it into the installer's view, so the DaemonSet's init container can run
//! with the host's directories under /host, and tests under a temp dir.
//!
//! k3s's bin dir moved: since k3s PR 10868 (autumn 2024, backported to
//! the 1.28-1.31 lines) containerd uses the stable
//! `/var/lib/rancher/k3s/data/cni`, whose entries are symlinks into
//! `data/<hash>/bin/cni`. Older k3s points containerd at
//! `data/<hash>/bin` itself (reached through the `data/current` symlink),
//! a directory a k3s upgrade replaces. The authority is k3s's generated
//! containerd config, so it is read first; the two directories are the
//! fallbacks, newest first.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const K3S_DIR: &str = "/var/lib/rancher/k3s";
pub const K3S_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
pub const K3S_BIN_DIR: &str = "/var/lib/rancher/k3s/data/cni";
pub const K3S_OLD_BIN_DIR: &str = "/var/lib/rancher/k3s/data/current/bin";
pub const K3S_CONTAINERD_CONFIG: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
pub const GENERIC_BIN_DIR: &str = "/opt/cni/bin";
pub const GENERIC_CONF_DIR: &str = "/etc/cni/net.d";

/// The two directories, as host paths, and how they were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// One line for the report: "k3s (bin dir from ...)".
    pub why: String,
}

/// `host` seen from the installer: `root` + the host path.
pub fn under(root: &Path, host: &Path) -> PathBuf {
    root.join(host.strip_prefix("/").unwrap_or(host))
}

/// An override must be a host path: relative paths would depend on the
/// installer's working directory, which in a container means nothing.
pub fn absolute(flag: &str, p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(Error::Usage(format!(
            "{flag} {} must be an absolute path on the host",
            p.display()
        )))
    }
}

/// k3s if its state directory exists under `root`, else the generic
/// layout; `bin_dir`/`conf_dir` (flags or environment) win over both.
pub fn detect(root: &Path, bin_dir: Option<PathBuf>, conf_dir: Option<PathBuf>) -> Layout {
    let k3s = under(root, Path::new(K3S_DIR)).is_dir();
    let (auto_bin, auto_conf, mut why) = if k3s {
        let (bin, from) = k3s_bin_dir(root);
        (
            bin,
            PathBuf::from(K3S_CONF_DIR),
            format!("k3s (bin dir {from})"),
        )
    } else {
        (
            PathBuf::from(GENERIC_BIN_DIR),
            PathBuf::from(GENERIC_CONF_DIR),
            format!("generic ({K3S_DIR} does not exist)"),
        )
    };
    if bin_dir.is_some() || conf_dir.is_some() {
        why.push_str(
            "; overridden by --bin-dir/--conf-dir or FLATLAN_CNI_BIN_DIR/FLATLAN_CNI_CONF_DIR",
        );
    }
    Layout {
        bin_dir: bin_dir.unwrap_or(auto_bin),
        conf_dir: conf_dir.unwrap_or(auto_conf),
        why,
    }
}

fn k3s_bin_dir(root: &Path) -> (PathBuf, String) {
    let cfg = under(root, Path::new(K3S_CONTAINERD_CONFIG));
    if let Some(dir) = std::fs::read_to_string(&cfg)
        .ok()
        .and_then(|t| containerd_bin_dir(&t))
    {
        return (dir, format!("from {K3S_CONTAINERD_CONFIG}"));
    }
    if under(root, Path::new(K3S_BIN_DIR)).is_dir() {
        return (
            PathBuf::from(K3S_BIN_DIR),
            "data/cni: k3s's stable CNI dir".into(),
        );
    }
    (
        PathBuf::from(K3S_OLD_BIN_DIR),
        "data/current/bin: an old k3s; a k3s upgrade replaces this dir, so restart the DaemonSet after one".into(),
    )
}

/// The CNI bin dir of a containerd config: `bin_dir = "..."` (containerd
/// 1.x, k3s's template) or the first of `bin_dirs = [...]` (containerd
/// 2.1+). A line scan, not a TOML parser: k3s writes both on one line.
pub fn containerd_bin_dir(toml: &str) -> Option<PathBuf> {
    toml.lines().find_map(|l| {
        let (key, value) = l.trim().split_once('=')?;
        let key = key.trim();
        if key != "bin_dir" && key != "bin_dirs" {
            return None;
        }
        let first = value.split('"').nth(1)?;
        first.starts_with('/').then(|| PathBuf::from(first))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_containerd_spellings() {
        let v1 = "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/var/lib/rancher/k3s/data/cni\"\n  conf_dir = \"/x\"\n";
        assert_eq!(containerd_bin_dir(v1), Some(PathBuf::from(K3S_BIN_DIR)));
        let v2 = "  bin_dirs = [\"/opt/k3s/cni\", \"/other\"]\n";
        assert_eq!(containerd_bin_dir(v2), Some(PathBuf::from("/opt/k3s/cni")));
        assert_eq!(containerd_bin_dir("bin_dir = \"relative\"\n"), None);
        assert_eq!(containerd_bin_dir("conf_dir = \"/x\"\n"), None);
    }

    #[test]
    fn maps_host_paths_under_the_root() {
        assert_eq!(
            under(Path::new("/host"), Path::new("/opt/cni/bin")),
            PathBuf::from("/host/opt/cni/bin")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/opt/cni/bin")),
            PathBuf::from("/opt/cni/bin")
        );
    }
}
