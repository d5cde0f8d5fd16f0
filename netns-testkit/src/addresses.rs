//! The lab's fixed address plan: a typical home LAN behind a NAT router.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

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

/// The address of node `index` (1-based), or `None` if out of range.
pub fn node_ip(index: usize) -> Option<Ipv4Addr> {
    if index == 0 || index > MAX_NODES {
        return None;
    }
    let host = NODE_IP_BASE.checked_add(u8::try_from(index).ok()?)?;
    let [a, b, c, _] = GATEWAY.octets();
    Some(Ipv4Addr::new(a, b, c, host))
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
}
