//! The leader's decisions, without I/O: from what the watches delivered
//! ([`World`]) and the allocator's state, the writes to make ([`Plan`]).
//! [`super::apply`] carries them out; nothing here awaits.
//!
//! Each call looks at every Service (cheap, in memory), but writes only
//! what differs from what the cluster already holds, so a steady state
//! makes no requests at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use flatlan_k8s::allocator::{Allocator, PoolUsage};
use flatlan_k8s::convert::object_ref;
use flatlan_k8s::model::{ObjectRef, Pool, ServiceKey, ServiceRequest, Warning};
use flatlan_k8s::service::{is_ours, request, status_ips, LOAD_BALANCER_CLASS};
use flatlan_k8s::{crd, metallb, pools, Error as K8sError};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::info;

use super::pool_status;
use super::world::World;

/// An Event to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub object: ObjectRef,
    pub uid: Option<String>,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// One write to the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// `status.loadBalancer.ingress` through the status subresource,
    /// conditional on the resourceVersion the decision was made on; no
    /// addresses clears it.
    ServiceStatus {
        namespace: String,
        name: String,
        resource_version: Option<String>,
        ips: Vec<IpAddr>,
    },
    Event(EventSpec),
    FlatlanPoolStatus {
        name: String,
        status: crd::IPAddressPoolStatus,
    },
    MetalLbPoolStatus {
        namespace: String,
        name: String,
        status: metallb::IPAddressPoolStatus,
    },
}

/// What one round decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
    /// Addresses used and free per valid pool, for the metrics.
    pub usage: Vec<PoolUsage>,
    /// Services given (new) addresses.
    pub allocated: u64,
    /// New failures, by metric label.
    pub failed: Vec<&'static str>,
}

/// The metric label of an allocation failure.
pub fn failure_label(e: &K8sError) -> &'static str {
    match e {
        K8sError::PoolExhausted { .. } => "pool_exhausted",
        K8sError::OutsidePools(_) | K8sError::NotInNamedPool { .. } => "outside_pools",
        K8sError::Taken { .. } => "taken",
        K8sError::SharingConflict { .. } => "sharing_conflict",
        K8sError::NoPool { .. } | K8sError::NoSuchPool(_) | K8sError::PoolExcludes(_) => "no_pool",
        K8sError::BadAnnotation { .. }
        | K8sError::ConflictingRequest { .. }
        | K8sError::Families(_) => "bad_request",
        _ => "other",
    }
}

/// The allocator's state across rounds of one leadership term.
#[derive(Debug, Default)]
pub struct Controller {
    default_class: bool,
    /// None until the first round, which rebuilds from the Services' status.
    alloc: Option<Allocator>,
    /// The pools the allocator was built with.
    pools: Vec<Pool>,
    /// Pools the allocator refused (overlap, duplicate name).
    refused: Vec<Warning>,
    /// The last failure reported per Service (an Event only when it changes).
    failures: BTreeMap<ServiceKey, String>,
    /// Warnings already posted as Events.
    warned: BTreeSet<(ObjectRef, String)>,
}

fn key_of(svc: &Service) -> ServiceKey {
    ServiceKey {
        namespace: svc.namespace().unwrap_or_else(|| "default".into()),
        name: svc.name_any(),
    }
}

fn list(ips: &[IpAddr]) -> String {
    let v: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    v.join(", ")
}

fn service_ref(svc: &Service) -> ObjectRef {
    let mut o = object_ref(svc);
    o.namespace.get_or_insert_with(|| "default".into());
    o
}

impl Controller {
    /// `default_class`: flatlan also serves LoadBalancer Services without
    /// a loadBalancerClass.
    pub fn new(default_class: bool) -> Self {
        Controller {
            default_class,
            ..Default::default()
        }
    }

    /// The allocator, once built.
    pub fn allocator(&self) -> Option<&Allocator> {
        self.alloc.as_ref()
    }

