//! Remembered pod identities: the address a pod (`namespace/name`) last
//! held, so that it gets it back when it returns (DESIGN §3 "Sticky
//! identity").
//!
//! Remembering is a preference, never a reservation (issue 10, item 11):
//! - an address is remembered for at most one identity, the last pod that
//!   held it, and is forgotten as soon as any pod is given it;
//! - at most [`MAX_REMEMBERED`] identities are kept, the least recently
//!   seen evicted first, and none longer than [`MAX_AGE_SECS`].
//!
//! The store is read and rewritten on every ADD, so the bound is also what
//! keeps ADD fast: 300,000 identities made ADD five times slower (item 7).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The most identities remembered per network; the least recently seen
/// beyond this are forgotten. Every ADD reads and rewrites them: 256 cost
/// about 0.25 ms an ADD, 1,024 about 1 ms (docs/BENCHMARKS.md). Without the
/// bound, only a pool larger than this could fill it, since an address is
/// remembered for one identity at most.
pub const MAX_REMEMBERED: usize = 256;

/// An identity not seen for this long (30 days) is forgotten.
pub const MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// An address remembered for a pod identity after the pod went away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sticky {
    pub ips: Vec<IpAddr>,
    pub last_seen: u64,
}

/// Pod identity (`namespace/name`) → the addresses it last held.
pub type Memory = BTreeMap<String, Sticky>;

/// Remembers `ip` for `key`, replacing its address of the same family, and
/// forgets it for every other identity: the newest holder wins.
pub(crate) fn remember(mem: &mut Memory, key: &str, ip: IpAddr, now: u64) {
    forget(mem, ip, Some(key));
    let entry = mem.entry(key.to_string()).or_insert(Sticky {
        ips: Vec::new(),
        last_seen: now,
    });
    entry.last_seen = now;
    entry.ips.retain(|x| x.is_ipv4() != ip.is_ipv4());
    entry.ips.push(ip);
}

/// Forgets `ip` for every identity but `except`; identities left with no
/// address are dropped.
pub(crate) fn forget(mem: &mut Memory, ip: IpAddr, except: Option<&str>) {
    mem.retain(|k, s| {
        if Some(k.as_str()) != except {
            s.ips.retain(|x| *x != ip);
        }
        !s.ips.is_empty()
    });
}

/// Every address remembered for an identity other than `me`, built once so
/// that allocation tests each candidate in O(1).
pub(crate) fn held_for_others(mem: &Memory, me: Option<&str>) -> HashSet<IpAddr> {
    mem.iter()
        .filter(|(k, _)| Some(k.as_str()) != me)
        .flat_map(|(_, s)| s.ips.iter().copied())
        .collect()
}

/// Applies the age and count bounds. Linear in the (bounded) size of the
/// memory; the sort runs only when an eviction is due.
pub(crate) fn bound(mem: &mut Memory, now: u64) {
    mem.retain(|_, s| now.saturating_sub(s.last_seen) <= MAX_AGE_SECS);
    if mem.len() <= MAX_REMEMBERED {
        return;
    }
    let mut by_age: Vec<(u64, String)> =
        mem.iter().map(|(k, s)| (s.last_seen, k.clone())).collect();
    by_age.sort_unstable();
    let excess = mem.len() - MAX_REMEMBERED;
    for (_, k) in by_age.into_iter().take(excess) {
        mem.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_remembered_for_its_last_holder_only() {
        let mut m = Memory::new();
        remember(&mut m, "ns/a", ip("192.168.2.210"), 1);
        remember(&mut m, "ns/b", ip("192.168.2.210"), 2);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m["ns/b"].ips, vec![ip("192.168.2.210")]);
    }

    #[test]
    fn one_address_per_family_newest_wins() {
        let mut m = Memory::new();
        remember(&mut m, "ns/a", ip("192.168.2.210"), 1);
        remember(&mut m, "ns/a", ip("fd00::5"), 1);
        remember(&mut m, "ns/a", ip("192.168.2.211"), 2);
        assert_eq!(m["ns/a"].ips, vec![ip("fd00::5"), ip("192.168.2.211")]);
        forget(&mut m, ip("fd00::5"), None);
        forget(&mut m, ip("192.168.2.211"), Some("ns/a"));
        assert_eq!(m["ns/a"].ips, vec![ip("192.168.2.211")]);
        forget(&mut m, ip("192.168.2.211"), None);
        assert!(m.is_empty());
    }

    #[test]
    fn the_least_recently_seen_are_evicted_beyond_the_limit() {
        let mut m = Memory::new();
        let n = MAX_REMEMBERED + 10;
        for i in 0..n {
            let a = ip(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
            // Seen in an order unrelated to the key order.
            remember(
                &mut m,
                &format!("ns/p{i}"),
                a,
                1000 + (i as u64 * 7919) % n as u64,
            );
        }
        bound(&mut m, 2000);
        assert_eq!(m.len(), MAX_REMEMBERED);
        let oldest_kept = m.values().map(|s| s.last_seen).min().unwrap();
        assert_eq!(oldest_kept, 1010, "exactly the 10 oldest went");
    }

    #[test]
    fn identities_older_than_the_age_limit_are_forgotten() {
        let mut m = Memory::new();
        remember(&mut m, "ns/old", ip("192.168.2.210"), 100);
        remember(&mut m, "ns/new", ip("192.168.2.211"), 200);
        bound(&mut m, 100 + MAX_AGE_SECS + 1);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["ns/new"]);
    }
}
