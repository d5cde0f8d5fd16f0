//! flatlan's CNI configuration for lab nodes, shared by the demo and the
//! end-to-end tests so both exercise the same setup.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::addresses::{GATEWAY, GATEWAY6, LAN6_SUBNET};
use crate::cni::{Attachment, CniNetwork};
use crate::error::{Error, Result};
use crate::lab::Lab;
use crate::netns::Netns;

pub const SERVICE_CIDR: &str = "10.43.0.0/16";
pub const NETWORK_NAME: &str = "lan";

/// Node `n`'s slice of the LAN: node1 .208/28, node2 .224/28, as k3s
/// `--cluster-cidr=192.168.2.208/27` with `--node-cidr-mask-size=28` gives.
/// Nodes are numbered from 1; the /27 has room for two slices, so any
/// other node is an error (a made-up slice would overlap another node's, or
/// the VIPs above .239).
pub fn node_slice(node: usize) -> Result<String> {
    if !(1..=2).contains(&node) {
        return Err(Error::InvalidConfig(format!(
            "node{node} has no LAN slice: the lab's /27 of pod addresses has two /28 slices, node1 and node2"
        )));
    }
    Ok(format!("192.168.2.{}/28", 208 + 16 * (node - 1)))
}

/// The flatlan plugin section for `node`. `state` is the lab's scratch
/// directory; each node keeps its store under `state/node<N>` because each
/// node is a separate machine. `ranges` empty means the node's slice.
pub fn plugin_conf(state: &Path, node: usize, ranges: &[&str]) -> Result<Value> {
    let ranges: Vec<String> = if ranges.is_empty() {
        vec![node_slice(node)?]
    } else {
        ranges.iter().map(|r| r.to_string()).collect()
    };
    let dir = state.join(format!("node{node}"));
    Ok(json!({
        "type": "flatlan",
        "bridge": "br0",
        "serviceCIDRs": [SERVICE_CIDR],
        "ipam": {
            "subnet": "192.168.2.0/24",
            "gateway": GATEWAY.to_string(),
            "ranges": ranges,
            // The router's DHCP pool is the household's, never flatlan's.
            "exclude": ["192.168.2.100-192.168.2.199"],
            "dataDir": dir.join("data"),
            "bootIdPath": dir.join("boot_id"),
        }
    }))
}

/// Node `n`'s IPv6 slice of the LAN: node1 `fd00:2::1:0/112`, node2
/// `fd00:2::2:0/112` (the node number's digits, as in
/// [`crate::node_ip6`]). Like the IPv4 slices, a slice's first and last
/// addresses are ordinary LAN hosts; only exclusions keep flatlan off.
pub fn node_slice6(node: usize) -> String {
    format!("fd00:2::{node}:0/112")
}

/// The dual-stack flatlan plugin section for `node`: [`plugin_conf`] with
/// its IPv4 keys moved into `ipam.subnets`, plus the IPv6 prefix with the
/// node's [`node_slice6`] and the router as IPv6 gateway.
pub fn plugin_conf_dual(state: &Path, node: usize) -> Result<Value> {
    let mut conf = plugin_conf(state, node, &[])?;
    let mut v4 = json!({});
    if let Some(ipam) = conf["ipam"].as_object_mut() {
        for key in ["subnet", "gateway", "ranges", "exclude"] {
            if let Some(v) = ipam.remove(key) {
                v4[key] = v;
            }
        }
        ipam.insert(
            "subnets".to_owned(),
            json!([
                v4,
                {
                    "subnet": LAN6_SUBNET.to_string(),
                    "gateway": GATEWAY6.to_string(),
                    "ranges": [node_slice6(node)],
                },
            ]),
        );
    }
    Ok(conf)
}

/// A one-plugin conflist around [`plugin_conf`], finding plugins in `bin_dir`.
pub fn network(state: &Path, node: usize, ranges: &[&str], bin_dir: &Path) -> Result<CniNetwork> {
    let list = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [plugin_conf(state, node, ranges)?],
    });
    CniNetwork::new(list, vec![bin_dir.to_path_buf()])
}

