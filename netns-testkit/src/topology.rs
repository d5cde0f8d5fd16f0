//! The lab's wiring as pure `ip -batch` scripts: planned here, applied by
//! [`crate::Lab`]. Keeping them pure makes the topology reviewable and
//! unit-testable without root.
//!
//! The switch script runs first and creates every veth pair with each end
//! placed directly in its namespace (`link add NAME netns A type veth peer
//! name eth0 netns B`), so no interface ever appears in the host
//! namespace, not even for a moment. The other scripts then only configure
//! interfaces that already exist, and can run in parallel.
//!
//! The LAN is dual-stack: every LAN host also gets its `fd00:2::/64`
//! address ([`crate::addresses`]), added `nodad` so nothing waits out
//! duplicate address detection, and an IPv6 default route via the router.
//! The router sends no router advertisements (no radvd, and dnsmasq runs
//! without `--enable-ra`): every IPv6 address and route in the lab is
//! static, so tests see the same tables every run and a pod that grew a
//! SLAAC address could only have taken it from something the test did.
//! Link-local addresses still come up (with DAD) as the kernel makes them.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::addresses::{
    GATEWAY, GATEWAY6, INTERNET_IP, LAN6_PREFIX_LEN, LAN_PREFIX_LEN, ROUTER_WAN_IP, WAN_PREFIX_LEN,
};

/// The LAN bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "sw0";
/// The bridge on every node (what netplan would create on a real host).
pub const NODE_BRIDGE: &str = "br0";
/// The node's physical NIC, a port of [`NODE_BRIDGE`].
pub const NODE_UPLINK: &str = "eth0";
/// The router's interface towards the internet namespace.
pub const ROUTER_WAN_IF: &str = "wan0";

/// Namespace names of one lab.
#[derive(Debug, Clone)]
pub(crate) struct NsNames {
    pub switch: String,
    pub router: String,
    pub internet: String,
    pub device: String,
    pub client: String,
    pub nodes: Vec<String>,
}

impl NsNames {
    pub(crate) fn new(prefix: &str, nodes: usize) -> Self {
        let n = |role: &str| format!("{prefix}-{role}");
        NsNames {
            switch: n("switch"),
            router: n("router"),
            internet: n("internet"),
            device: n("device"),
            client: n("client"),
            nodes: (1..=nodes).map(|i| n(&format!("node{i}"))).collect(),
        }
    }

    pub(crate) fn all(&self) -> Vec<String> {
        let mut v = vec![
            self.switch.clone(),
            self.router.clone(),
            self.internet.clone(),
            self.device.clone(),
            self.client.clone(),
        ];
        v.extend(self.nodes.iter().cloned());
        v
    }
}

/// A bridge that forwards from the moment a port comes up: STP off and no
/// forward delay. With the default 15 s delay, the first pings of every
/// test would vanish while ports sit in the listening/learning states.
fn add_bridge(s: &mut String, name: &str) {
    let _ = writeln!(
        s,
        "link add {name} type bridge stp_state 0 forward_delay 0\nlink set {name} up"
    );
}

/// The switch: bridge sw0 and one veth port per LAN host; also creates the
/// router–internet cable, which has no switch end.
pub(crate) fn switch_script(ns: &NsNames) -> String {
    let mut s = String::from("link set lo up\n");
    add_bridge(&mut s, SWITCH_BRIDGE);
    let mut port = |port: &str, peer_ns: &str| {
        let _ = writeln!(
            s,
            "link add {port} type veth peer name eth0 netns {peer_ns}\n\
             link set {port} master {SWITCH_BRIDGE}\n\
             link set {port} up"
        );
    };
    port("p-router", &ns.router);
    port("p-device", &ns.device);
    port("p-client", &ns.client);
    for (i, node) in ns.nodes.iter().enumerate() {
        port(&format!("p-node{}", i + 1), node);
    }
    let _ = writeln!(
        s,
        "link add name {ROUTER_WAN_IF} netns {} type veth peer name eth0 netns {}",
        ns.router, ns.internet
    );
    s
}

