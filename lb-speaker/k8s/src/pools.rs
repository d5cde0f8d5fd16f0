//! The set of pools the allocator may use. Of two pools that share a name
//! or an address, the older keeps serving and the newer is refused as a
//! whole, so that adding a bad pool never moves a Service's address.

use crate::error::Error;
use crate::model::{overlap, Advertisement, Pool, Warning};

/// Keeps the pools that neither repeat an older pool's name nor overlap
/// an older pool; the others come back as warnings (their Valid=False
/// condition). The result is in age order, whatever the input order.
pub fn validate(mut pools: Vec<Pool>) -> (Vec<Pool>, Vec<Warning>) {
    pools.sort_by(|a, b| {
        (a.created, a.source, &a.name, &a.object).cmp(&(b.created, b.source, &b.name, &b.object))
    });
    let mut kept: Vec<Pool> = Vec::with_capacity(pools.len());
    let mut warnings = Vec::new();
    for p in pools {
        let problem = if let Some(old) = kept.iter().find(|k| k.name == p.name) {
            Some(Error::DuplicateName {
                name: p.name.clone(),
                kept: old.object.to_string(),
            })
        } else {
            kept.iter().find_map(|k| {
                let (a, _) = p
                    .ranges
                    .iter()
                    .flat_map(|a| k.ranges.iter().map(move |b| (a, b)))
                    .find(|(a, b)| overlap(a, b))?;
                Some(Error::PoolOverlap {
                    pool: p.name.clone(),
                    other: k.name.clone(),
                    range: a.to_string(),
                })
            })
        };
        match problem {
            Some(problem) => warnings.push(Warning {
                object: p.object,
                problem,
            }),
            None => kept.push(p),
        }
    }
    (kept, warnings)
}

/// A warning for each pool an advertisement names that is not among the
/// valid pools (a typo, or a pool refused by [`validate`]).
pub fn unknown_pools(valid: &[Pool], ads: &[Advertisement]) -> Vec<Warning> {
    ads.iter()
        .flat_map(|a| {
            a.pools
                .iter()
                .filter(|n| !valid.iter().any(|p| &p.name == *n))
                .map(|n| Warning {
                    object: a.object.clone(),
                    problem: Error::UnknownPool(n.clone()),
                })
        })
        .collect()
}
