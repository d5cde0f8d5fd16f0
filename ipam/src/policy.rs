//! Allocation policy, as transactions on the locked store: which address
//! an attachment gets (asked for, remembered, freshly verified, round
//! robin), what a conflict probe's answer does (quarantine, try the next
//! one), and the verdicts of the background probe-ahead.
//!
//! The caller maps its configuration onto [`Pool`]s and a [`Policy`] and
//! owns the packet socket: a probe is a function it passes in, so every
//! decision and every store write is here, and the whole policy is tested
//! without a network.

use std::net::IpAddr;

use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::store::{now_secs, Allocation, Locked, PodRef, ProcId, State, Store};
use crate::Want;
use flatlan_l2::mac::MacAddr;

/// The probe knobs allocation depends on.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Whether addresses are probed on the LAN at all.
    pub probe: bool,
    /// How long a probe's "free" lets an ADD skip its own probe.
    pub verified_ttl: u64,
    /// How many verified candidates per pool the probe-ahead keeps ready.
    pub ahead: usize,
    /// How long an address a LAN host answered for is skipped.
    pub quarantine_secs: u64,
}

/// Who asks for addresses, and what it asks for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The pod identity, for remembered addresses.
    pub pod: Option<PodRef>,
    /// Addresses asked for by name (`IP=`, `ips`); each must lie in a
    /// pool's subnet.
    pub required: &'a [IpAddr],
    /// The MAC the runtime asked for; else [`derived_mac`] of the addresses.
    pub mac: Option<MacAddr>,
    /// This boot's ID: allocations of other boots are reclaimed.
    pub boot_id: &'a str,
}

/// A durable reservation: one address per pool, in pool order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub ips: Vec<IpAddr>,
    /// The MAC recorded for the attachment.
    pub mac: MacAddr,
    /// Fewer verified candidates wait than the probe-ahead keeps: the
    /// caller should start one (this reservation holds its lease).
    pub want_ahead: bool,
}

/// What a LAN probe found: the addresses some host answers for, with its MAC.
pub type Conflicts = Vec<(IpAddr, MacAddr)>;

/// At most this many conflicting addresses are skipped in one ADD; more
/// means something on the LAN answers for everything (a proxy-ARP router).
pub const MAX_CONFLICTS: usize = 8;

/// A probe-ahead that has not finished within this long is presumed dead.
const AHEAD_LEASE_SECS: u64 = 5;

/// The MAC an attachment's addresses imply: from its IPv4 address whatever
/// the order of the pools (a dual-stack pod), else from its first.
pub fn derived_mac(ips: &[IpAddr]) -> MacAddr {
    let ip = ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(ips.first())
        .copied()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    MacAddr::from_ip(ip)
}

