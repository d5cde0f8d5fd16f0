//! The bridge pods join, and the uplink that makes it the LAN: a bridge
//! without a port that has a carrier is an island, and every pod on it
//! gets an address nobody can reach.

use ipnet::IpNet;

use super::finding::Finding;
use crate::names;
use crate::netlink::{Link, Netlink, Socket};

/// What the node's links say, for this check and the ones after it.
pub struct Seen {
    pub findings: Vec<Finding>,
    /// The node's own addresses and their links: every link's but lo's
    /// (where the speaker puts the VIPs it owns), kube-ipvs0's (Service
    /// IPs) and pod veths'.
    pub node_ips: Vec<(IpNet, String)>,
    pub links: Vec<Link>,
}

/// Kinds that can carry the LAN into the bridge (None: a physical NIC).
fn can_be_uplink(l: &Link) -> bool {
    matches!(
        l.kind.as_deref(),
        None | Some("veth") | Some("bond") | Some("vlan") | Some("macvlan") | Some("team")
    ) && l.name != "lo"
        && !names::is_ours(&l.name)
}

pub fn check(bridge: &str, uplink: Option<&str>) -> Seen {
    let mut seen = Seen {
        findings: Vec::new(),
        node_ips: Vec::new(),
        links: Vec::new(),
    };
    let mut nl = match Socket::new() {
        Ok(s) => s,
        Err(e) => {
            seen.findings.push(Finding::warn(
                "bridge",
                format!("cannot read the node's links: {e}"),
                "the bridge and uplink checks need a netlink socket in this network namespace",
                "run flatlan doctor as root on the node (or in its network namespace)",
            ));
            return seen;
        }
    };
    let (links, carriers) = match (nl.links(), nl.carriers()) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => {
            seen.findings.push(Finding::warn(
                "bridge",
                format!("cannot list the node's links: {e}"),
                "the bridge and uplink checks need the link table",
                "run flatlan doctor as root on the node",
            ));
            return seen;
        }
    };
    let carrier = |index: u32| carriers.iter().any(|(i, c)| *i == index && *c);
    for l in links
        .iter()
        .filter(|l| l.name != "lo" && l.name != "kube-ipvs0" && !names::is_ours(&l.name))
    {
        for a in nl.addresses(l.index).unwrap_or_default() {
            seen.node_ips.push((a, l.name.clone()));
        }
    }
    let f = &mut seen.findings;
    // The likeliest uplink first: with a carrier, then a physical NIC.
    let mut candidates: Vec<&Link> = links
        .iter()
        .filter(|l| l.master.is_none() && can_be_uplink(l) && l.name != bridge)
        .collect();
    candidates.sort_by_key(|l| (!carrier(l.index), l.kind.is_some()));
    let enslave_fix = |br: &str| {
        match uplink
        .map(str::to_string)
        .or_else(|| candidates.first().map(|l| l.name.clone()))
    {
        Some(up) => format!(
            "flatlan node bridge --uplink {up}   (moves {up}'s addresses, routes and MAC to {br}; docs/bridge.md has the netplan/networkd/NetworkManager equivalents)\n\
             or by hand, from the console: ip link set {up} master {br}"
        ),
        None => format!(
            "enslave the NIC that is on the LAN: flatlan node bridge --uplink IF, or ip link set IF master {br} (docs/bridge.md)"
        ),
    }
    };
    let Some(br) = links.iter().find(|l| l.name == bridge) else {
        f.push(Finding::fail(
            "bridge",
            format!("bridge {bridge} (the conflist's `bridge`) does not exist"),
            "every pod's veth joins this bridge; ADD fails with code 100 until it exists",
            enslave_fix(bridge),
        ));
        seen.links = links;
        return seen;
    };
    if br.kind.as_deref() != Some("bridge") {
        f.push(Finding::fail(
            "bridge",
            format!(
                "{bridge} is a {}, not a Linux bridge",
                br.kind.as_deref().unwrap_or("physical device")
            ),
            "pods join the LAN through a Linux bridge that holds the node's NIC",
            format!("set `bridge` in the conflist to the bridge that holds the NIC, or create one: flatlan node bridge --uplink {bridge}"),
        ));
        seen.links = links;
        return seen;
    }
    if br.up {
        f.push(Finding::ok("bridge", format!("{bridge} exists and is up")));
    } else {
        f.push(Finding::fail(
            "bridge",
            format!("bridge {bridge} is down"),
            "a bridge that is down forwards nothing: pods and the node are cut off the LAN",
            format!("ip link set {bridge} up (and make the network config bring it up at boot)"),
        ));
    }
    let ports: Vec<&Link> = links
        .iter()
        .filter(|l| l.master == Some(br.index) && can_be_uplink(l))
        .collect();
    let wanted: Vec<&&Link> = match uplink {
        Some(u) => ports.iter().filter(|l| l.name == u).collect(),
        None => ports.iter().collect(),
    };
    let with_carrier: Vec<&&&Link> = wanted.iter().filter(|l| carrier(l.index)).collect();
    if let Some(up) = with_carrier.first() {
        f.push(Finding::ok(
            "uplink",
            format!("{} is enslaved to {bridge} and has a carrier", up.name),
        ));
    } else if let Some(down) = wanted.first() {
        f.push(Finding::fail(
            "uplink",
            format!("uplink {} is in {bridge} but has no carrier", down.name),
            "without a carrier the bridge is cut off the LAN",
            format!(
                "ip link set {} up, and check the cable / the switch port (ip -d link show {})",
                down.name, down.name
            ),
        ));
    } else {
        let what = match uplink {
            Some(u) => format!("uplink {u} is not enslaved to {bridge}"),
            None => format!(
                "{bridge} has no uplink: no physical, veth, bond or VLAN port (pod veths do not count){}",
                if candidates.is_empty() {
                    String::new()
                } else {
                    let n: Vec<&str> = candidates.iter().map(|l| l.name.as_str()).collect();
                    format!("; not enslaved: {}", n.join(", "))
                }
            ),
        };
        f.push(Finding::fail(
            "uplink",
            what,
            "pods get LAN addresses but the bridge is an island: nothing on the LAN can reach them",
            enslave_fix(bridge),
        ));
    }
    seen.links = links;
    seen
}
