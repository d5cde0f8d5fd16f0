//! `flatlan ipam ls|release`: the operator's view of the allocation store.
//! `ls` (with `--wide` and `--watch`) lives in cli/ls.rs and its helpers.
//!
//! Runtimes invoke the plugin with no arguments, so any argument means a
//! human is at the keyboard. Parsed by hand: clap would double the size of
//! a binary that runs on every pod start.

mod ls;
mod procs;
mod refresh;
mod wide;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use flatlan_ipam::store::now_secs;
use flatlan_ipam::Store;

use crate::config::{DEFAULT_BOOT_ID, DEFAULT_DATA_DIR};
use crate::error::{Error, Result};
use crate::flags::{self, Flags};
use crate::names;
use crate::netlink::{Netlink, Socket};

const USAGE: &str = "usage:
  flatlan ipam ls      [--data-dir DIR] [--network NAME] [--boot-id-path FILE]
                       [--wide] [--json] [--watch [SECS]]
  flatlan ipam release ADDRESS [--data-dir DIR] [--network NAME] [--force]
  flatlan ipam watch   --conf FILE
  flatlan install      --conflist FILE [...]   (flatlan install --help)
  flatlan uninstall    [--root DIR] [--state-dir DIR]
  flatlan doctor       [--json] [...]               (flatlan doctor --help)
  flatlan node bridge  --uplink IF [--bridge NAME] [--force] [--dry-run] ...   (flatlan node bridge --help)

Without arguments, flatlan is the CNI plugin (the runtime's CNI_* protocol).
`flatlan ipam COMMAND --help` says more about each command. Every flag
takes its value as `--flag VALUE` or `--flag=VALUE`.";

const USAGE_LS: &str =
    "usage: flatlan ipam ls [--data-dir DIR] [--network NAME] [--boot-id-path FILE]
                       [--wide] [--json] [--watch [SECS]]

Lists this node's addresses: allocated to a pod, reclaimable (allocated
before the last reboot; the next ADD frees it), quarantined (a LAN host
answered for it), and remembered (free, and preferred for the pod identity
that last held it).

With --wide, each pod address also shows the pod as this node sees it:
the pod interface's MAC, the host veth, the network namespace (path and
inode), LIVE (up; gone: no veth, the pod died without a DEL; no-netns:
the namespace is held where it cannot be named), and under the row every
host process in that namespace with its PID and command. So \"which process
is 192.168.2.210?\" needs no nsenter. Run it as root to see every process.

  --data-dir DIR        the CNI config's ipam.dataDir (default /var/lib/cni/flatlan)
  --network NAME        one network (default: every network under DIR)
  --boot-id-path FILE   the CNI config's ipam.bootIdPath (default /proc/sys/kernel/random/boot_id)
  --wide                add the node-side view above
  --json                one JSON object per address (with --wide: veth, live,
                        pod_mac, netns, netns_inode, processes)
  --watch [SECS]        redraw every SECS seconds (default 2) until interrupted;
                        piped, one listing per interval, blank-line separated";

const USAGE_RELEASE: &str =
    "usage: flatlan ipam release ADDRESS [--data-dir DIR] [--network NAME] [--force]

Frees an allocated, quarantined or remembered address. An address whose
pod veth still exists is refused unless --force is given.

  --data-dir DIR   the CNI config's ipam.dataDir (default /var/lib/cni/flatlan)
  --network NAME   one network (default: every network under DIR)
  --force          free the address of a pod that still exists";

const USAGE_WATCH: &str = "usage: flatlan ipam watch --conf FILE

Runs until killed: quarantines a pool address as soon as a LAN host is seen
using it. FILE: a conflist, or flatlan's plugin config.";

const USAGE_PROBE_AHEAD: &str = "usage: flatlan ipam probe-ahead < NETWORK-CONFIG

Probes the next free addresses in the background; ADD starts it. Not for
interactive use.";

struct Opts {
    data_dir: PathBuf,
    network: Option<String>,
    boot_id_path: PathBuf,
    json: bool,
    force: bool,
    wide: bool,
    watch: Option<Duration>,
    positional: Vec<String>,
}

fn parse(args: &[String], usage: &str) -> Result<Opts> {
    let mut o = Opts {
        data_dir: DEFAULT_DATA_DIR.into(),
        network: None,
        boot_id_path: DEFAULT_BOOT_ID.into(),
        json: false,
        force: false,
        wide: false,
        watch: None,
        positional: Vec::new(),
    };
    let mut f = Flags::new(args, usage);
    while let Some(a) = f.next()? {
        match a {
            "--data-dir" => o.data_dir = f.value()?.into(),
            "--network" => o.network = Some(f.value()?),
            "--boot-id-path" => o.boot_id_path = f.value()?.into(),
            "--json" => o.json = true,
            "--force" => o.force = true,
            "--wide" => o.wide = true,
            // SECS is optional: a following argument that is no flag is it.
            "--watch" => {
                o.watch = Some(match f.optional_value() {
                    Some(v) => refresh::parse_secs(v)?,
                    None => Duration::from_secs_f64(refresh::DEFAULT_SECS),
                });
            }
            s if s.starts_with('-') => return Err(f.unknown()),
            s => o.positional.push(s.to_string()),
        }
    }
    Ok(o)
}

