//! What one network's store holds: allocations, remembered pod
//! identities, quarantined and verified addresses, and the probe-ahead's
//! lease. The fields are private to the crate: every change goes through a
//! method here or a transaction in [`crate::policy`], so the rules (an
//! address remembered for one identity at most, a freed address never
//! "verified") cannot be skipped by a caller.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::sticky;

/// At most this many quarantined addresses. Each is an address of this
/// node's pools that a foreign MAC used, so with an IPv4 /24 slice the
/// list can never reach it; an IPv6 /64 pool is another matter: any pod
/// or LAN host can send NAs for a million made-up addresses, and every
/// entry is written to state.json under the lock each ADD takes. When
/// full, the entry that expires first makes room: a host that really
/// holds its address keeps talking and is quarantined again when seen.
pub const MAX_QUARANTINE: usize = 1024;

/// The Kubernetes pod an attachment belongs to, from CNI_ARGS `K8S_POD_*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    /// The sticky identity key: the same pod name gets the same address back.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One address held by one attachment (container ID + interface name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub mac: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    pub boot_id: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
    /// The ADD that made this allocation, while it may still be running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adder: Option<ProcId>,
}

/// A process identity that survives PID reuse: the PID plus its start time
/// in clock ticks since boot (field 22 of /proc/PID/stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: u32,
    pub start: u64,
}

impl ProcId {
    pub fn current() -> Option<ProcId> {
        ProcId::of(std::process::id())
    }

    pub fn of(pid: u32) -> Option<ProcId> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces and parentheses; the fields
        // after the last ')' are fixed: state is field 3, starttime 22.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let start = rest.split_whitespace().nth(19)?.parse().ok()?;
        Some(ProcId { pid, start })
    }

    /// The very process that made the allocation is still running.
    pub fn is_alive(&self) -> bool {
        ProcId::of(self.pid) == Some(*self)
    }
}

impl Allocation {
    pub fn is_for(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }

    pub fn describe(&self) -> String {
        match &self.pod {
            Some(p) => format!("pod {} (container {})", p.key(), short(&self.container_id)),
            None => format!("container {}", short(&self.container_id)),
        }
    }
}

/// An address found in use on the LAN by someone flatlan does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub ip: IpAddr,
    pub mac: String,
    pub since: u64,
    pub until: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) allocations: Vec<Allocation>,
    /// Pod identity (`namespace/name`) → the addresses it last held
    /// (bounded: see [`crate::sticky`]).
    #[serde(default)]
    pub(crate) sticky: sticky::Memory,
    /// Per-pool round-robin cursor (key: the pool's subnet).
    #[serde(default)]
    pub(crate) cursors: BTreeMap<String, IpAddr>,
    #[serde(default)]
    pub(crate) quarantine: Vec<Quarantine>,
    /// Addresses a conflict probe showed to be free, with when. An ADD that
    /// allocates from the pool skips its own probe for a fresh one.
    #[serde(default)]
    pub(crate) verified: BTreeMap<IpAddr, u64>,
    /// When a background probe-ahead was last started; a burst of ADDs
    /// starts one, not one each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ahead_started: Option<u64>,
    /// Addresses freed while a probe-ahead ran, with when: that probe may
    /// have heard the freed pod answer, which is no verdict on the LAN
    /// (the pod may have had a MAC of its runtime's choosing). Kept only
    /// while a probe-ahead runs, so it is almost always empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) released: BTreeMap<IpAddr, u64>,
}

impl State {
    pub fn owner_of(&self, ip: IpAddr, now: u64) -> Option<String> {
        if let Some(a) = self.allocations.iter().find(|a| a.ip == ip) {
            return Some(a.describe());
        }
        self.quarantine
            .iter()
            .find(|q| q.ip == ip && q.until > now)
            .map(|q| format!("a LAN host with MAC {} (quarantined)", q.mac))
    }

    /// The store format version the document was written with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every allocation, in the order they were made.
    pub fn allocations(&self) -> &[Allocation] {
        &self.allocations
    }

