//! Which Service gets which address: pure, no client. The watcher feeds it
//! the pools and the Services' requests and writes back what it returns.
//!
//! - Pools are tried by priority (lower first, pools without one last),
//!   then by age; within a pool the lowest free address is taken, so the
//!   result depends only on the set of holders, not on timing.
//! - A Service keeps its address as long as it still fits (its pool, its
//!   request, its sharing): nothing is reshuffled, and [`Allocator::rebuild`]
//!   restores every address from the Services' status after a restart.
//!   When the pools change, the caller rebuilds the same way with the new
//!   pools: a Service whose address left every pool comes back as failed
//!   and is assigned anew, and [`crate::eligibility`] never offers an
//!   address outside the valid pools for announcement.
//! - A failure is an [`Error`] for that one Service (the AllocationFailed
//!   Event's text); nothing else changes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::model::{ip_num, FamilyPolicy, Pool, Port, ServiceKey, ServiceRequest, Warning};
use crate::pools::validate;
use crate::selector::Labels;

/// A Service's addresses and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub pool: String,
    /// One per family, the Service's primary family first.
    pub ips: Vec<IpAddr>,
}

impl Assignment {
    /// The IPAllocated Event's message.
    pub fn message(&self) -> String {
        format!("assigned {} from pool {}", list(&self.ips), self.pool)
    }
}

/// What a pool's status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    pub assigned_v4: u128,
    pub assigned_v6: u128,
    pub available_v4: u128,
    pub available_v6: u128,
}

/// What sharing an address depends on, per holder.
#[derive(Debug, Clone)]
struct Holder {
    key: ServiceKey,
    sharing_key: Option<String>,
    ports: Vec<Port>,
    local: bool,
    selector: Labels,
}

impl Holder {
    fn of(req: &ServiceRequest) -> Self {
        Holder {
            key: req.key.clone(),
            sharing_key: req.sharing_key.clone(),
            ports: req.ports.clone(),
            local: req.local,
            selector: req.selector.clone(),
        }
    }

    /// MetalLB's sharing rule: the same key, no port in common, the same
    /// externalTrafficPolicy, and under Local the same pods (or the node
    /// that announces the address could lack endpoints for one of them).
    fn admits(&self, ip: IpAddr, req: &ServiceRequest) -> Result<()> {
        let conflict = |why: String| Error::SharingConflict {
            ip,
            with: self.key.to_string(),
            why,
        };
        match (&self.sharing_key, &req.sharing_key) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                return Err(conflict(format!(
                    "the allow-shared-ip keys differ ({a:?} there, {b:?} here); use the same key"
                )))
            }
            _ => {
                return Err(Error::Taken {
                    ip,
                    by: self.key.to_string(),
                })
            }
        }
        if let Some(p) = self.ports.iter().find(|p| req.ports.contains(p)) {
            return Err(conflict(format!(
                "both use {}/{}; give each Service its own ports",
                p.protocol, p.port
            )));
        }
        if self.local != req.local {
            return Err(conflict(
                "their externalTrafficPolicy differs; set the same on both".into(),
            ));
        }
        if self.local && self.selector != req.selector {
            return Err(conflict("with externalTrafficPolicy Local both must select the same pods, so that the announcing node has endpoints for both".into()));
        }
        Ok(())
    }
}

/// The allocator's state: valid pools, and who holds which address.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: Vec<Pool>,
    by_ip: BTreeMap<IpAddr, Vec<Holder>>,
    by_svc: BTreeMap<ServiceKey, Assignment>,
}