    /// One round: every decision the current world calls for. The
    /// allocator commits its choices at once, so an address chosen here is
    /// never chosen again while its status write is under way.
    pub fn plan(&mut self, world: &World, now: Time) -> Plan {
        let mut plan = Plan::default();
        let collected = world.collected();
        let mut ours: Vec<(&Service, ServiceKey, Result<ServiceRequest, K8sError>)> = world
            .services
            .values()
            .filter(|s| is_ours(s, self.default_class))
            .map(|s| {
                let ns = s.namespace().unwrap_or_else(|| "default".into());
                let labels = world.namespaces.get(&ns).cloned().unwrap_or_default();
                (s, key_of(s), request(s, &labels))
            })
            .collect();
        ours.sort_by_key(|(s, k, _)| {
            let t = s.metadata.creation_timestamp.as_ref();
            (t.map_or(0, |t| t.0.as_second()), k.clone())
        });

        if self.alloc.is_none() || self.pools != collected.pools {
            self.rebuild(&ours, collected.pools.clone(), &mut plan);
        }
        let Some(alloc) = self.alloc.as_mut() else {
            return plan;
        };

        // Deleted Services and Services that stopped being ours free their
        // addresses first, so that this round can hand them out again.
        let held: Vec<ServiceKey> = alloc.assignments().map(|(k, _)| k.clone()).collect();
        for key in held {
            let n = (Some(key.namespace.clone()), key.name.clone());
            match world.services.get(&n) {
                None => {
                    info!("Service {key} deleted; releasing its addresses");
                    alloc.release(&key);
                }
                Some(svc) if !is_ours(svc, self.default_class) => {
                    alloc.release(&key);
                    let ips = status_ips(svc);
                    if !ips.is_empty() {
                        plan.writes.push(status_write(svc, vec![]));
                        plan.writes.push(Write::Event(EventSpec {
                            object: service_ref(svc),
                            uid: svc.uid(),
                            warning: false,
                            reason: "IPReleased".into(),
                            message: format!("released {}: the Service is no longer of type LoadBalancer with loadBalancerClass {LOAD_BALANCER_CLASS}{}", list(&ips), if self.default_class { " or none" } else { "" }),
                        }));
                    }
                }
                Some(_) => {}
            }
        }
        let live: BTreeSet<ServiceKey> = ours.iter().map(|(_, k, _)| k.clone()).collect();
        self.failures.retain(|k, _| live.contains(k));

        for (svc, key, req) in &ours {
            let status = status_ips(svc);
            let result = match req {
                Err(e) => Err(e.clone()),
                Ok(req) => {
                    // A Service that holds addresses nobody gave out in this
                    // term (a status written by the previous leader or by
                    // MetalLB) keeps them if they fit.
                    if alloc.assignment(key).is_none() && !status.is_empty() {
                        let _ = alloc.restore(req, &status);
                    }
                    alloc.assign(req)
                }
            };
            match result {
                Ok(a) => {
                    self.failures.remove(key);
                    if a.ips != status {
                        plan.writes.push(status_write(svc, a.ips.clone()));
                        plan.writes.push(Write::Event(EventSpec {
                            object: service_ref(svc),
                            uid: svc.uid(),
                            warning: false,
                            reason: "IPAllocated".into(),
                            message: format!("assigned {} from pool {}", list(&a.ips), a.pool),
                        }));
                        plan.allocated += 1;
                    }
                }
                Err(e) => {
                    alloc.release(key);
                    if !status.is_empty() {
                        plan.writes.push(status_write(svc, vec![]));
                    }
                    let msg = e.to_string();
                    if self.failures.get(key) != Some(&msg) {
                        plan.failed.push(failure_label(&e));
                        plan.writes.push(Write::Event(EventSpec {
                            object: service_ref(svc),
                            uid: svc.uid(),
                            warning: true,
                            reason: e.reason().into(),
                            message: msg.clone(),
                        }));
                        self.failures.insert(key.clone(), msg);
                    }
                }
            }
        }

        let mut warnings = collected.warnings;
        warnings.extend(self.refused.iter().cloned());
        warnings.extend(pools::unknown_pools(
            alloc.pools(),
            &collected.advertisements,
        ));
        let current: BTreeSet<(ObjectRef, String)> = warnings
            .iter()
            .map(|w| (w.object.clone(), w.problem.to_string()))
            .collect();
        for w in &warnings {
            let k = (w.object.clone(), w.problem.to_string());
            if self.warned.contains(&k) {
                continue;
            }
            self.warned.insert(k);
            plan.writes.push(Write::Event(EventSpec {
                uid: pool_status::uid_of(world, &w.object),
                object: w.object.clone(),
                warning: true,
                reason: w.reason().into(),
                message: w.problem.to_string(),
            }));
        }
        self.warned.retain(|k| current.contains(k));

        plan.usage = alloc.usage();
        plan.writes.extend(pool_status::writes(
            world,
            alloc,
            &warnings,
            &plan.usage,
            now,
        ));
        plan
    }

    /// Builds the allocator: on the first round from every Service's
    /// status (a restart or a new leader never reshuffles), later, when the
    /// pools changed, from what it holds.
    fn rebuild(
        &mut self,
        ours: &[(&Service, ServiceKey, Result<ServiceRequest, K8sError>)],
        pools: Vec<Pool>,
        plan: &mut Plan,
    ) {
        let holding: Vec<(ServiceRequest, Vec<IpAddr>)> = ours
            .iter()
            .filter_map(|(svc, key, req)| {
                let req = req.as_ref().ok()?;
                let ips = match &self.alloc {
                    None => status_ips(svc),
                    Some(a) => a.assignment(key)?.ips.clone(),
                };
                Some((req.clone(), ips))
            })
            .collect();
        let (alloc, refused, failed) = Allocator::rebuild(pools.clone(), &holding);
        for (key, e) in failed {
            info!("Service {key} cannot keep its addresses: {e}");
            if let Some((svc, _, _)) = ours.iter().find(|(_, k, _)| *k == key) {
                if matches!(e, K8sError::RequestChanged { .. }) {
                    plan.writes.push(Write::Event(EventSpec {
                        object: service_ref(svc),
                        uid: svc.uid(),
                        warning: false,
                        reason: e.reason().into(),
                        message: e.to_string(),
                    }));
                }
            }
        }
        self.alloc = Some(alloc);
        self.pools = pools;
        self.refused = refused;
    }
}

fn status_write(svc: &Service, ips: Vec<IpAddr>) -> Write {
    Write::ServiceStatus {
        namespace: svc.namespace().unwrap_or_else(|| "default".into()),
        name: svc.name_any(),
        resource_version: svc.resource_version(),
        ips,
    }
}

#[cfg(test)]
mod tests;