/// Exit codes a script can tell apart (`flatlan node bridge --help` and
/// docs/bridge.md list them).
pub mod exit {
    pub const OK: i32 = 0;
    /// A refusal, or a failure that changed nothing or was rolled back.
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    /// `node bridge` could not finish its rollback: the host is half
    /// migrated and the message lists the `ip` commands left to run.
    pub const ROLLBACK_INCOMPLETE: i32 = 3;
}

/// The exit code for an error (see [`exit`]).
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Usage(_) => exit::USAGE,
        Error::BridgeMigration {
            incomplete: true, ..
        } => exit::ROLLBACK_INCOMPLETE,
        _ => exit::FAILED,
    }
}

/// Runs the CLI; returns the exit code ([`exit`]).
pub fn main(args: &[String]) -> i32 {
    // doctor prints its report whatever it finds; the exit code is its verdict.
    if args.first().is_some_and(|a| a == "doctor") {
        return crate::doctor::main(args.get(1..).unwrap_or_default());
    }
    match run(args) {
        Ok(out) => {
            print!("{out}");
            exit::OK
        }
        Err(e) => {
            eprintln!("flatlan: {e}");
            exit_code(&e)
        }
    }
}

fn is_help(a: &str) -> bool {
    matches!(a, "-h" | "--help" | "help")
}

fn run(args: &[String]) -> Result<String> {
    let first = args.first().map(String::as_str).unwrap_or("");
    if is_help(first) {
        return Ok(format!("{USAGE}\n"));
    }
    if first == "install" || first == "uninstall" {
        return crate::install::main(args);
    }
    if first == "node" {
        return crate::node_bridge::main(args.get(1..).unwrap_or_default());
    }
    if first != "ipam" {
        return Err(Error::Usage(format!("unknown command {first:?}\n{USAGE}")));
    }
    let verb = args.get(1).map(String::as_str).unwrap_or("");
    let usage = match verb {
        "ls" => USAGE_LS,
        "release" => USAGE_RELEASE,
        "watch" => USAGE_WATCH,
        "probe-ahead" => USAGE_PROBE_AHEAD,
        v if is_help(v) => return Ok(format!("{USAGE}\n")),
        "" => {
            return Err(Error::Usage(format!(
                "`flatlan ipam` needs a command\n{USAGE}"
            )))
        }
        v => return Err(Error::Usage(format!("unknown command ipam {v:?}\n{USAGE}"))),
    };
    let rest = args.get(2..).unwrap_or_default();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(format!("{usage}\n"));
    }
    if verb == "watch" {
        return crate::watch::main(rest);
    }
    // Before parsing: `--watch` takes an optional SECS, so under another
    // verb it would swallow the next argument (`release --watch 10.0.0.1`
    // said "--watch takes seconds, not 10.0.0.1").
    if verb != "ls"
        && rest
            .iter()
            .any(|a| matches!(flags::name(a), "--wide" | "--watch"))
    {
        return Err(Error::Usage(format!(
            "--wide and --watch are for `flatlan ipam ls`\n{usage}"
        )));
    }
    let opts = parse(rest, usage)?;
    match verb {
        "ls" => match opts.watch {
            Some(every) => refresh::every(
                every,
                &format!("flatlan ipam ls {}", rest.join(" ")),
                || ls::ls(&opts),
            ),
            None => ls::ls(&opts),
        },
        "release" => release(&opts),
        _ => probe_ahead(),
    }
}

/// The networks to look at. A data directory or network that does not
/// exist is an error, not an empty table: it is almost always a wrong
/// `--data-dir` (the CNI config's `ipam.dataDir` differs from the default).
fn networks(opts: &Opts) -> Result<Vec<(String, Store)>> {
    let dir = &opts.data_dir;
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "data directory {} does not exist: pass the CNI config's ipam.dataDir with --data-dir (no ADD has run on this node if that is the one)",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io("read", dir.display(), e)),
    };
    let mut found: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    let names = match &opts.network {
        Some(n) if !found.contains(n) => {
            return Err(Error::Usage(format!(
                "network {n:?} has no store in {} (networks there: {})",
                dir.display(),
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            )))
        }
        Some(n) => vec![n.clone()],
        None => found,
    };
    names
        .into_iter()
        .map(|n| Ok((n.clone(), Store::new(dir, &n)?)))
        .collect()
}

