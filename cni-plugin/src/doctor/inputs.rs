//! What doctor compares the node against: flatlan's conflist (found in
//! the conf dir the installer would use), the node slice, the speaker's
//! config and the LB pools and DHCP pool the user names.

use std::path::{Path, PathBuf};

use flatlan_ipam::node_range::NodeRange;
use flatlan_ipam::IpRange;
use serde::Deserialize;
use serde_yaml::Value;

use super::finding::Finding;
use super::overlap::{Kind, Span};
use crate::config::NetConf;
use crate::install::layout::{self, under};

/// The speaker's heartbeat port when its config names none (the speaker's
/// `config::DEFAULT_PORT`; the plugin does not link the speaker).
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7946;
/// Where the DaemonSet mounts the speaker's ConfigMap.
pub const SPEAKER_CONFIG: &str = "/etc/flatlan-speaker/speaker.yaml";

/// A file name in the conf dir and its parsed flatlan config.
pub struct Conflist {
    pub name: String,
    pub conf: Option<NetConf>,
}

/// flatlan's conflist in `dir` (seen under the root): the first config
/// file, in the runtime's order, with a plugin of type flatlan.
pub fn find_conflist(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    names.sort();
    names.into_iter().find(|p| {
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| {
                v["type"] == "flatlan"
                    || v["plugins"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["type"] == "flatlan"))
            })
    })
}

/// The conflist: the given file, or flatlan's in the conf dir.
pub fn conflist(
    root: &Path,
    conf_dir: &Path,
    given: Option<&Path>,
    f: &mut Vec<Finding>,
) -> Option<Conflist> {
    // `shown`: the host path for the report; `path`: where it is read.
    let (path, shown) = match given {
        Some(p) => (p.to_path_buf(), p.to_path_buf()),
        None => match find_conflist(&under(root, conf_dir)) {
            Some(p) => {
                let host = conf_dir.join(p.file_name().unwrap_or_default());
                (p, host)
            }
            None => {
                f.push(Finding::fail(
                    "conflist",
                    format!("no CNI config with a plugin of type flatlan in {}", conf_dir.display()),
                    "without it the runtime never calls flatlan (and the node stays NetworkReady=false if no other CNI is there)",
                    "install it: flatlan install --conflist FILE (the DaemonSet's init container does this once the node's slice is known); or point doctor at it with --conflist FILE / --conf-dir DIR",
                ));
                return None;
            }
        },
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    match crate::watch::load(&path) {
        Ok(conf) => {
            f.push(Finding::ok(
                "conflist",
                format!("{} parses", shown.display()),
            ));
            Some(Conflist {
                name,
                conf: Some(conf),
            })
        }
        Err(e) => {
            f.push(Finding::fail(
                "conflist",
                format!("{}: {e}", shown.display()),
                "every ADD with this config fails the same way",
                "fix the field named above in the conflist (deploy/flatlan.yaml's ConfigMap flatlan-network), then rerun flatlan install",
            ));
            Some(Conflist { name, conf: None })
        }
    }
}

/// This node's pod range: the conflist's ranges, or the node slice file.
pub fn pod_ranges(root: &Path, conf: &NetConf, f: &mut Vec<Finding>) -> Vec<Span> {
    let mut spans: Vec<Span> = conf
        .subnets()
        .iter()
        .flat_map(|s| s.ranges.iter())
        .map(|r| Span::new(Kind::Slice, *r, "conflist ipam.ranges"))
        .collect();
    let Some(rf) = &conf.ipam.range_file else {
        return spans;
    };
    match NodeRange::load(&under(root, rf)) {
        Ok(nr) => {
            f.push(Finding::ok(
                "node_range",
                format!("{}: {}", rf.display(), list(&nr.ranges)),
            ));
            spans.extend(
                nr.ranges
                    .iter()
                    .map(|r| Span::new(Kind::Slice, *r, rf.display().to_string())),
            );
        }
        Err(e) => f.push(Finding::fail(
            "node_range",
            e.to_string(),
            "ADD allocates from this node's slice; without it every pod start fails",
            "check the node agent: kubectl -n flatlan logs ds/flatlan -c node-range, and that the Node has spec.podCIDRs (k3s --cluster-cidr)",
        )),
    }
    spans
}

fn list(r: &[IpRange]) -> String {
    r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The speaker config's heartbeat port and static VIPs.
pub struct Speaker {
    pub port: u16,
    pub port_source: String,
    pub vips: Vec<Span>,
}

pub fn speaker(root: &Path, given: Option<&Path>, f: &mut Vec<Finding>) -> Speaker {
    let mut s = Speaker {
        port: DEFAULT_HEARTBEAT_PORT,
        port_source: "the speaker's default".into(),
        vips: Vec::new(),
    };
    let path = given.map_or_else(|| under(root, Path::new(SPEAKER_CONFIG)), Path::to_path_buf);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if given.is_none() && e.kind() == std::io::ErrorKind::NotFound => return s,
        Err(e) => {
            f.push(Finding::fail(
                "speaker_config",
                format!("cannot read {}: {e}", path.display()),
                "the heartbeat port and static VIPs come from it",
                "pass the speaker's config with --speaker-config FILE (kubectl -n flatlan get cm flatlan-speaker -o jsonpath='{.data.speaker\\.yaml}' > speaker.yaml)",
            ));
            return s;
        }
    };
    match parse_speaker(&text) {
        Ok((port, vips)) => {
            if let Some(p) = port {
                s.port = p;
                s.port_source = format!("listen in {}", path.display());
            }
            s.vips = vips
                .into_iter()
                .map(|r| Span::new(Kind::LbPool, r, format!("vips in {}", path.display())))
                .collect();
        }
        Err(e) => f.push(Finding::fail(
            "speaker_config",
            format!("{}: {e}", path.display()),
            "the speaker refuses a config it cannot parse",
            "fix the field named above (README, \"The speaker without Kubernetes\", lists them)",
        )),
    }
    s
}

/// `listen`'s port and `vips[].address`, leniently: the speaker itself
/// validates the rest.
pub fn parse_speaker(text: &str) -> Result<(Option<u16>, Vec<IpRange>), String> {
    let v: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let port = match v.get("listen") {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) => Some(
            l.parse::<std::net::SocketAddr>()
                .map(|a| a.port())
                .or_else(|_| {
                    l.parse::<std::net::IpAddr>()
                        .map(|_| DEFAULT_HEARTBEAT_PORT)
                })
                .map_err(|_| format!("listen: {l:?} is not ip:port"))?,
        ),
        Some(other) => return Err(format!("listen: expected \"ip:port\", got {other:?}")),
    };
    let mut vips = Vec::new();
    if let Some(list) = v.get("vips").and_then(Value::as_sequence) {
        for (i, vip) in list.iter().enumerate() {
            let a = vip
                .get("address")
                .and_then(Value::as_str)
                .ok_or(format!("vips[{i}].address is missing"))?;
            vips.push(
                a.parse::<IpRange>()
                    .map_err(|e| format!("vips[{i}].address: {e}"))?,
            );
        }
    }
    Ok((port, vips))
}

