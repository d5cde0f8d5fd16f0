//! A bare L2 segment: a switch namespace with a bridge, a client namespace
//! and N host namespaces, each cabled to the switch with an `eth0` veth,
//! with addresses in 10.77.0.0/24 and fd77::/64. No router and no default
//! route, as on a LAN segment without a gateway: the speaker's tests rely
//! on that (multicast heartbeats must find their interface by themselves),
//! which is why this is not the home-LAN [`crate::Lab`].
//!
//! The speaker's privileged tests (lb-speaker/tests/common) and its bench
//! (`flatlan-lab speaker-bench`) both build on it, through
//! [`crate::speaker::SpeakerLab`].

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// The client's address on the segment.
pub const SEGMENT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The client's IPv6 address on the segment.
pub const SEGMENT_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

/// Host `i`'s address: 10.77.0.11, .12, ...
pub fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        77,
        0,
        11u8.saturating_add(u8::try_from(i).unwrap_or(u8::MAX)),
    )
}

/// Host `i`'s IPv6 address: fd77::11, ::12, ... (the same digits).
pub fn host_ip6(i: usize) -> Ipv6Addr {
    let low = u16::from_str_radix(&(11 + i).to_string(), 16).unwrap_or(u16::MAX);
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, low)
}

/// The segment. Namespaces are deleted when it drops (after whatever runs
/// in them is gone: see [`crate::speaker::SpeakerLab`]).
pub struct Segment {
    /// The client, on switch port `pc`.
    pub client: Netns,
    /// The hosts, host `i` on switch port `p<i>`.
    pub nodes: Vec<Netns>,
    /// The switch: `br0`, multicast snooping off.
    pub switch: Netns,
}

impl Segment {
    /// Builds the segment. Needs root: fails (never skips) without it.
    pub fn new(hosts: usize) -> Result<Segment> {
        let switch = Netns::new("seg-switch")?;
        let client = Netns::new("seg-client")?;
        let nodes = (0..hosts)
            .map(|i| Netns::new(&format!("seg-node{i}")))
            .collect::<Result<Vec<_>>>()?;
        // No multicast snooping: NS to solicited-node groups are flooded,
        // like on a typical home switch.
        let mut script =
            String::from("link add br0 type bridge mcast_snooping 0\nlink set br0 up\n");
        let ports = std::iter::once(("pc".to_owned(), &client))
            .chain(nodes.iter().enumerate().map(|(i, n)| (format!("p{i}"), n)));
        for (port, host) in ports {
            let _ = writeln!(
                script,
                "link add {port} type veth peer name eth0 netns {}\nlink set {port} master br0 up",
                host.name()
            );
        }
        switch.ip_batch(&script)?;
        attach(&client, SEGMENT_CLIENT_IP, SEGMENT_CLIENT_IP6)?;
        for (i, n) in nodes.iter().enumerate() {
            attach(n, host_ip(i), host_ip6(i))?;
        }
        Ok(Segment {
            client,
            nodes,
            switch,
        })
    }

    /// Gives host `i` a second NIC, `eth1`, cabled to the same switch, with
    /// `ip4`/24 and `ip6`/64 (a wired and a wireless link on one LAN);
    /// returns its MAC.
    pub fn add_second_nic(&self, i: usize, ip4: Ipv4Addr, ip6: Ipv6Addr) -> Result<String> {
        second_nic(&self.switch, &self.nodes, i, ip4, ip6)
    }
}

/// [`Segment::add_second_nic`] on a segment's parts.
pub(crate) fn second_nic(
    switch: &Netns,
    nodes: &[Netns],
    i: usize,
    ip4: Ipv4Addr,
    ip6: Ipv6Addr,
) -> Result<String> {
    let node = nodes
        .get(i)
        .ok_or_else(|| Error::InvalidConfig(format!("the segment has no host {i}")))?;
    switch.ip_batch(&format!(
        "link add q{i} type veth peer name eth1 netns {}\nlink set q{i} master br0 up\n",
        node.name()
    ))?;
    node.ip_batch(&format!(
        "addr add {ip4}/24 dev eth1\naddr add {ip6}/64 dev eth1 nodad\nlink set eth1 up\n"
    ))?;
    node.link_mac("eth1")
}

/// Addresses and link state of a host's `eth0`. No DAD on the segment's
/// fresh links: until the link-local address leaves "tentative", Linux
/// sends no NS at all (ndisc_send_ns needs a usable link-local source), so
/// IPv6 replies would stall for the first ~2 s of every test.
fn attach(ns: &Netns, ip4: Ipv4Addr, ip6: Ipv6Addr) -> Result<()> {
    // /proc/sys/net is the calling thread's namespace: no process, and
    // the host's value is never touched.
    let knob = "/proc/sys/net/ipv6/conf/eth0/accept_dad";
    ns.run(|| std::fs::write(knob, "0"))?
        .map_err(|e| Error::io(format!("{knob}=0 in {}", ns.name()), e))?;
    ns.ip_batch(&format!(
        "addr add {ip4}/24 dev eth0\naddr add {ip6}/64 dev eth0 nodad\nlink set eth0 up\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_numbered_from_11_in_both_families() {
        assert_eq!(host_ip(0).to_string(), "10.77.0.11");
        assert_eq!(host_ip(2).to_string(), "10.77.0.13");
        assert_eq!(host_ip6(0).to_string(), "fd77::11");
        assert_eq!(host_ip6(9).to_string(), "fd77::20");
    }
}