/// Started by ADD with the network config on stdin (see `spawn_probe_ahead`).
fn probe_ahead() -> Result<String> {
    use std::io::Read;
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| Error::io("read", "stdin", e))?;
    let conf = crate::config::NetConf::parse(&stdin)?;
    let mut nl = Socket::new()?;
    let bridge = nl
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| Error::BridgeNotFound(conf.bridge.clone()))?;
    let node_ips = crate::plan::node_ips(&conf, &nl.addresses(bridge.index)?);
    let n = crate::ipam::probe_ahead(&conf, &node_ips)?;
    Ok(format!("probed {n} candidate addresses\n"))
}

fn release(opts: &Opts) -> Result<String> {
    let [addr] = opts.positional.as_slice() else {
        return Err(Error::Usage(format!("release takes one ADDRESS\n{USAGE}")));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| Error::Usage(format!("{addr:?} is not an IP address")))?;
    let now = now_secs();
    for (name, store) in networks(opts)? {
        let mut locked = store.lock()?;
        let s = &mut locked.state;
        if let Some(a) = s.allocation_of(ip).cloned() {
            let veth = names::host_veth(&a.container_id, &a.ifname);
            let alive = Socket::new()
                .and_then(|mut nl| nl.link_by_name(&veth))
                .map(|l| l.is_some())
                .unwrap_or(false);
            if alive && !opts.force {
                return Err(Error::Usage(format!(
                    "{ip} belongs to {} and its veth {veth} still exists; delete the pod, or pass --force to free the address anyway",
                    a.describe()
                )));
            }
            s.release(&a.container_id, &a.ifname, now);
            locked.commit()?;
            return Ok(format!(
                "released {ip} ({}) in network {name}\n",
                a.describe()
            ));
        }
        if s.forget(ip) {
            locked.commit()?;
            return Ok(format!("released {ip} in network {name}\n"));
        }
    }
    Err(Error::Usage(format!(
        "{ip} is not allocated, quarantined or remembered"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn watch_takes_an_optional_interval() {
        let o = parse(&args(&["--wide", "--watch"]), USAGE_LS).expect("bare --watch");
        assert!(o.wide);
        assert_eq!(o.watch, Some(Duration::from_secs(2)));
        let o = parse(&args(&["--watch", "--json"]), USAGE_LS).expect("--watch then a flag");
        assert_eq!(o.watch, Some(Duration::from_secs(2)));
        assert!(o.json);
        let o = parse(&args(&["--watch", "0.5", "--wide"]), USAGE_LS).expect("--watch 0.5");
        assert_eq!(o.watch, Some(Duration::from_millis(500)));
        assert!(o.positional.is_empty());
        assert!(matches!(
            parse(&args(&["--watch", "soon"]), USAGE_LS),
            Err(Error::Usage(_))
        ));
        let o = parse(&args(&["--json"]), USAGE_LS).expect("plain");
        assert!(!o.wide && o.watch.is_none());
        let o = parse(&args(&["--watch=0.5", "--data-dir=/d"]), USAGE_LS).expect("= form");
        assert_eq!(o.watch, Some(Duration::from_millis(500)));
        assert_eq!(o.data_dir, PathBuf::from("/d"));
        assert!(matches!(
            parse(&args(&["--wide=yes"]), USAGE_LS),
            Err(Error::Usage(m)) if m.starts_with("--wide takes no value")
        ));
    }

    #[test]
    fn an_incomplete_rollback_has_an_exit_code_of_its_own() {
        let migration = |incomplete| Error::BridgeMigration {
            uplink: "eth0".into(),
            bridge: "br0".into(),
            reason: "r".into(),
            rollback: "b".into(),
            incomplete,
        };
        assert_eq!(exit_code(&migration(true)), 3);
        assert_eq!(exit_code(&migration(false)), 1);
        assert_eq!(exit_code(&Error::NodeBridge("refused".into())), 1);
        assert_eq!(exit_code(&Error::Usage("bad".into())), 2);
    }

    #[test]
    fn wide_and_watch_belong_to_ls_only() {
        for a in [
            &["ipam", "release", "10.0.0.1", "--wide"][..],
            &["ipam", "release", "10.0.0.1", "--watch"],
            &["ipam", "release", "--watch", "10.0.0.1"],
            &["ipam", "release", "--watch=2", "10.0.0.1"],
        ] {
            let e = run(&args(a)).expect_err("refused");
            assert!(
                matches!(&e, Error::Usage(m) if m.contains("ipam ls")),
                "{e}"
            );
        }
    }
}
