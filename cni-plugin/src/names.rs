//! Deterministic names, so DEL and GC find what ADD made without any state.

/// The host-side veth name for an attachment: `fl` + 12 hex digits of a
/// hash of (container ID, ifname). Fits IFNAMSIZ (15) and survives a lost
/// store, which is what makes DEL idempotent without the pod namespace.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    format!(
        "{PREFIX}{:012x}",
        fnv1a(container_id, ifname) & 0xffff_ffff_ffff
    )
}

pub const PREFIX: &str = "fl";

/// The host end's MAC: the pod's with bit 2 of the first octet flipped
/// (`0a:58:` becomes `0e:58:`), still locally administered unicast. Known in advance, so ADD need not read it back,
/// and stable, so a bridge whose MAC was never pinned cannot drift to a
/// random veth address.
pub fn host_mac(pod_mac: [u8; 6]) -> [u8; 6] {
    let mut m = pod_mac;
    m[0] ^= 0x04;
    m
}

/// Whether a link name has the shape of one flatlan made.
pub fn is_ours(name: &str) -> bool {
    name.len() == PREFIX.len() + 12
        && name.starts_with(PREFIX)
        && name[PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn fnv1a(a: &str, b: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0u8]).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_mac_is_local_unicast_and_differs_from_the_pod() {
        let pod = [0x0a, 0x58, 192, 168, 2, 210];
        let host = host_mac(pod);
        assert_eq!(host, [0x0e, 0x58, 192, 168, 2, 210]);
        assert_eq!(host[0] & 0x01, 0, "unicast");
        assert_eq!(host[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn veth_names_are_stable_short_and_recognisable() {
        let a = host_veth("abc", "eth0");
        assert_eq!(a, host_veth("abc", "eth0"));
        assert_ne!(a, host_veth("abc", "eth1"));
        assert_ne!(a, host_veth("abceth0", ""));
        assert!(a.len() <= 15);
        assert!(is_ours(&a));
        assert!(!is_ours("eth0"));
        assert!(!is_ours("flannel.1"));
    }
}
