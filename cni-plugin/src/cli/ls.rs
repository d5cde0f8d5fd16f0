//! `flatlan ipam ls [--wide] [--json]`: one row per address of this node,
//! and with `--wide` the pod behind it as the node sees it (wide.rs).

use std::net::IpAddr;

use flatlan_ipam::store::{now_secs, read_boot_id, State};
use serde_json::{json, Value};

use super::wide::{Probe, Wide};
use super::{networks, Opts};
use crate::error::Result;

struct Row {
    network: String,
    ip: IpAddr,
    mac: String,
    container: String,
    ifname: String,
    pod: String,
    since: u64,
    state: String,
    /// Only for allocated addresses, and only with `--wide`.
    wide: Option<Wide>,
}

/// One row per address. `boot_id` is this boot's, if readable.
fn rows(network: &str, s: &State, now: u64, boot_id: Option<&str>) -> Vec<Row> {
    let mut out: Vec<Row> = s
        .allocations()
        .iter()
        .map(|a| Row {
            network: network.to_string(),
            ip: a.ip,
            mac: a.mac.clone(),
            container: a.container_id.clone(),
            ifname: a.ifname.clone(),
            pod: a.pod.as_ref().map(|p| p.key()).unwrap_or_default(),
            since: a.since,
            state: match boot_id {
                Some(b) if b != a.boot_id => {
                    "reclaimable (allocated before the last reboot; the next ADD frees it)".into()
                }
                _ => "allocated".into(),
            },
            wide: None,
        })
        .collect();
    out.extend(
        s.quarantined()
            .iter()
            .filter(|q| q.until > now)
            .map(|q| Row {
                network: network.to_string(),
                ip: q.ip,
                mac: q.mac.clone(),
                container: String::new(),
                ifname: String::new(),
                pod: String::new(),
                since: q.since,
                state: format!(
                    "quarantined (held by a LAN host, retry in {}s)",
                    q.until - now
                ),
                wide: None,
            }),
    );
    // Only remembered addresses that are free: one a pod holds is not
    // reserved for anyone (stores from before that rule may list it).
    for (pod, st) in s.remembered() {
        for ip in st.ips.iter().filter(|ip| s.owner_of(**ip, now).is_none()) {
            out.push(Row {
                network: network.to_string(),
                ip: *ip,
                mac: String::new(),
                container: String::new(),
                ifname: String::new(),
                pod: pod.clone(),
                since: st.last_seen,
                state: "remembered (free; preferred for this pod)".into(),
                wide: None,
            });
        }
    }
    out.sort_by_key(|r| (r.network.clone(), r.ip));
    out
}