pub(crate) fn router_script() -> String {
    format!(
        "link set lo up\n\
         addr add {GATEWAY}/{LAN_PREFIX_LEN} dev eth0\n\
         addr add {GATEWAY6}/{LAN6_PREFIX_LEN} dev eth0 nodad\n\
         link set eth0 up\n\
         addr add {ROUTER_WAN_IP}/{WAN_PREFIX_LEN} dev {ROUTER_WAN_IF}\n\
         link set {ROUTER_WAN_IF} up\n"
    )
}

pub(crate) fn internet_script() -> String {
    format!(
        "link set lo up\n\
         addr add {INTERNET_IP}/{WAN_PREFIX_LEN} dev eth0\n\
         link set eth0 up\n\
         route add default via {ROUTER_WAN_IP}\n"
    )
}

/// A plain LAN host (device, client): addresses on eth0, default routes
/// via the router for both families.
pub(crate) fn host_script(ip: Ipv4Addr, ip6: Ipv6Addr) -> String {
    format!(
        "link set lo up\n\
         addr add {ip}/{LAN_PREFIX_LEN} dev eth0\n\
         addr add {ip6}/{LAN6_PREFIX_LEN} dev eth0 nodad\n\
         link set eth0 up\n\
         route add default via {GATEWAY}\n\
         {}",
        default6()
    )
}

/// The IPv6 default route. `::/0` names the family, which a batch line
/// cannot do with `-6`.
fn default6() -> String {
    format!("route add ::/0 via {GATEWAY6}\n")
}

/// A node as netplan leaves it: eth0 enslaved to br0, the IPs on br0.
pub(crate) fn node_script(ip: Ipv4Addr, ip6: Ipv6Addr) -> String {
    let mut s = String::from("link set lo up\n");
    add_bridge(&mut s, NODE_BRIDGE);
    let _ = write!(
        s,
        "link set {NODE_UPLINK} master {NODE_BRIDGE}\n\
         link set {NODE_UPLINK} up\n\
         addr add {ip}/{LAN_PREFIX_LEN} dev {NODE_BRIDGE}\n\
         addr add {ip6}/{LAN6_PREFIX_LEN} dev {NODE_BRIDGE} nodad\n\
         route add default via {GATEWAY}\n"
    );
    s.push_str(&default6());
    s
}

/// Home-router NAT: everything leaving towards the internet takes the
/// router's WAN address.
pub(crate) fn router_nft() -> String {
    format!(
        "table ip flatlan-lab {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{ROUTER_WAN_IF}\" masquerade\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_has_a_port_per_host_and_node() {
        let ns = NsNames::new("fl1l0", 2);
        let s = switch_script(&ns);
        for port in ["p-router", "p-device", "p-client", "p-node1", "p-node2"] {
            assert!(s.contains(&format!("link set {port} master sw0")), "{port}");
        }
        assert!(s.contains("peer name eth0 netns fl1l0-node2"));
        assert!(s.contains(
            "link add name wan0 netns fl1l0-router type veth peer name eth0 netns fl1l0-internet"
        ));
        assert!(s.contains("stp_state 0 forward_delay 0"));
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        let ns = NsNames::new("fl4194304l4294967295", crate::addresses::MAX_NODES);
        for line in switch_script(&ns).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "add" || w[0] == "name" {
                    assert!(w[1].len() <= 15, "{line}");
                }
            }
        }
    }

    #[test]
    fn node_ip_lives_on_the_bridge() {
        let s = node_script(
            Ipv4Addr::new(192, 168, 2, 11),
            "fd00:2::11".parse().expect("v6"),
        );
        assert!(s.contains("link set eth0 master br0"));
        assert!(s.contains("addr add 192.168.2.11/24 dev br0"));
        assert!(s.contains("addr add fd00:2::11/64 dev br0 nodad"));
        assert!(s.contains("route add default via 192.168.2.1"));
        assert!(s.contains("route add ::/0 via fd00:2::1"));
        // The node IP must never be on the uplink itself.
        assert!(!s.contains("dev eth0"));
    }

    #[test]
    fn router_masquerades_only_towards_wan() {
        let nft = router_nft();
        assert!(nft.contains("oifname \"wan0\" masquerade"));
        assert!(router_script().contains("addr add 192.168.2.1/24 dev eth0"));
        assert!(router_script().contains("addr add fd00:2::1/64 dev eth0 nodad"));
    }
}
