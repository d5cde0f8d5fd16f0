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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::model::ObjectRef;

    fn now() -> Time {
        serde_json::from_str("\"2026-12-03T12:00:00Z\"").unwrap()
    }

    #[test]
    fn a_valid_pool_reports_its_counts_clamped() {
        let u = PoolUsage {
            name: "p".into(),
            assigned_v4: 3,
            assigned_v6: 1,
            available_v4: 13,
            available_v6: (1u128 << 64) - 1,
        };
        let s = flatlan(Some(&u), None, Some(4), now());
        assert_eq!(s.conditions[0].type_, "Valid");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].observed_generation, Some(4));
        assert_eq!(
            (s.assigned_ipv4, s.available_ipv4, s.assigned_ipv6),
            (3, 13, 1)
        );
        assert_eq!(s.available_ipv6, i64::MAX);
        let m = metallb(Some(&u));
        assert_eq!((m.assigned_ipv4, m.available_ipv6), (3, i64::MAX));
    }

    #[test]
    fn a_refused_pool_says_why_in_its_condition() {
        let w = Warning {
            object: ObjectRef {
                api_version: "flatlan.dev/v1alpha1".into(),
                kind: "IPAddressPool".into(),
                namespace: None,
                name: "b".into(),
            },
            problem: Error::PoolOverlap {
                pool: "b".into(),
                other: "a".into(),
                range: "10.0.0.0-10.0.0.9".into(),
            },
        };
        let s = flatlan(None, Some(&w), None, now());
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InvalidPool")
        );
        assert!(
            c.message
                .starts_with("pool b overlaps pool a at 10.0.0.0-10.0.0.9"),
            "{}",
            c.message
        );
        assert_eq!((s.assigned_ipv4, s.available_ipv4), (0, 0));
    }
}