fn family(v4: bool) -> &'static str {
    if v4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl Allocator {
    /// An allocator over these pools, holding nothing; the refused pools
    /// (duplicate name, overlap) come back as warnings.
    pub fn new(pools: Vec<Pool>) -> (Self, Vec<Warning>) {
        let (pools, warnings) = validate(pools);
        let a = Allocator {
            pools,
            ..Default::default()
        };
        (a, warnings)
    }

    /// After a restart: every Service's addresses from its
    /// `status.loadBalancer.ingress`, oldest Service first, so the same
    /// input in any order gives the same state. A Service whose status no
    /// longer fits comes back with the reason; the caller assigns it anew.
    pub fn rebuild(
        pools: Vec<Pool>,
        services: &[(ServiceRequest, Vec<IpAddr>)],
    ) -> (Self, Vec<Warning>, Vec<(ServiceKey, Error)>) {
        let (mut a, warnings) = Allocator::new(pools);
        let mut order: Vec<_> = services.iter().filter(|(_, ips)| !ips.is_empty()).collect();
        order.sort_by(|x, y| (x.0.created, &x.0.key).cmp(&(y.0.created, &y.0.key)));
        let mut failed = Vec::new();
        for (req, ips) in order {
            if let Err(e) = a.restore(req, ips) {
                failed.push((req.key.clone(), e));
            }
        }
        (a, warnings, failed)
    }

    /// Records addresses a Service already holds, if they still fit.
    pub fn restore(&mut self, req: &ServiceRequest, ips: &[IpAddr]) -> Result<()> {
        self.release(&req.key);
        let mut seen = BTreeSet::new();
        let mut ips = ips.to_vec();
        ips.retain(|i| seen.insert(*i));
        let pool = self.check_fit(req, &ips)?;
        self.commit(req, pool, ips.clone());
        Ok(())
    }

    /// The Service's addresses: the ones it holds if they still fit its
    /// request, or new ones. On an error the Service holds nothing.
    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment> {
        if let Some(a) = self.by_svc.get(&req.key) {
            let ips = a.ips.clone();
            if self.check_fit(req, &ips).is_ok() {
                let pool = a.pool.clone();
                self.release(&req.key);
                // Re-committed so that changed ports or keys are recorded.
                return Ok(self.commit(req, pool, ips));
            }
            self.release(&req.key);
        }
        let (pool, ips) = if req.requested.is_empty() {
            self.pick(req)?
        } else {
            let ips = req.requested.clone();
            (self.check_fit(req, &ips)?, ips)
        };
        Ok(self.commit(req, pool, ips))
    }

    /// Frees the Service's addresses (deleted, no longer LoadBalancer or
    /// not of our class).
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assignment> {
        let a = self.by_svc.remove(key)?;
        for ip in &a.ips {
            if let Some(hs) = self.by_ip.get_mut(ip) {
                hs.retain(|h| &h.key != key);
                if hs.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
        Some(a)
    }

    /// The Service's current addresses.
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.by_svc.get(key)
    }

    /// Every Service's addresses.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.by_svc.iter()
    }

    /// The Services holding an address (several when shared).
    pub fn holders(&self, ip: IpAddr) -> Vec<&ServiceKey> {
        self.by_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .map(|h| &h.key)
            .collect()
    }

    /// The valid pools, oldest first.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The valid pool an address belongs to.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.contains(ip))
    }

    /// Addresses used and free per valid pool.
    pub fn usage(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|p| {
                let (mut size4, mut size6) = (0u128, 0u128);
                for r in &p.ranges {
                    let n = r.len()
                        - if p.avoid_buggy_ips && r.is_ipv4() {
                            buggy(ip_num(r.start()), ip_num(r.end()))
                        } else {
                            0
                        };
                    if r.is_ipv4() {
                        size4 += n;
                    } else {
                        size6 = size6.saturating_add(n);
                    }
                }
                let used = |v4: bool| {
                    self.by_ip
                        .keys()
                        .filter(|ip| ip.is_ipv4() == v4 && p.contains(**ip))
                        .count() as u128
                };
                let (u4, u6) = (used(true), used(false));
                PoolUsage {
                    name: p.name.clone(),
                    assigned_v4: u4,
                    assigned_v6: u6,
                    available_v4: size4 - u4,
                    available_v6: size6 - u6,
                }
            })
            .collect()
    }

    fn commit(&mut self, req: &ServiceRequest, pool: String, ips: Vec<IpAddr>) -> Assignment {
        for ip in &ips {
            self.by_ip.entry(*ip).or_default().push(Holder::of(req));
        }
        let a = Assignment { pool, ips };
        self.by_svc.insert(req.key.clone(), a.clone());
        a
    }

    /// Whether `ips` may be this Service's: in one valid pool that serves
    /// it (the named one if it names one), of the families it asks for,
    /// what it requested if it requested, and shareable. Returns the pool.
    fn check_fit(&self, req: &ServiceRequest, ips: &[IpAddr]) -> Result<String> {
        check_families(req, ips)?;
        if !req.requested.is_empty() {
            let want: BTreeSet<_> = req.requested.iter().collect();
            if want != ips.iter().collect() {
                return Err(Error::RequestChanged {
                    held: list(ips),
                    requested: list(&req.requested),
                });
            }
        }
        let mut pool = None;
        for &ip in ips {
            let p = self.pool_of(ip).ok_or(Error::OutsidePools(ip))?;
            if let Some(named) = &req.pool {
                if &p.name != named {
                    return Err(Error::NotInNamedPool {
                        ip,
                        pool: named.clone(),
                    });
                }
            }
            if !p.serves(req) {
                return Err(Error::PoolExcludes(p.name.clone()));
            }
            for h in self.by_ip.get(&ip).into_iter().flatten() {
                if h.key != req.key {
                    h.admits(ip, req)?;
                }
            }
            pool.get_or_insert_with(|| p.name.clone());
        }
        pool.ok_or_else(|| Error::Families("no address to check".into()))
    }

    /// New addresses for a Service that requested none.
    fn pick(&self, req: &ServiceRequest) -> Result<(String, Vec<IpAddr>)> {
        let candidates: Vec<&Pool> = match &req.pool {
            Some(name) => {
                let p = self
                    .pools
                    .iter()
                    .find(|p| &p.name == name)
                    .ok_or_else(|| Error::NoSuchPool(name.clone()))?;
                if !p.serves(req) {
                    return Err(Error::PoolExcludes(name.clone()));
                }
                vec![p]
            }
            None => {
                let mut c: Vec<&Pool> = self
                    .pools
                    .iter()
                    .filter(|p| p.auto_assign && p.serves(req))
                    .collect();
                // Stable: equal priorities keep age order.
                c.sort_by_key(|p| (p.alloc.priority.is_none(), p.alloc.priority));
                c
            }
        };
        let primary = req.primary_v4;
        let need_both = req.policy == FamilyPolicy::RequireDualStack;
        let want_both = req.policy != FamilyPolicy::SingleStack;
        let fam_text = if need_both {
            "IPv4 and IPv6".to_string()
        } else {
            family(primary).to_string()
        };
        let mut full = Vec::new();
        for p in &candidates {
            if !p.has_family(primary) || (need_both && !p.has_family(!primary)) {
                continue;
            }
            let Some(first) = self.free(p, primary, req) else {
                full.push(p.name.clone());
                continue;
            };
            let mut ips = vec![first];
            if want_both && p.has_family(!primary) {
                match self.free(p, !primary, req) {
                    Some(second) => ips.push(second),
                    None if need_both => {
                        full.push(p.name.clone());
                        continue;
                    }
                    None => {}
                }
            }
            return Ok((p.name.clone(), ips));
        }
        if full.is_empty() {
            return Err(match &req.pool {
                Some(name) => Error::Families(format!("pool {name} has no {fam_text} addresses, which this Service's ipFamilies/ipFamilyPolicy ask for")),
                None => Error::NoPool { family: format!(" with {fam_text} addresses") },
            });
        }
        Err(Error::PoolExhausted {
            pools: full.join(", "),
            family: fam_text,
        })
    }

    /// An address of one family in `pool` for `req`: one it may share with
    /// Services of the same key first, else the lowest unused one.
    fn free(&self, pool: &Pool, v4: bool, req: &ServiceRequest) -> Option<IpAddr> {
        if req.sharing_key.is_some() {
            let shared = self.by_ip.iter().find(|(ip, hs)| {
                ip.is_ipv4() == v4
                    && pool.contains(**ip)
                    && hs
                        .iter()
                        .all(|h| h.key == req.key || h.admits(**ip, req).is_ok())
            });
            if let Some((ip, _)) = shared {
                return Some(*ip);
            }
        }
        for r in pool.ranges.iter().filter(|r| r.is_ipv4() == v4) {
            let (mut n, end) = (ip_num(r.start()), ip_num(r.end()));
            loop {
                let ip = num_ip(n, v4);
                if !pool.avoids(ip) && !self.by_ip.contains_key(&ip) {
                    return Some(ip);
                }
                if n == end {
                    break;
                }
                n += 1;
            }
        }
        None
    }
}