impl Store {
    /// Reserves one address per pool for `req`, durably, and probes (with
    /// `probe`) those not known to be free. An address some LAN host
    /// answers for is quarantined and the next one tried, up to
    /// [`MAX_CONFLICTS`] times. On any error nothing stays reserved.
    pub fn reserve(
        &self,
        pools: &[Pool],
        req: &Request,
        policy: &Policy,
        mut probe: impl FnMut(&[IpAddr]) -> Result<Conflicts>,
    ) -> Result<Reserved> {
        for ip in req.required {
            if !pools.iter().any(|p| p.subnet().contains(ip)) {
                return Err(Error::RequestedOutsideRange {
                    ip: *ip,
                    pool: pools
                        .iter()
                        .map(Pool::describe)
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
        }
        for _ in 0..=MAX_CONFLICTS {
            let (reserved, unverified) = {
                let mut locked = self.lock()?;
                let r = locked.take(pools, req, policy, now_secs())?;
                locked.commit()?;
                r
            };
            if !policy.probe || unverified.is_empty() {
                return Ok(reserved);
            }
            let conflicts = match probe(&unverified) {
                Ok(c) => c,
                Err(e) => {
                    // The probe's failure is what the caller must see; a
                    // failed release only adds a log line (DEL or GC frees it).
                    if let Err(r) = self.release(req.container_id, req.ifname) {
                        warn!("releasing after a failed probe: {r}");
                    }
                    return Err(e);
                }
            };
            if conflicts.is_empty() {
                return Ok(reserved);
            }
            let mut locked = self.lock()?;
            locked.reject(req, &conflicts, reserved.want_ahead, policy, now_secs());
            locked.commit()?;
            if let Some((ip, mac)) = conflicts.iter().find(|(ip, _)| req.required.contains(ip)) {
                return Err(Error::RequestedInUse {
                    ip: *ip,
                    owner: format!("a LAN host with MAC {mac} (it answered the conflict probe)"),
                });
            }
        }
        Err(Error::ConflictsInARow(MAX_CONFLICTS))
    }

    /// Frees an attachment's addresses; they are remembered for its pod.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Allocation>> {
        let mut locked = self.lock()?;
        let gone = locked.state.release(container_id, ifname, now_secs());
        if !gone.is_empty() {
            locked.commit()?;
        }
        Ok(gone)
    }

    /// The background half of the probe: probes (with `probe`, a long,
    /// RFC 5227-minded one) the next `ahead` free candidates of each pool
    /// and records the verdicts, so later ADDs skip their own probe.
    /// Returns how many were probed.
    pub fn probe_ahead(
        &self,
        pools: &[Pool],
        policy: &Policy,
        probe: impl FnOnce(&[IpAddr]) -> Result<Conflicts>,
    ) -> Result<usize> {
        let started = now_secs();
        let candidates = self.peek()?.ahead_candidates(pools, policy, started);
        let conflicts = if candidates.is_empty() {
            Vec::new()
        } else {
            probe(&candidates)?
        };
        let mut locked = self.lock()?;
        locked.record_ahead(&candidates, &conflicts, started, policy, now_secs());
        locked.commit()?;
        Ok(candidates.len())
    }
}

impl Locked {
    /// CNI GC: frees the allocations of other boots and those whose
    /// attachment is not in `valid`, except while their ADD still runs
    /// (`State::gc`), and commits. The caller keeps the lock while it
    /// removes their links, so no ADD allocates in between.
    pub fn collect_garbage(
        &mut self,
        valid: &[(String, String)],
        boot_id: &str,
        now: u64,
    ) -> Result<Vec<Allocation>> {
        let mut freed = self.state.reclaim_other_boots(boot_id, now);
        freed.extend(self.state.gc(valid, now));
        self.commit()?;
        Ok(freed)
    }

    /// One allocation attempt, uncommitted: returns the reservation and
    /// the addresses still to probe.
    fn take(
        &mut self,
        pools: &[Pool],
        req: &Request,
        policy: &Policy,
        now: u64,
    ) -> Result<(Reserved, Vec<IpAddr>)> {
        let ttl = policy.verified_ttl;
        let state = &mut self.state;
        state.prune(now, ttl);
        let reclaimed = state.reclaim_other_boots(req.boot_id, now);
        if !reclaimed.is_empty() {
            info!(
                count = reclaimed.len(),
                "reclaimed allocations from before a reboot"
            );
        }
        if let Some(a) = state.find(req.container_id, req.ifname).first() {
            return Err(Error::AlreadyAttached {
                container_id: req.container_id.to_string(),
                ip: a.ip,
                ifname: req.ifname.to_string(),
            });
        }
        let key = req.pod.as_ref().map(PodRef::key);
        let reserved = state.reserved_for_others(key.as_deref());
        let mut ips = Vec::new();
        let mut unverified = Vec::new();
        let mut want_ahead = false;
        for pool in pools {
            let v4 = pool.is_ipv4();
            let subnet = pool.subnet();
            let sticky = key
                .as_ref()
                .and_then(|k| state.sticky.get(k))
                .and_then(|st| st.ips.iter().copied().find(|ip| ip.is_ipv4() == v4));
            let cursor = state.cursors.get(&subnet.to_string()).copied();
            let want = Want {
                required: req.required.iter().copied().find(|ip| subnet.contains(ip)),
                sticky,
                cursor,
                prefer: state.freshly_verified(pool, cursor, now, ttl),
            };
            let ip = crate::allocate(
                pool,
                &want,
                |ip| state.owner_of(ip, now),
                |ip| reserved.contains(&ip),
            )?;
            // An address someone asked for by name (`IP=`, `ips`, or a pod
            // identity coming back to its old one) was chosen without regard
            // to any verdict, and is the likeliest to be what a LAN host took
            // after our pod let it go: it is always probed (DESIGN §3).
            let asked_for = want.required == Some(ip) || want.sticky == Some(ip);
            if asked_for || !state.is_verified(ip, now, ttl) {
                unverified.push(ip);
            }
            let ready = pool
                .candidates_after(Some(ip))
                .take(policy.ahead)
                .filter(|c| state.owner_of(*c, now).is_none() && state.is_verified(*c, now, ttl))
                .count();
            want_ahead |= ready < policy.ahead / 2;
            state.cursors.insert(subnet.to_string(), ip);
            ips.push((ip, subnet.prefix_len()));
        }
        let addrs: Vec<IpAddr> = ips.iter().map(|(ip, _)| *ip).collect();
        // The pod's MAC follows its IPv4 address whatever the order of the
        // pools; an IPv6-first list must not record a MAC derived from the
        // IPv6 address, which the pod never has.
        let mac = req.mac.unwrap_or_else(|| derived_mac(&addrs));
        let adder = ProcId::current();
        for (ip, prefix_len) in ips {
            state.allocations.push(Allocation {
                ip,
                prefix_len,
                mac: mac.to_string(),
                container_id: req.container_id.to_string(),
                ifname: req.ifname.to_string(),
                pod: req.pod.clone(),
                boot_id: req.boot_id.to_string(),
                since: now,
                adder,
            });
        }
        // Remembered addresses are a preference, never a reservation: once
        // given to a pod, they are remembered for no one (issue 10, item 11).
        state.handed_out(key.as_deref(), addrs.iter().copied());
        let running = state
            .ahead_started
            .is_some_and(|t| now.saturating_sub(t) < AHEAD_LEASE_SECS);
        want_ahead &= policy.probe && !running;
        if want_ahead {
            state.ahead_started = Some(now);
        }
        let reserved = Reserved {
            ips: addrs,
            mac,
            want_ahead,
        };
        Ok((reserved, unverified))
    }

    /// A LAN host answered for some of `req`'s addresses: they are
    /// quarantined and the attachment's reservation dropped. A reservation
    /// that had claimed the probe-ahead gives the lease back, so the retry
    /// is free to claim it.
    fn reject(
        &mut self,
        req: &Request,
        conflicts: &Conflicts,
        claimed_ahead: bool,
        policy: &Policy,
        now: u64,
    ) {
        let state = &mut self.state;
        state.release(req.container_id, req.ifname, now);
        if claimed_ahead {
            state.ahead_started = None;
        }
        for (ip, mac) in conflicts {
            warn!(%ip, %mac, "a LAN host answers for this address; quarantined");
            state.quarantine_ip(*ip, mac.to_string(), now, now + policy.quarantine_secs);
        }
    }

    /// The probe-ahead's verdicts on `probed` (probing began at `started`),
    /// and the end of its lease.
    fn record_ahead(
        &mut self,
        probed: &[IpAddr],
        conflicts: &Conflicts,
        started: u64,
        policy: &Policy,
        now: u64,
    ) {
        let state = &mut self.state;
        for ip in probed {
            // An ADD may have taken the address while we probed it, and its
            // pod answered; the pod may even be DELeted again by now. Either
            // way the answer was ours: no verdict at all, so the next ADD
            // probes it.
            let allocated = state.allocation_of(*ip).is_some();
            let released_meanwhile = state.released.get(ip).is_some_and(|t| *t >= started);
            let conflict = conflicts.iter().find(|(c, _)| c == ip);
            if allocated
                || released_meanwhile
                || conflict.is_some_and(|(_, mac)| state.is_ours(*ip, *mac))
            {
                continue;
            }
            match conflict {
                Some((_, mac)) => {
                    state.quarantine_ip(*ip, mac.to_string(), now, now + policy.quarantine_secs)
                }
                None => {
                    state.verified.insert(*ip, now);
                }
            }
        }
        state.ahead_started = None;
        state.released.clear();
    }
}

impl State {
    /// The next free, unverified addresses of each pool after its cursor:
    /// what the probe-ahead probes.
    pub fn ahead_candidates(&self, pools: &[Pool], policy: &Policy, now: u64) -> Vec<IpAddr> {
        pools
            .iter()
            .flat_map(|pool| {
                let cursor = self.cursors.get(&pool.subnet().to_string()).copied();
                pool.candidates_after(cursor)
                    .filter(|ip| {
                        self.owner_of(*ip, now).is_none()
                            && !self.is_verified(*ip, now, policy.verified_ttl)
                    })
                    .take(policy.ahead)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A MAC of this node's pods: one the store records, or flatlan's
    /// derived MAC for `ip` (a pod of ours that was added and deleted while
    /// we looked). Only this node allocates from its slice, so on a slice
    /// address such a MAC is one of ours.
    pub fn is_ours(&self, ip: IpAddr, mac: MacAddr) -> bool {
        mac.is_pod_mac_for(ip) || self.allocations.iter().any(|a| a.mac == mac.to_string())
    }

    /// The free address nearest after `cursor` (round-robin order,
    /// wrapping) that a probe showed free within `ttl`: ADD takes it
    /// without probing.
    fn freshly_verified(
        &self,
        pool: &Pool,
        cursor: Option<IpAddr>,
        now: u64,
        ttl: u64,
    ) -> Option<IpAddr> {
        let mut first = None;
        for (&ip, &t) in &self.verified {
            let fresh = now.saturating_sub(t) <= ttl
                && pool.is_usable(ip)
                && self.owner_of(ip, now).is_none();
            if !fresh {
                continue;
            }
            if cursor.is_none_or(|c| ip > c) {
                return Some(ip);
            }
            first.get_or_insert(ip);
        }
        first
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
