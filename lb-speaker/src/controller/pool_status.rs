//! Pool status writes (issue 13 item 1): flatlan's pools get the `Valid`
//! condition with its reason and the address counts, MetalLB's pools the
//! counts MetalLB itself reports. A pool is written only when what it
//! would say differs from what it says, so a steady state writes nothing.

use flatlan_k8s::allocator::{Allocator, PoolUsage};
use flatlan_k8s::convert::object_ref;
use flatlan_k8s::model::{ObjectRef, Warning};
use flatlan_k8s::{crd, status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use super::plan::Write;
use super::world::World;

/// The uid of a watched object, so that `kubectl describe` shows its Events.
pub fn uid_of(world: &World, o: &ObjectRef) -> Option<String> {
    let n = (o.namespace.clone(), o.name.clone());
    let is = |api: &str, kind: &str| o.api_version == api && o.kind == kind;
    if is("flatlan.dev/v1alpha1", "IPAddressPool") {
        world.flatlan_pools.get(&n)?.uid()
    } else if is("flatlan.dev/v1alpha1", "L2Advertisement") {
        world.flatlan_ads.get(&n)?.uid()
    } else if is("metallb.io/v1beta1", "IPAddressPool") {
        world.metallb_pools.get(&n)?.uid()
    } else if is("metallb.io/v1beta1", "L2Advertisement") {
        world.metallb_ads.get(&n)?.uid()
    } else if is("v1", "ConfigMap") {
        world.legacy.get(&n)?.uid()
    } else {
        None
    }
}

/// Whether two flatlan statuses say the same, transition times aside.
fn same(a: &crd::IPAddressPoolStatus, b: &crd::IPAddressPoolStatus) -> bool {
    let conds = |s: &crd::IPAddressPoolStatus| {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            })
            .collect::<Vec<_>>()
    };
    conds(a) == conds(b)
        && (
            a.assigned_ipv4,
            a.assigned_ipv6,
            a.available_ipv4,
            a.available_ipv6,
        ) == (
            b.assigned_ipv4,
            b.assigned_ipv6,
            b.available_ipv4,
            b.available_ipv6,
        )
}

/// The pool status writes this round calls for.
pub fn writes(
    world: &World,
    alloc: &Allocator,
    warnings: &[Warning],
    usage: &[PoolUsage],
    now: Time,
) -> Vec<Write> {
    let mut out = Vec::new();
    // A pool is valid when the allocator serves it (this very object:
    // two sources may use one name).
    let valid = |o: &ObjectRef| alloc.pools().iter().any(|p| &p.object == o);
    let usage_of = |name: &str| usage.iter().find(|u| u.name == name);
    for p in world.flatlan_pools.values() {
        let o = object_ref(p);
        let (u, problem) = if valid(&o) {
            (usage_of(&p.name_any()), None)
        } else {
            (None, warnings.iter().find(|w| w.object == o))
        };
        let mut want = status::flatlan(u, problem, p.meta().generation, now.clone());
        let have = p.status.clone().unwrap_or_default();
        if same(&have, &want) {
            continue;
        }
        // The transition time moves only when the condition's status does.
        for c in &mut want.conditions {
            if let Some(old) = have
                .conditions
                .iter()
                .find(|h| h.type_ == c.type_ && h.status == c.status)
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
        out.push(Write::FlatlanPoolStatus {
            name: p.name_any(),
            status: want,
        });
    }
    for p in world.metallb_pools.values() {
        let o = object_ref(p);
        let u = if valid(&o) {
            usage_of(&p.name_any())
        } else {
            None
        };
        let want = status::metallb(u);
        if p.status.as_ref() == Some(&want) {
            continue;
        }
        out.push(Write::MetalLbPoolStatus {
            namespace: p.namespace().unwrap_or_default(),
            name: p.name_any(),
            status: want,
        });
    }
    out
}