/// Whether the addresses are of the families the Service asks for.
fn check_families(req: &ServiceRequest, ips: &[IpAddr]) -> Result<()> {
    let v4 = ips.iter().filter(|i| i.is_ipv4()).count();
    let v6 = ips.len() - v4;
    let (p, s) = if req.primary_v4 { (v4, v6) } else { (v6, v4) };
    let ok = match req.policy {
        FamilyPolicy::SingleStack => p == 1 && s == 0,
        FamilyPolicy::PreferDualStack => p == 1 && s <= 1,
        FamilyPolicy::RequireDualStack => p == 1 && s == 1,
    };
    if ok {
        return Ok(());
    }
    Err(Error::Families(format!(
        "addresses {} do not fit ipFamilyPolicy {:?} with {} first in ipFamilies; request one address per family the Service uses",
        list(ips),
        req.policy,
        family(req.primary_v4)
    )))
}

/// `[a, b]`, for messages.
fn list(ips: &[IpAddr]) -> String {
    let v: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    format!("[{}]", v.join(", "))
}

fn num_ip(n: u128, v4: bool) -> IpAddr {
    if v4 {
        // Only called with numbers from IPv4 ranges.
        IpAddr::V4((n as u32).into())
    } else {
        IpAddr::V6(n.into())
    }
}

/// How many numbers in `lo..=hi` end in .0 or .255.
fn buggy(lo: u128, hi: u128) -> u128 {
    // Numbers in 0..=x with n % 256 == r.
    let upto = |x: u128, r: u128| if x < r { 0 } else { (x - r) / 256 + 1 };
    let count = |r| upto(hi, r) - if lo == 0 { 0 } else { upto(lo - 1, r) };
    count(0) + count(255)
}

#[cfg(test)]
mod tests;
