//! A pool's status from the allocator's view: the `Valid` condition with
//! its reason, and the address counts, for both APIs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::allocator::PoolUsage;
use crate::model::Warning;
use crate::{crd, metallb};

fn clamp(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// flatlan's pool status. `problem` is the pool's warning when it was
/// refused (its usage is then all zero); `now` stamps a new condition.
pub fn flatlan(
    usage: Option<&PoolUsage>,
    problem: Option<&Warning>,
    generation: Option<i64>,
    now: Time,
) -> crd::IPAddressPoolStatus {
    let cond = match problem {
        None => Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "the pool's addresses are served".into(),
            last_transition_time: now,
            observed_generation: generation,
        },
        Some(w) => Condition {
            type_: "Valid".into(),
            status: "False".into(),
            reason: w.reason().into(),
            message: w.problem.to_string(),
            last_transition_time: now,
            observed_generation: generation,
        },
    };
    let m = metallb(usage);
    crd::IPAddressPoolStatus {
        conditions: vec![cond],
        assigned_ipv4: m.assigned_ipv4,
        assigned_ipv6: m.assigned_ipv6,
        available_ipv4: m.available_ipv4,
        available_ipv6: m.available_ipv6,
    }
}

/// MetalLB's pool status (counts only; a refused MetalLB pool is reported
/// by a warning Event).
pub fn metallb(usage: Option<&PoolUsage>) -> metallb::IPAddressPoolStatus {
    let u = usage.cloned().unwrap_or_default();
    metallb::IPAddressPoolStatus {
        assigned_ipv4: clamp(u.assigned_v4),
        assigned_ipv6: clamp(u.assigned_v6),
        available_ipv4: clamp(u.available_v4),
        available_ipv6: clamp(u.available_v6),
    }
}
