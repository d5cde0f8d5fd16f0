//! `flatlan install` / `flatlan uninstall`: puts this very binary and its
//! conflist where the node's container runtime looks (DESIGN.md §2 "k3s",
//! §6, issue 14). The DaemonSet's init container runs it with the host's
//! directories under `--root /host`; an operator can run it by hand.
//!
//! The rules it keeps:
//! - k3s's layout is detected, else the generic one ([`layout`]);
//! - files are replaced atomically and never written through a symlink
//!   ([`files`]); a rerun with the same inputs changes nothing;
//! - another CNI's config is never shadowed silently ([`shadow`]);
//! - what was written is recorded, and uninstall removes only that
//!   ([`manifest`]);
//! - no conflist before the node's slice is known: the conflist's
//!   `ipam.rangeFile` must exist first, because containerd marks the node
//!   NetworkReady as soon as a conflist exists, and every ADD would then
//!   fail until the node agent writes the slice.

pub mod files;
pub mod layout;
pub mod manifest;
pub mod shadow;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::flags::Flags;
use layout::under;
use manifest::Installed;

pub const USAGE: &str = "usage:
  flatlan install   --conflist FILE [--root DIR] [--bin-dir DIR] [--conf-dir DIR]
                    [--name NAME] [--binary FILE] [--range-file FILE] [--wait SECONDS]
                    [--state-dir DIR] [--binary-only] [--force]
  flatlan uninstall [--root DIR] [--state-dir DIR]

install copies this binary to the CNI bin dir as `flatlan` and FILE (a
conflist with a plugin of type flatlan) to the CNI conf dir as NAME, both
atomically; a rerun with the same inputs changes nothing. The conflist is
written only once its ipam.rangeFile exists (the node agent writes it from
the Node's spec.podCIDRs): until then the node stays NetworkReady=false.

  --conflist FILE    the conflist to install (a path as this process sees it)
  --root DIR         where the host's / is (default /; the DaemonSet uses /host);
                     every other path is a host path under it, except --conflist and --binary
  --bin-dir DIR      CNI bin dir (env FLATLAN_CNI_BIN_DIR; default: k3s's if
                     /var/lib/rancher/k3s exists, read from its containerd config,
                     else /opt/cni/bin)
  --conf-dir DIR     CNI conf dir (env FLATLAN_CNI_CONF_DIR; default
                     /var/lib/rancher/k3s/agent/etc/cni/net.d on k3s, else /etc/cni/net.d)
  --name NAME        the conflist's file name (default 10-flatlan.conflist)
  --binary FILE      the plugin to install (default: this binary)
  --range-file FILE  wait for this file instead of the conflist's ipam.rangeFile
  --wait SECONDS     how long to wait for the range file (default 300; 0: fail at once)
  --state-dir DIR    where the install record lives (default /var/lib/flatlan)
  --binary-only      install the binary and leave the conf dir alone
  --force            install even though another CNI's config is in the conf dir

uninstall removes the files the install record names (conflist first),
and nothing else.";

pub const DEFAULT_NAME: &str = "10-flatlan.conflist";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flatlan";
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub conf_dir: Option<PathBuf>,
    pub conflist: Option<PathBuf>,
    pub name: String,
    pub binary: Option<PathBuf>,
    pub range_file: Option<PathBuf>,
    pub wait: Duration,
    pub state_dir: PathBuf,
    pub binary_only: bool,
    pub force: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root: "/".into(),
            bin_dir: None,
            conf_dir: None,
            conflist: None,
            name: DEFAULT_NAME.into(),
            binary: None,
            range_file: None,
            wait: DEFAULT_WAIT,
            state_dir: DEFAULT_STATE_DIR.into(),
            binary_only: false,
            force: false,
        }
    }
}

/// Parses the flags after `install`/`uninstall`; `env` looks up the
/// environment overrides (flags win).
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Options> {
    let mut o = Options {
        bin_dir: env("FLATLAN_CNI_BIN_DIR").map(PathBuf::from),
        conf_dir: env("FLATLAN_CNI_CONF_DIR").map(PathBuf::from),
        ..Options::default()
    };
    // `--root=/host` as well as `--root /host` (crate::flags).
    let mut f = Flags::new(args, USAGE);
    while let Some(a) = f.next()? {
        match a {
            "--root" => o.root = f.value()?.into(),
            "--bin-dir" => o.bin_dir = Some(f.value()?.into()),
            "--conf-dir" => o.conf_dir = Some(f.value()?.into()),
            "--conflist" => o.conflist = Some(f.value()?.into()),
            "--name" => o.name = f.value()?,
            "--binary" => o.binary = Some(f.value()?.into()),
            "--range-file" => o.range_file = Some(f.value()?.into()),
            "--state-dir" => o.state_dir = f.value()?.into(),
            "--wait" => {
                let v = f.value()?;
                let secs: u64 = v.parse().map_err(|_| {
                    Error::Usage(format!("--wait {v:?}: a whole number of seconds"))
                })?;
                o.wait = Duration::from_secs(secs);
            }
            "--binary-only" => o.binary_only = true,
            "--force" => o.force = true,
            _ => return Err(f.unknown()),
        }
    }
    o.bin_dir = o
        .bin_dir
        .map(|p| layout::absolute("--bin-dir", p))
        .transpose()?;
    o.conf_dir = o
        .conf_dir
        .map(|p| layout::absolute("--conf-dir", p))
        .transpose()?;
    o.range_file = o
        .range_file
        .map(|p| layout::absolute("--range-file", p))
        .transpose()?;
    o.state_dir = layout::absolute("--state-dir", o.state_dir)?;
    let n = &o.name;
    if n.contains('/') || n.starts_with('.') || !n.ends_with(".conflist") {
        return Err(Error::Usage(format!(
            "--name {n:?}: a plain file name ending in .conflist (the runtime reads only .conf, .conflist and .json)"
        )));
    }
    Ok(o)
}