/// One listing, as printed (also each frame of `--watch`).
pub(super) fn ls(opts: &Opts) -> Result<String> {
    let now = now_secs();
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let boot_id = read_boot_id(&opts.boot_id_path).ok();
    let mut all = Vec::new();
    for (name, store) in networks(opts)? {
        all.extend(rows(&name, &store.peek()?, now, boot_id.as_deref()));
    }
    if opts.wide {
        let mut probe = Probe::new();
        for r in all.iter_mut().filter(|r| !r.container.is_empty()) {
            r.wide = Some(probe.of(&r.container, &r.ifname));
        }
    }
    if opts.json {
        let v: Vec<Value> = all.iter().map(|r| to_json(r, &node, opts.wide)).collect();
        return Ok(format!("{}\n", Value::Array(v)));
    }
    if opts.wide {
        return Ok(wide_table(&all, &node, now));
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
            short_id(&r.container),
            r.pod,
            node,
            age(now.saturating_sub(r.since)),
            r.state
        );
    }
    Ok(out)
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn to_json(r: &Row, node: &str, wide: bool) -> Value {
    let mut v = json!({"network": r.network, "ip": r.ip, "mac": r.mac, "container": r.container,
                       "pod": r.pod, "node": node, "since": r.since, "state": r.state});
    if wide {
        let w = r.wide.as_ref();
        let procs: Vec<Value> = w
            .map(|w| &w.procs[..])
            .unwrap_or_default()
            .iter()
            .map(|p| json!({"pid": p.pid, "command": p.command}))
            .collect();
        let extra = json!({
            "ifname": r.ifname,
            "veth": w.map(|w| &w.veth),
            "live": w.map(|w| w.live.word()),
            "pod_mac": w.and_then(|w| w.pod_mac.as_ref()),
            "netns": w.and_then(|w| w.netns.as_ref()).map(|p| p.display().to_string()),
            "netns_inode": w.and_then(|w| w.inode),
            "processes": procs,
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
    }
    v
}

const WIDE_HEADER: [&str; 12] = [
    "NETWORK",
    "ADDRESS",
    "MAC",
    "CONTAINER",
    "POD",
    "NODE",
    "AGE",
    "VETH",
    "NETNS",
    "INODE",
    "LIVE",
    "STATE",
];

/// The wide table: columns as wide as their widest cell (namespace paths
/// vary too much for fixed widths), each pod's processes on indented lines
/// under its row, so `grep -A` on an address shows them.
fn wide_table(all: &[Row], node: &str, now: u64) -> String {
    let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let cells: Vec<[String; 12]> = all
        .iter()
        .map(|r| {
            let w = r.wide.as_ref();
            let mac = w
                .and_then(|w| w.pod_mac.clone())
                .unwrap_or_else(|| r.mac.clone());
            [
                r.network.clone(),
                r.ip.to_string(),
                if mac.is_empty() { "-".into() } else { mac },
                dash(Some(short_id(&r.container).to_string()).filter(|c| !c.is_empty())),
                dash(Some(r.pod.clone()).filter(|p| !p.is_empty())),
                node.to_string(),
                age(now.saturating_sub(r.since)),
                dash(
                    w.filter(|w| w.live != super::wide::Live::Gone)
                        .map(|w| w.veth.clone()),
                ),
                dash(
                    w.and_then(|w| w.netns.as_ref())
                        .map(|p| p.display().to_string()),
                ),
                dash(w.and_then(|w| w.inode).map(|i| i.to_string())),
                dash(w.map(|w| w.live.word().to_string())),
                r.state.clone(),
            ]
        })
        .collect();
    let mut widths = WIDE_HEADER.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[&str]| {
        let mut s = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                s += c;
            } else {
                s += &format!("{c:<w$} ", w = widths[i]);
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&WIDE_HEADER);
    for (r, row) in all.iter().zip(&cells) {
        out += &line(&row.each_ref().map(String::as_str));
        for p in r.wide.iter().flat_map(|w| &w.procs) {
            out += &format!("    pid {:<8} {}\n", p.pid, p.command);
        }
    }
    out
}

pub(super) fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::wide::{Live, Proc};
    use super::*;

    fn row(ip: &str, container: &str, wide: Option<Wide>) -> Row {
        Row {
            network: "lan".into(),
            ip: ip.parse().expect("ip"),
            mac: "0a:58:c0:a8:02:d2".into(),
            container: container.into(),
            ifname: "eth0".into(),
            pod: "default/web".into(),
            since: 100,
            state: "allocated".into(),
            wide,
        }
    }

    fn up() -> Wide {
        Wide {
            veth: "fl0123456789ab".into(),
            live: Live::Up,
            pod_mac: Some("0a:58:c0:a8:02:d3".into()),
            netns: Some(PathBuf::from("/run/netns/cni-1234")),
            inode: Some(4_026_532_281),
            procs: vec![
                Proc {
                    pid: 4242,
                    command: "sleep 1000".into(),
                },
                Proc {
                    pid: 4243,
                    command: "[sh]".into(),
                },
            ],
        }
    }

    fn gone() -> Wide {
        Wide {
            veth: "fl0123456789ac".into(),
            live: Live::Gone,
            pod_mac: None,
            netns: None,
            inode: None,
            procs: vec![],
        }
    }

    #[test]
    fn the_wide_table_aligns_columns_and_lists_processes_under_their_pod() {
        let rows = [
            row("192.168.2.210", "abcdef0123456789", Some(up())),
            row("192.168.2.211", "ffff", Some(gone())),
        ];
        let t = wide_table(&rows, "node1", 160);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].starts_with("NETWORK "), "{t}");
        // Columns line up: every row's INODE cell starts where the header's does.
        let col = lines[0].find("INODE").expect("INODE");
        assert_eq!(lines[1].get(col..col + 10), Some("4026532281"), "{t}");
        assert_eq!(lines[4].get(col..col + 2), Some("- "), "{t}");
        // The live MAC wins over the store's; the container ID is shortened.
        assert!(lines[1].contains("0a:58:c0:a8:02:d3"), "{t}");
        assert!(lines[1].contains(" abcdef012345 "), "{t}");
        assert!(lines[1].contains("/run/netns/cni-1234"), "{t}");
        assert!(lines[1].contains(" up "), "{t}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["pid", "4242", "sleep", "1000"]
        );
        assert!(lines[3].contains("[sh]"), "{t}");
        // A gone pod: dashes, the word, the store's MAC, never its veth name.
        assert!(lines[4].contains(" gone "), "{t}");
        assert!(lines[4].contains("0a:58:c0:a8:02:d2"), "{t}");
        assert!(!lines[4].contains("fl0123456789ac"), "{t}");
        assert!(lines[4].ends_with("allocated"), "{t}");
    }

    #[test]
    fn rows_without_a_pod_show_dashes() {
        let mut r = row("192.168.2.212", "", None);
        r.mac = String::new();
        r.pod = String::new();
        r.state = "quarantined".into();
        let t = wide_table(&[r], "node1", 160);
        let cells: Vec<&str> = t.lines().nth(1).expect("row").split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "lan",
                "192.168.2.212",
                "-",
                "-",
                "-",
                "node1",
                "60s",
                "-",
                "-",
                "-",
                "-",
                "quarantined"
            ]
        );
    }

    #[test]
    fn wide_json_has_the_wide_fields_and_the_plain_one_has_not() {
        let r = row("192.168.2.210", "abc", Some(up()));
        let v = to_json(&r, "node1", true);
        assert_eq!(v["veth"], "fl0123456789ab");
        assert_eq!(v["live"], "up");
        assert_eq!(v["pod_mac"], "0a:58:c0:a8:02:d3");
        assert_eq!(v["mac"], "0a:58:c0:a8:02:d2");
        assert_eq!(v["netns"], "/run/netns/cni-1234");
        assert_eq!(v["netns_inode"], 4_026_532_281u64);
        assert_eq!(v["processes"][0]["pid"], 4242);
        assert_eq!(v["processes"][0]["command"], "sleep 1000");
        let g = to_json(&row("192.168.2.211", "abc", Some(gone())), "node1", true);
        assert_eq!(g["live"], "gone");
        assert!(g["netns"].is_null() && g["netns_inode"].is_null());
        assert_eq!(g["processes"], json!([]));
        let plain = to_json(&r, "node1", false);
        assert!(plain.get("veth").is_none() && plain.get("processes").is_none());
    }
}