    /// The allocation holding `ip`, if any.
    pub fn allocation_of(&self, ip: IpAddr) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.ip == ip)
    }

    /// Quarantines, expired ones included until the next prune.
    pub fn quarantined(&self) -> &[Quarantine] {
        &self.quarantine
    }

    /// Pod identity (`namespace/name`) → the addresses it last held.
    pub fn remembered(&self) -> &sticky::Memory {
        &self.sticky
    }

    /// When a probe last showed `ip` free, if one did.
    pub fn verified_at(&self, ip: IpAddr) -> Option<u64> {
        self.verified.get(&ip).copied()
    }

    /// When the running (or last, unfinished) probe-ahead started.
    pub fn ahead_started(&self) -> Option<u64> {
        self.ahead_started
    }

    /// Every address remembered for an identity other than `me`: what
    /// allocation avoids while anything else is free.
    pub fn reserved_for_others(&self, me: Option<&str>) -> HashSet<IpAddr> {
        sticky::held_for_others(&self.sticky, me)
    }

    /// `ips` were just given to the pod `me`: they are remembered for no one
    /// any more, and `me` holds its addresses again, so it is no longer a
    /// remembered identity either.
    pub fn handed_out(&mut self, me: Option<&str>, ips: impl IntoIterator<Item = IpAddr>) {
        if let Some(k) = me {
            self.sticky.remove(k);
        }
        for ip in ips {
            sticky::forget(&mut self.sticky, ip, None);
        }
    }

    /// Whether `ip` was shown free within the last `ttl` seconds.
    pub fn is_verified(&self, ip: IpAddr, now: u64, ttl: u64) -> bool {
        self.verified
            .get(&ip)
            .is_some_and(|&t| now.saturating_sub(t) <= ttl)
    }

    /// Records that a LAN host answered for `ip`; it is skipped until `until`.
    /// No pod identity keeps it as its remembered address: a host holds
    /// it, and `ipam ls` would otherwise list it as free for that pod.
    pub fn quarantine_ip(&mut self, ip: IpAddr, mac: String, now: u64, until: u64) {
        self.verified.remove(&ip);
        sticky::forget(&mut self.sticky, ip, None);
        self.quarantine.retain(|q| q.ip != ip);
        if self.quarantine.len() >= MAX_QUARANTINE {
            if let Some(first) =
                (0..self.quarantine.len()).min_by_key(|&i| self.quarantine[i].until)
            {
                self.quarantine.swap_remove(first);
            }
        }
        self.quarantine.push(Quarantine {
            ip,
            mac,
            since: now,
            until,
        });
    }

    /// An operator's `ipam release` of an address no pod holds: it is no
    /// longer quarantined nor remembered for anyone. Returns whether
    /// anything changed.
    pub fn forget(&mut self, ip: IpAddr) -> bool {
        let held = |s: &State| {
            s.quarantine.len() + s.sticky.values().map(|st| st.ips.len()).sum::<usize>()
        };
        let before = held(self);
        self.quarantine.retain(|q| q.ip != ip);
        sticky::forget(&mut self.sticky, ip, None);
        before != held(self)
    }

    /// Drops expired quarantines, stale verifications and remembered
    /// identities beyond their bounds, so the document, which every ADD
    /// reads and rewrites, does not grow without bound.
    pub fn prune(&mut self, now: u64, verified_ttl: u64) {
        if self.ahead_started.is_none() {
            self.released.clear();
        }
        self.quarantine.retain(|q| q.until > now);
        self.verified
            .retain(|_, t| now.saturating_sub(*t) <= verified_ttl);
        sticky::bound(&mut self.sticky, now);
    }

    pub fn find(&self, container_id: &str, ifname: &str) -> Vec<&Allocation> {
        self.allocations
            .iter()
            .filter(|a| a.is_for(container_id, ifname))
            .collect()
    }

    /// Removes the attachment's allocations, remembering them for its pod identity.
    pub fn release(&mut self, container_id: &str, ifname: &str, now: u64) -> Vec<Allocation> {
        self.remove_where(|a| a.is_for(container_id, ifname), now)
    }

    /// Drops allocations made under another boot: their pods died with the
    /// machine (host-local leaks exactly these, containernetworking/plugins#697).
    pub fn reclaim_other_boots(&mut self, boot_id: &str, now: u64) -> Vec<Allocation> {
        self.remove_where(|a| a.boot_id != boot_id, now)
    }

    /// Frees every allocation whose attachment is not in `valid` (CNI GC),
    /// except those whose ADD is still running: a runtime's list is a
    /// snapshot, and an ADD that began after it is not garbage. A crashed
    /// ADD's process is gone, so its leftovers are freed at once.
    pub fn gc(&mut self, valid: &[(String, String)], now: u64) -> Vec<Allocation> {
        self.remove_where(
            |a| {
                !valid.iter().any(|(c, i)| a.is_for(c, i)) && !a.adder.is_some_and(|p| p.is_alive())
            },
            now,
        )
    }

    /// A freed address is never "verified": a LAN host may take it the
    /// moment our pod lets go, and the next ADD must find out (issue 10).
    fn remove_where(&mut self, pred: impl Fn(&Allocation) -> bool, now: u64) -> Vec<Allocation> {
        let (gone, keep): (Vec<_>, Vec<_>) = self.allocations.drain(..).partition(|a| pred(a));
        self.allocations = keep;
        for a in &gone {
            self.verified.remove(&a.ip);
            if self.ahead_started.is_some() {
                self.released.insert(a.ip, now);
            }
            if let Some(pod) = &a.pod {
                sticky::remember(&mut self.sticky, &pod.key(), a.ip, now);
            }
        }
        sticky::bound(&mut self.sticky, now);
        gone
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::sticky::Sticky;

    pub(crate) fn alloc(ip: &str, cid: &str, pod: Option<(&str, &str)>, boot: &str) -> Allocation {
        Allocation {
            ip: ip.parse().unwrap(),
            prefix_len: 24,
            mac: "0a:58:c0:a8:02:d2".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            pod: pod.map(|(n, p)| PodRef {
                namespace: n.into(),
                name: p.into(),
            }),
            boot_id: boot.into(),
            since: 1,
            adder: None,
        }
    }

    #[test]
    fn release_remembers_sticky_identity() {
        let mut s = State::default();
        s.allocations
            .push(alloc("192.168.2.210", "c1", Some(("home", "ha")), "b1"));
        let gone = s.release("c1", "eth0", 5);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            s.sticky["home/ha"].ips,
            vec!["192.168.2.210".parse::<IpAddr>().unwrap()]
        );
        let ip: IpAddr = "192.168.2.210".parse().unwrap();
        assert!(s.reserved_for_others(Some("home/other")).contains(&ip));
        assert!(!s.reserved_for_others(Some("home/ha")).contains(&ip));
    }

    /// Issue 10, item 11: Deployments scaled 4 → 0 → 4 three times leave
    /// three times as many identities as addresses. Every new pod still
    /// gets an address, and what is remembered is free and fits the pool.
    #[test]
    fn remembering_never_costs_a_new_pod_an_address() {
        let range = "192.168.2.210-192.168.2.213".parse().unwrap();
        let pool = crate::Pool::new("192.168.2.0/24".parse().unwrap(), &[range], &[]).unwrap();
        let mut s = State::default();
        let mut cursor = None;
        for round in 0..3 {
            for i in 0..4 {
                let key = format!("default/web-{round}{i}");
                let reserved = s.reserved_for_others(Some(&key));
                let want = crate::Want {
                    cursor,
                    ..Default::default()
                };
                let ip = crate::allocate(
                    &pool,
                    &want,
                    |ip| s.owner_of(ip, 1),
                    |ip| reserved.contains(&ip),
                )
                .unwrap_or_else(|e| panic!("round {round} pod {i}: {e}"));
                s.handed_out(Some(&key), [ip]);
                let (ns, name) = key.split_once('/').unwrap();
                let mut a = alloc(&ip.to_string(), &key, Some((ns, name)), "b1");
                a.ifname = "eth0".into();
                s.allocations.push(a);
                cursor = Some(ip);
                for st in s.sticky.values() {
                    for r in &st.ips {
                        assert!(
                            s.owner_of(*r, 1).is_none(),
                            "{r} is remembered and allocated"
                        );
                    }
                }
            }
            for a in s.allocations.clone() {
                s.release(&a.container_id, &a.ifname, 2 + round);
            }
            let remembered: Vec<IpAddr> = s.sticky.values().flat_map(|st| st.ips.clone()).collect();
            assert_eq!(
                remembered.len(),
                4,
                "round {round}: one identity per address"
            );
            assert!(s
                .sticky
                .keys()
                .all(|k| k.starts_with(&format!("default/web-{round}"))));
        }
    }

    /// Issue 10, item 7: 300,000 remembered identities made every ADD five
    /// times slower. The first ADD's prune trims them to the bound, keeping
    /// the most recently seen.
    #[test]
    fn a_flood_of_remembered_identities_is_trimmed_by_one_prune() {
        let mut s = State::default();
        let n: u32 = 300_000;
        for i in 0..n {
            let st = Sticky {
                ips: vec![IpAddr::from(i.to_be_bytes())],
                last_seen: u64::from(i),
            };
            s.sticky.insert(format!("default/web-{i}"), st);
        }
        s.prune(u64::from(n), 600);
        assert_eq!(s.sticky.len(), crate::sticky::MAX_REMEMBERED);
        let oldest = u64::from(n) - crate::sticky::MAX_REMEMBERED as u64;
        assert!(s.sticky.values().all(|st| st.last_seen >= oldest));
    }

    #[test]
    fn a_released_address_is_not_verified() {
        // Issue 10: DEL used to mark the address verified for 600 s, so a LAN
        // host that took it in between got a duplicate without a probe.
        let mut s = State::default();
        let ip: IpAddr = "192.168.2.210".parse().unwrap();
        s.verified.insert(ip, 5);
        s.allocations
            .push(alloc("192.168.2.210", "c1", Some(("home", "ha")), "b1"));
        s.release("c1", "eth0", 6);
        assert!(!s.is_verified(ip, 6, 30));
        // A LAN host takes it: no identity keeps it as its address.
        assert!(s.reserved_for_others(None).contains(&ip));
        s.quarantine_ip(ip, "3c:2a:f4:11:09:7e".into(), 7, 3607);
        assert!(!s.reserved_for_others(None).contains(&ip));
        assert!(s.sticky.is_empty());
    }

    #[test]
    fn reboot_and_gc_free_exactly_the_rest() {
        let mut s = State::default();
        s.allocations
            .push(alloc("192.168.2.210", "old", None, "b0"));
        s.allocations
            .push(alloc("192.168.2.211", "live", None, "b1"));
        s.allocations
            .push(alloc("192.168.2.212", "dead", None, "b1"));
        assert_eq!(s.reclaim_other_boots("b1", 1).len(), 1);
        let gone = s.gc(&[("live".into(), "eth0".into())], 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].container_id, "dead");
        assert_eq!(s.allocations.len(), 1);
    }

    #[test]
    fn gc_spares_an_allocation_whose_add_is_still_running() {
        let mut s = State::default();
        let mut inflight = alloc("192.168.2.210", "inflight", None, "b1");
        inflight.adder = ProcId::current();
        assert!(inflight.adder.is_some());
        let mut crashed = alloc("192.168.2.211", "crashed", None, "b1");
        // A PID that cannot be running with this start time.
        crashed.adder = Some(ProcId {
            pid: std::process::id(),
            start: u64::MAX,
        });
        s.allocations.extend([inflight, crashed]);
        let gone = s.gc(&[], 1);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].container_id, "crashed");
        assert_eq!(s.allocations[0].container_id, "inflight");
    }

    #[test]
    fn a_flood_of_quarantines_is_capped_and_the_soonest_expiring_makes_room() {
        let mut s = State::default();
        for i in 0..(MAX_QUARANTINE as u64 + 500) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)));
            // Entry i expires at 10_000 + i, except entry 7, which lasts.
            let until = if i == 7 { 1_000_000 } else { 10_000 + i };
            s.quarantine_ip(ip, "3c:2a:f4:11:09:7e".into(), 1, until);
        }
        assert_eq!(s.quarantined().len(), MAX_QUARANTINE);
        let ips: HashSet<IpAddr> = s.quarantined().iter().map(|q| q.ip).collect();
        let seventh = IpAddr::V6(std::net::Ipv6Addr::from(0xfd00_u128 << 112 | 7));
        let newest = IpAddr::V6(std::net::Ipv6Addr::from(
            0xfd00_u128 << 112 | (MAX_QUARANTINE as u128 + 499),
        ));
        assert!(ips.contains(&seventh), "the long quarantine was evicted");
        assert!(ips.contains(&newest), "the newest entry was refused");
    }
}