/// `spec.addresses` of every IPAddressPool in a YAML file (one object,
/// a List, or several documents: `kubectl get ipaddresspools -o yaml`).
pub fn pools_file(path: &Path) -> Result<Vec<Span>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        let items: Vec<&Value> = match v.get("items").and_then(Value::as_sequence) {
            Some(items) => items.iter().collect(),
            None => vec![&v],
        };
        for item in items {
            let name = item
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let Some(addrs) = item
                .get("spec")
                .and_then(|s| s.get("addresses"))
                .and_then(Value::as_sequence)
            else {
                continue;
            };
            for a in addrs.iter().filter_map(Value::as_str) {
                let r: IpRange = a
                    .parse()
                    .map_err(|e| format!("{}: pool {name}: {e}", path.display()))?;
                out.push(Span::new(Kind::LbPool, r, format!("pool {name}")));
            }
        }
    }
    Ok(out)
}

/// The conf dir: `--conf-dir`, else the installer's layout detection.
pub fn conf_dir(root: &Path, given: Option<PathBuf>) -> (PathBuf, String) {
    let l = layout::detect(root, None, given);
    (l.conf_dir, l.why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_config_port_and_vips() {
        let (p, v) = parse_speaker("listen: 0.0.0.0:7000\nvips:\n  - address: 192.168.2.240\n")
            .expect("parse");
        assert_eq!(p, Some(7000));
        assert_eq!(v, vec!["192.168.2.240".parse::<IpRange>().expect("ip")]);
        assert_eq!(
            parse_speaker("multicast: true\n").expect("parse"),
            (None, vec![])
        );
        assert!(parse_speaker("listen: [1]\n")
            .unwrap_err()
            .contains("listen"));
        assert!(parse_speaker("vips: [{address: x}]\n")
            .unwrap_err()
            .contains("vips[0]"));
        assert!(parse_speaker(": : :\n").is_err());
    }

    #[test]
    fn pools_from_kubectl_output() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("pools.yaml");
        std::fs::write(&p, "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: lan}\n  spec: {addresses: [192.168.2.240/29, 192.168.2.250-192.168.2.251]}\n---\nmetadata: {name: two}\nspec: {addresses: [fd00::10]}\n").expect("write");
        let s = pools_file(&p).expect("pools");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].source, "pool lan");
        assert_eq!(s[2].source, "pool two");
        std::fs::write(&p, "spec: {addresses: [nonsense]}\n").expect("write");
        assert!(pools_file(&p).unwrap_err().contains("pool ?"));
    }
}