/// Writes each node's boot-id file, so tests can simulate a reboot.
pub fn init_state(state: &Path, nodes: usize) -> Result<()> {
    for n in 1..=nodes {
        let dir = state.join(format!("node{n}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        std::fs::write(dir.join("boot_id"), "boot-1\n")
            .map_err(|e| Error::io(format!("write {}/boot_id", dir.display()), e))?;
    }
    Ok(())
}

/// A pod attached with flatlan: its namespace, attachment and result.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub node: usize,
    pub ns: Netns,
    pub att: Attachment,
    pub result: Value,
}

impl Pod {
    pub fn ipv4(&self) -> Option<std::net::Ipv4Addr> {
        ipv4_of(&self.result)
    }

    pub fn ipv6(&self) -> Option<std::net::Ipv6Addr> {
        ipv6_of(&self.result)
    }

    pub fn mac(&self) -> Option<String> {
        mac_of(&self.result)
    }
}

/// Creates the pod's namespace on `node` and ADDs it through `net`, with
/// the pod identity in CNI_ARGS as the kubelet passes it.
pub fn attach(lab: &Lab, net: &CniNetwork, node: usize, name: &str) -> Result<Pod> {
    let ns = lab.add_pod_netns(node, name)?;
    let mut att = Attachment::new(&format!("ctr-{name}"), &ns);
    att.args = vec![
        ("K8S_POD_NAMESPACE".into(), "default".into()),
        ("K8S_POD_NAME".into(), name.into()),
    ];
    let result = net.add(&lab.node(node)?.ns, &att)?;
    Ok(Pod {
        name: name.to_string(),
        node,
        ns,
        att,
        result,
    })
}

/// The first address of type `T` in a CNI result's `ips`.
fn first_ip<T: std::str::FromStr>(result: &Value) -> Option<T> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
        .next()
}

/// The first IPv4 address in a CNI result.
pub fn ipv4_of(result: &Value) -> Option<std::net::Ipv4Addr> {
    first_ip(result)
}

/// The pod interface's MAC in a CNI result (the one with a `sandbox`).
pub fn mac_of(result: &Value) -> Option<String> {
    result["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i.get("sandbox").is_some())?["mac"]
        .as_str()
        .map(str::to_string)
}

/// The first IPv6 address in a CNI result.
pub fn ipv6_of(result: &Value) -> Option<std::net::Ipv6Addr> {
    first_ip(result)
}

/// The directory of the flatlan plugin to run (`given`, or the one next to
/// this executable): the `CNI_PATH` entry that holds it.
pub fn plugin_dir(given: Option<&Path>) -> Result<PathBuf> {
    let plugin = match given {
        Some(p) => p.to_path_buf(),
        None => sibling_binary("flatlan")?,
    };
    plugin
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::InvalidConfig(format!("bad plugin path {}", plugin.display())))
}

/// Overrides which `flatlan` plugin binary the lab runs (an absolute
/// path): CI runs tests against the static build `scripts/build-release`
/// ships, not only the workspace's dynamic one.
pub const PLUGIN_ENV: &str = "FLATLAN_PLUGIN";

/// A sibling binary of the running executable (target/<profile>/NAME);
/// for `flatlan`, [`PLUGIN_ENV`] wins when set.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    if name == "flatlan" {
        if let Some(p) = std::env::var_os(PLUGIN_ENV) {
            let p = PathBuf::from(p);
            // Only its directory becomes CNI_PATH, where the runtime looks
            // for the CNI type's name: any other file name would quietly
            // run whatever `flatlan` sits beside it.
            return if p.is_absolute() && p.exists() && p.file_name() == Some(name.as_ref()) {
                Ok(p)
            } else {
                Err(Error::InvalidConfig(format!(
                    "{PLUGIN_ENV}={} is not an absolute path to an existing file named {name}",
                    p.display()
                )))
            };
        }
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live one level down, in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::InvalidConfig(format!(
            "{} not found: build it first with `cargo build --workspace --bins` (or --release)",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_conf_has_one_subnet_per_family() {
        let c = plugin_conf_dual(Path::new("/tmp/x"), 2).expect("node2 has a slice");
        let ipam = &c["ipam"];
        assert!(ipam.get("subnet").is_none() && ipam.get("ranges").is_none());
        assert_eq!(ipam["subnets"][0]["subnet"], "192.168.2.0/24");
        assert_eq!(ipam["subnets"][0]["ranges"][0], "192.168.2.224/28");
        assert_eq!(ipam["subnets"][1]["subnet"], "fd00:2::/64");
        assert_eq!(ipam["subnets"][1]["gateway"], "fd00:2::1");
        assert_eq!(ipam["subnets"][1]["ranges"][0], "fd00:2::2:0/112");
        assert_eq!(node_slice6(12), "fd00:2::12:0/112");
    }

    #[test]
    fn a_node_without_a_slice_is_an_error_unless_ranges_are_given() {
        assert_eq!(node_slice(1).expect("node1"), "192.168.2.208/28");
        for n in [0, 3, 39] {
            assert!(node_slice(n).is_err(), "node{n}");
            assert!(plugin_conf(Path::new("/tmp/x"), n, &[]).is_err(), "node{n}");
        }
        let c = plugin_conf(Path::new("/tmp/x"), 3, &["192.168.2.60-192.168.2.61"])
            .expect("explicit ranges need no slice");
        assert_eq!(c["ipam"]["ranges"][0], "192.168.2.60-192.168.2.61");
    }
}
