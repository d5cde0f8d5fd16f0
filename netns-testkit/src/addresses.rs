//! The lab's fixed address plan: a typical home LAN behind a NAT router,
//! dual-stack like a home router with a ULA prefix. Every IPv6 address
//! mirrors its IPv4 twin: `192.168.2.X` is `fd00:2::X` (the last group is
//! written with the same digits, so `.60` is `::60`).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// Prefix length of the LAN.
pub const LAN_PREFIX_LEN: u8 = 24;
/// The LAN subnet, 192.168.2.0/24.
pub const LAN_SUBNET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 2, 0), LAN_PREFIX_LEN);
/// The directed broadcast address of the LAN.
pub const LAN_BROADCAST: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 255);
/// The home router's LAN address, everyone's default gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 1);
/// The LAN device (a speaker or printer running avahi).
pub const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 50);
/// The LAN client (a phone or laptop).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 60);
/// First and last address the router's DHCP server hands out.
pub const DHCP_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 2, 100),
    Ipv4Addr::new(192, 168, 2, 199),
);
/// The router's WAN address (what the internet sees after masquerade).
pub const ROUTER_WAN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// A host "on the internet" (TEST-NET-3, never routed for real).
pub const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Prefix length of the router–internet link.
pub const WAN_PREFIX_LEN: u8 = 24;
/// Node addresses are `192.168.2.(NODE_IP_BASE + i)` for node i = 1, 2, ...
pub const NODE_IP_BASE: u8 = 10;
/// Most nodes a lab can have: node IPs must stay below [`DEVICE_IP`].
pub const MAX_NODES: usize = 39;

/// Prefix length of the LAN's IPv6 prefix.
pub const LAN6_PREFIX_LEN: u8 = 64;
/// The LAN's ULA prefix, fd00:2::/64 (what a home router announces).
pub const LAN6_SUBNET: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0), LAN6_PREFIX_LEN);
/// The router's LAN IPv6 address, everyone's IPv6 default gateway.
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x1);
/// The LAN device's IPv6 address.
pub const DEVICE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x50);
/// The LAN client's IPv6 address.
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 0x60);

/// The address of node `index` (1-based), or `None` if out of range.
pub fn node_ip(index: usize) -> Option<Ipv4Addr> {
    let host = node_host(index)?;
    let [a, b, c, _] = GATEWAY.octets();
    Some(Ipv4Addr::new(a, b, c, host))
}

/// The IPv6 address of node `index` (1-based): `fd00:2::11` for node1,
/// the same digits as its IPv4 address's last octet.
pub fn node_ip6(index: usize) -> Option<Ipv6Addr> {
    let host = node_host(index)?;
    // 11 -> 0x11: the digits read as hex, so the v6 address looks like the v4 one.
    let group = u16::from_str_radix(&host.to_string(), 16).ok()?;
    let s = LAN6_SUBNET.network().segments();
    Some(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, group))
}

fn node_host(index: usize) -> Option<u8> {
    if index == 0 || index > MAX_NODES {
        return None;
    }
    NODE_IP_BASE.checked_add(u8::try_from(index).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ips_stay_clear_of_devices() {
        assert_eq!(node_ip(1), Some(Ipv4Addr::new(192, 168, 2, 11)));
        assert_eq!(node_ip(MAX_NODES), Some(Ipv4Addr::new(192, 168, 2, 49)));
        assert_eq!(node_ip(0), None);
        assert_eq!(node_ip(MAX_NODES + 1), None);
        for i in 1..=MAX_NODES {
            let ip = node_ip(i).expect("in range");
            assert!(LAN_SUBNET.contains(&ip));
            assert!(ip < DEVICE_IP && ip != GATEWAY);
        }
        assert_eq!(LAN_SUBNET.broadcast(), LAN_BROADCAST);
    }

    #[test]
    fn ipv6_plan_mirrors_ipv4() {
        assert_eq!(node_ip6(1), Some("fd00:2::11".parse().unwrap()));
        assert_eq!(node_ip6(MAX_NODES), Some("fd00:2::49".parse().unwrap()));
        assert_eq!(node_ip6(0), None);
        for ip in [GATEWAY6, DEVICE_IP6, CLIENT_IP6] {
            assert!(LAN6_SUBNET.contains(&ip));
        }
        assert_eq!(CLIENT_IP6.to_string(), "fd00:2::60");
    }
}
