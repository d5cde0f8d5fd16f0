//! Who owns which VIP: a pure function of (members, eligibility, VIPs)
//! (STYLE rule 10).
//!
//! Rendezvous (highest-random-weight) hashing: every eligible member gets a
//! score `H(node, vip)` for each VIP, and the highest score owns it. All
//! speakers that share a view of the membership compute the same owner with
//! no coordination and no per-VIP writes anywhere, and a membership change
//! only moves the VIPs it must: a VIP moves if its owner left (or lost
//! eligibility), or if a new member outscores the current owner. That keeps
//! failovers to exactly the affected VIPs.
//!
//! `H` is the first 8 bytes of SHA-256 over `node || 0x00 || vip octets`:
//! stable across builds, platforms and Rust versions (std's `DefaultHasher`
//! is not), so mixed-version clusters agree.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// The rendezvous score of `node` for `vip`.
pub fn score(node: &str, vip: IpAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    match vip {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// A member as ownership sees it: a name and the VIPs it may announce.
pub trait Eligible {
    /// The node name.
    fn name(&self) -> &str;
    /// True if this member may announce `vip`.
    fn eligible(&self, vip: IpAddr) -> bool;
}

impl Eligible for (&str, &BTreeSet<IpAddr>) {
    fn name(&self) -> &str {
        self.0
    }
    fn eligible(&self, vip: IpAddr) -> bool {
        self.1.contains(&vip)
    }
}

impl Eligible for (String, BTreeSet<IpAddr>) {
    fn name(&self) -> &str {
        &self.0
    }
    fn eligible(&self, vip: IpAddr) -> bool {
        self.1.contains(&vip)
    }
}

/// The owner of each VIP among `members`; VIPs nobody is eligible for are
/// absent. Ties (a 2^-64 event) go to the larger name, so the result does
/// not depend on member order.
pub fn owners<M: Eligible>(members: &[M], vips: &[IpAddr]) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for &vip in vips {
        let best = members
            .iter()
            .filter(|m| m.eligible(vip))
            .max_by(|a, b| (score(a.name(), vip), a.name()).cmp(&(score(b.name(), vip), b.name())));
        if let Some(m) = best {
            out.insert(vip, m.name().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn vips(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc0a8_0100 + i)))
            .collect()
    }

    fn all(names: &[&str], v: &[IpAddr]) -> Vec<(String, BTreeSet<IpAddr>)> {
        names
            .iter()
            .map(|n| (n.to_string(), v.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn score_is_stable() {
        // Pinned (computed independently with Python's hashlib): changing
        // the hash would move every VIP in a mixed-version cluster.
        assert_eq!(
            score("node-a", "192.168.1.240".parse().unwrap()),
            0xd5dc_2763_d35b_b1f2
        );
        assert_ne!(
            score("node-a", "192.168.1.240".parse().unwrap()),
            score("node-b", "192.168.1.240".parse().unwrap())
        );
    }

    #[test]
    fn every_vip_has_one_owner_and_load_spreads() {
        let v = vips(300);
        let m = all(&["a", "b", "c"], &v);
        let o = owners(&m, &v);
        assert_eq!(o.len(), 300);
        for n in ["a", "b", "c"] {
            let c = o.values().filter(|x| *x == n).count();
            assert!((60..=140).contains(&c), "{n} owns {c}");
        }
    }

    #[test]
    fn ineligible_members_never_own() {
        let v = vips(20);
        let mut m = all(&["a", "b"], &v);
        m[0].1.clear();
        let o = owners(&m, &v);
        assert!(o.values().all(|x| x == "b"));
        m[1].1.clear();
        assert!(owners(&m, &v).is_empty());
    }

    proptest! {
        /// Views that agree give the same answer regardless of order.
        #[test]
        fn order_independent(names in proptest::collection::btree_set("[a-z]{1,6}", 1..8), seed in any::<u64>()) {
            let v = vips(50);
            let mut m: Vec<_> = names.iter().map(|n| (n.clone(), v.iter().copied().collect::<BTreeSet<_>>())).collect();
            let a = owners(&m, &v);
            let k = (seed as usize) % m.len();
            m.rotate_left(k);
            m.reverse();
            prop_assert_eq!(a, owners(&m, &v));
        }

        /// Across a random sequence of joins, leaves and eligibility flips,
        /// a VIP only moves if its owner left/lost eligibility or the member
        /// that changed wins it.
        #[test]
        fn minimal_movement(ops in proptest::collection::vec((0u8..3, 0usize..8, 0usize..40), 1..60)) {
            let v = vips(40);
            let pool: Vec<String> = (0..8).map(|i| format!("node-{i}")).collect();
            let mut members: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
            members.insert(pool[0].clone(), v.iter().copied().collect());
            let view = |m: &BTreeMap<String, BTreeSet<IpAddr>>| -> Vec<(String, BTreeSet<IpAddr>)> {
                m.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
            };
            let mut before = owners(&view(&members), &v);
            for (op, who, vip_i) in ops {
                let name = pool[who].clone();
                match op {
                    0 => { members.insert(name.clone(), v.iter().copied().collect()); }
                    1 => { members.remove(&name); }
                    _ => {
                        if let Some(s) = members.get_mut(&name) {
                            if !s.remove(&v[vip_i]) { s.insert(v[vip_i]); }
                        }
                    }
                }
                let after = owners(&view(&members), &v);
                for vip in &v {
                    // Exactly one owner iff someone is eligible.
                    let any = members.values().any(|s| s.contains(vip));
                    prop_assert_eq!(after.contains_key(vip), any);
                    match (before.get(vip), after.get(vip)) {
                        (Some(old), Some(new)) if old != new => {
                            let old_gone = !members.get(old).is_some_and(|s| s.contains(vip));
                            prop_assert!(old_gone || *new == name,
                                "{vip} moved {old} -> {new} on a change to {name}");
                        }
                        (Some(_), None) | (None, Some(_)) | (None, None) | (Some(_), Some(_)) => {}
                    }
                }
                before = after;
            }
        }
    }
}
