//! `flatlan ipam ls|release`: the operator's view of the allocation store.
//!
//! Runtimes invoke the plugin with no arguments, so any argument means a
//! human is at the keyboard. Parsed by hand: clap would double the size of
//! a binary that runs on every pod start.

use std::net::IpAddr;
use std::path::PathBuf;

use flatlan_ipam::store::{now_secs, State};
use flatlan_ipam::Store;
use serde_json::json;

use crate::config::DEFAULT_DATA_DIR;
use crate::error::{Error, Result};
use crate::names;
use crate::netlink::{Netlink, Socket};

const USAGE: &str = "usage:
  flatlan ipam ls      [--data-dir DIR] [--network NAME] [--json]
  flatlan ipam release ADDRESS [--data-dir DIR] [--network NAME] [--force]
  flatlan ipam watch   --conf FILE

Without --network, every network under the data directory is shown.
`release` refuses to free an address whose pod veth still exists unless
--force is given. `watch` runs until killed: it quarantines a pool address
as soon as a LAN host is seen using it (FILE: the conflist).";

struct Opts {
    data_dir: PathBuf,
    network: Option<String>,
    json: bool,
    force: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        data_dir: DEFAULT_DATA_DIR.into(),
        network: None,
        json: false,
        force: false,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{flag} needs a value\n{USAGE}")))
        };
        match a.as_str() {
            "--data-dir" => o.data_dir = value("--data-dir")?.into(),
            "--network" => o.network = Some(value("--network")?),
            "--json" => o.json = true,
            "--force" => o.force = true,
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            s if s.starts_with('-') => {
                return Err(Error::Usage(format!("unknown flag {s}\n{USAGE}")))
            }
            s => o.positional.push(s.to_string()),
        }
    }
    Ok(o)
}

/// Runs the CLI; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("flatlan: {e}");
            2
        }
    }
}

fn run(args: &[String]) -> Result<String> {
    match args.first().map(String::as_str) {
        Some("ipam") => {}
        _ => return Err(Error::Usage(USAGE.into())),
    }
    let verb = args.get(1).map(String::as_str).unwrap_or("");
    if verb == "watch" {
        return crate::watch::main(args.get(2..).unwrap_or_default());
    }
    let opts = parse(args.get(2..).unwrap_or_default())?;
    match verb {
        "ls" => ls(&opts),
        "release" => release(&opts),
        "probe-ahead" => probe_ahead(),
        _ => Err(Error::Usage(USAGE.into())),
    }
}

fn networks(opts: &Opts) -> Result<Vec<(String, Store)>> {
    let names: Vec<String> = match &opts.network {
        Some(n) => vec![n.clone()],
        None => match std::fs::read_dir(&opts.data_dir) {
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                v.sort();
                v
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", opts.data_dir.display(), e)),
        },
    };
    names
        .into_iter()
        .map(|n| Ok((n.clone(), Store::new(&opts.data_dir, &n)?)))
        .collect()
}

struct Row {
    network: String,
    ip: IpAddr,
    mac: String,
    container: String,
    pod: String,
    since: u64,
    state: String,
}

fn rows(network: &str, s: &State, now: u64) -> Vec<Row> {
    let mut out: Vec<Row> = s
        .allocations
        .iter()
        .map(|a| Row {
            network: network.to_string(),
            ip: a.ip,
            mac: a.mac.clone(),
            container: a.container_id.clone(),
            pod: a.pod.as_ref().map(|p| p.key()).unwrap_or_default(),
            since: a.since,
            state: "allocated".into(),
        })
        .collect();
    out.extend(s.quarantine.iter().filter(|q| q.until > now).map(|q| Row {
        network: network.to_string(),
        ip: q.ip,
        mac: q.mac.clone(),
        container: String::new(),
        pod: String::new(),
        since: q.since,
        state: format!(
            "quarantined (held by a LAN host, retry in {}s)",
            q.until - now
        ),
    }));
    for (pod, st) in &s.sticky {
        for ip in &st.ips {
            out.push(Row {
                network: network.to_string(),
                ip: *ip,
                mac: String::new(),
                container: String::new(),
                pod: pod.clone(),
                since: st.last_seen,
                state: "remembered (free; kept for this pod)".into(),
            });
        }
    }
    out.sort_by_key(|r| (r.network.clone(), r.ip));
    out
}

fn ls(opts: &Opts) -> Result<String> {
    let now = now_secs();
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut all = Vec::new();
    for (name, store) in networks(opts)? {
        all.extend(rows(&name, &store.peek()?, now));
    }
    if opts.json {
        let v: Vec<_> = all
            .iter()
            .map(|r| {
                json!({"network": r.network, "ip": r.ip, "mac": r.mac, "container": r.container,
                       "pod": r.pod, "node": node, "since": r.since, "state": r.state})
            })
            .collect();
        return Ok(format!("{}\n", serde_json::Value::Array(v)));
    }
    let mut out = format!(
        "{:<10} {:<26} {:<18} {:<14} {:<28} {:<12} {:<11} STATE\n",
        "NETWORK", "ADDRESS", "MAC", "CONTAINER", "POD", "NODE", "AGE"
    );
    for r in &all {
        out += &format!(
            "{:<10} {:<26} {:<18} {:<14} {:<28} {:<12} {:<11} {}\n",
            r.network,
            r.ip,
            r.mac,
            r.container.get(..12).unwrap_or(&r.container),
            r.pod,
            node,
            age(now.saturating_sub(r.since)),
            r.state
        );
    }
    Ok(out)
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

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
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
        if let Some(a) = s.allocations.iter().find(|a| a.ip == ip).cloned() {
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
        let before = s.quarantine.len();
        s.quarantine.retain(|q| q.ip != ip);
        let mut changed = before != s.quarantine.len();
        for st in s.sticky.values_mut() {
            let n = st.ips.len();
            st.ips.retain(|x| *x != ip);
            changed |= n != st.ips.len();
        }
        s.sticky.retain(|_, st| !st.ips.is_empty());
        if changed {
            locked.commit()?;
            return Ok(format!("released {ip} in network {name}\n"));
        }
    }
    Err(Error::Usage(format!(
        "{ip} is not allocated, quarantined or remembered"
    )))
}