/// `flatlan install|uninstall ...` from the CLI.
pub fn main(args: &[String]) -> Result<String> {
    let (verb, rest) = args
        .split_first()
        .map_or(("", &[][..]), |(v, r)| (v.as_str(), r));
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(format!("{USAGE}\n"));
    }
    crate::init_logging(Some("info"));
    let o = parse(rest, |k| std::env::var(k).ok())?;
    match verb {
        "install" => install(&o),
        _ => uninstall(&o),
    }
}

/// Installs; returns the report (one line per file).
pub fn install(o: &Options) -> Result<String> {
    let lay = layout::detect(&o.root, o.bin_dir.clone(), o.conf_dir.clone());
    let mut report = vec![format!("layout: {}", lay.why)];
    let prev = Installed::load(&o.root, &o.state_dir)?;
    let bin_path = lay.bin_dir.join("flatlan");
    let conf_path = lay.conf_dir.join(&o.name);

    // Everything is checked before the first write: nothing half done.
    let conflist = if o.binary_only {
        None
    } else {
        let src = o.conflist.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "install needs --conflist FILE (or --binary-only)\n{USAGE}"
            ))
        })?;
        let conf = crate::watch::load(src)?;
        let bytes = std::fs::read(src).map_err(|e| Error::io("read", src.display(), e))?;
        let range_file = o.range_file.clone().or(conf.ipam.range_file);
        let ours: Vec<String> = prev
            .conflists
            .iter()
            .filter(|p| p.parent() == Some(lay.conf_dir.as_path()))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        let others = shadow::others(&under(&o.root, &lay.conf_dir), &o.name, &ours)?;
        if let Some(w) = shadow::check(&lay.conf_dir, &o.name, &others, o.force)? {
            warn!("{w}");
            report.push(w);
        }
        Some((bytes, range_file))
    };
    let binary = match &o.binary {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| Error::io("find", "this binary", e))?,
    };
    let exe = std::fs::read(&binary).map_err(|e| Error::io("read", binary.display(), e))?;

    let new = Installed {
        conflists: if o.binary_only {
            prev.conflists.clone()
        } else {
            vec![conf_path.clone()]
        },
        binaries: vec![bin_path.clone()],
    };
    // Recorded before anything is written: a crash in between leaves files
    // uninstall still knows about.
    new.union(&prev).store(&o.root, &o.state_dir)?;

    // The binary first: a conflist must never name a plugin that is not
    // there yet.
    let out = files::replace(&under(&o.root, &bin_path), &exe, 0o755)?;
    report.push(format!("binary   {}: {out}", bin_path.display()));

    if let Some((bytes, range_file)) = conflist {
        if let Some(rf) = &range_file {
            wait_for(&o.root, rf, o.wait)?;
        }
        let out = files::replace(&under(&o.root, &conf_path), &bytes, 0o644)?;
        report.push(format!("conflist {}: {out}", conf_path.display()));
    }
    for stale in prev.files().filter(|p| !new.files().any(|n| n == *p)) {
        let what = files::remove_regular(&under(&o.root, stale))?;
        report.push(format!("stale    {}: {what}", stale.display()));
    }
    new.store(&o.root, &o.state_dir)?;
    Ok(report.join("\n") + "\n")
}

/// Waits until the node agent has written the node's slice. Until then no
/// conflist exists and kubelet keeps the node NetworkReady=false, which is
/// what keeps pods off a network whose every ADD would fail.
fn wait_for(root: &Path, range_file: &Path, wait: Duration) -> Result<()> {
    let path = under(root, range_file);
    let start = Instant::now();
    let mut said = false;
    while !path.exists() {
        if start.elapsed() >= wait {
            return Err(Error::NotReady(format!(
                "the node range file {} does not exist after {} s, so the conflist was not written \
                 (the binary was). The node agent (`flatlan-speaker node-agent`) writes it once the \
                 Node has spec.podCIDRs: is it running, and does k3s allocate node CIDRs \
                 (--cluster-cidr)? Rerun install when it exists, or raise --wait",
                range_file.display(),
                wait.as_secs()
            )));
        }
        if !said {
            info!(file = %range_file.display(), "waiting for the node agent to write this node's slice");
            said = true;
        }
        std::thread::sleep(POLL.min(wait.saturating_sub(start.elapsed())));
    }
    Ok(())
}

/// Removes what the install record names, conflists first; returns the
/// report.
pub fn uninstall(o: &Options) -> Result<String> {
    let rec = Installed::load(&o.root, &o.state_dir)?;
    if rec == Installed::default() {
        return Ok(format!(
            "nothing to remove: no install record in {} (flatlan was not installed with this --state-dir)\n",
            o.state_dir.display()
        ));
    }
    let mut report = Vec::new();
    for f in rec.files() {
        let what = files::remove_regular(&under(&o.root, f))?;
        report.push(format!("{}: {what}", f.display()));
    }
    Installed::remove(&o.root, &o.state_dir)?;
    report.push(format!(
        "{}: removed",
        o.state_dir.join(manifest::FILE_NAME).display()
    ));
    Ok(report.join("\n") + "\n")
}
