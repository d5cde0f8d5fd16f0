//! Pure allocation: which address a new attachment gets. No I/O, so it is
//! exhaustively unit- and property-tested.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::pool::Pool;

/// What the caller knows about the attachment asking for an address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Want {
    /// An address the user asked for (annotation, `IP=` CNI arg, runtimeConfig `ips`).
    pub required: Option<IpAddr>,
    /// The address this pod identity held before: reused when still free.
    pub sticky: Option<IpAddr>,
    /// The last address handed out in this pool, for round-robin order.
    pub cursor: Option<IpAddr>,
    /// A free address a probe has just shown nobody on the LAN uses: taken
    /// before the round-robin candidate, so that ADD need not probe.
    pub prefer: Option<IpAddr>,
}

/// Picks an address from `pool`.
///
/// `owner` says who holds an address (an allocation or a quarantine), and
/// `reserved` marks addresses remembered for another pod identity: those are
/// avoided while anything else is free, so a restarting pod usually gets its
/// old address back.
pub fn allocate(
    pool: &Pool,
    want: &Want,
    owner: impl Fn(IpAddr) -> Option<String>,
    reserved: impl Fn(IpAddr) -> bool,
) -> Result<IpAddr> {
    if let Some(ip) = want.required {
        if !pool.is_usable(ip) {
            return Err(Error::RequestedOutsideRange {
                ip,
                pool: pool.describe(),
            });
        }
        return match owner(ip) {
            Some(owner) => Err(Error::RequestedInUse { ip, owner }),
            None => Ok(ip),
        };
    }
    if let Some(ip) = want.sticky {
        if pool.is_usable(ip) && owner(ip).is_none() {
            return Ok(ip);
        }
    }
    if let Some(ip) = want.prefer {
        if pool.is_usable(ip) && owner(ip).is_none() && !reserved(ip) {
            return Ok(ip);
        }
    }
    let mut fallback = None;
    for ip in pool.candidates_after(want.cursor) {
        if owner(ip).is_some() {
            continue;
        }
        if !reserved(ip) {
            return Ok(ip);
        }
        fallback.get_or_insert(ip);
    }
    fallback.ok_or_else(|| Error::Exhausted {
        pool: pool.describe(),
        usable: pool.usable_count(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::range::IpRange;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pool(ranges: &[&str], exclude: &[&str]) -> Pool {
        let r: Vec<IpRange> = ranges.iter().map(|s| s.parse().unwrap()).collect();
        let e: Vec<IpRange> = exclude.iter().map(|s| s.parse().unwrap()).collect();
        Pool::new("192.168.2.0/24".parse().unwrap(), &r, &e).unwrap()
    }

    #[test]
    fn sticky_wins_when_free() {
        let p = pool(&["192.168.2.210-192.168.2.219"], &[]);
        let want = Want {
            sticky: Some(ip("192.168.2.215")),
            ..Default::default()
        };
        assert_eq!(
            allocate(&p, &want, |_| None, |_| false).unwrap(),
            ip("192.168.2.215")
        );
        let taken = |a: IpAddr| (a == ip("192.168.2.215")).then(|| "pod x".to_string());
        assert_eq!(
            allocate(&p, &want, taken, |_| false).unwrap(),
            ip("192.168.2.210")
        );
    }

    #[test]
    fn required_outside_or_taken_is_an_error() {
        let p = pool(&["192.168.2.210-192.168.2.219"], &["192.168.2.211"]);
        let want = |s| Want {
            required: Some(ip(s)),
            ..Default::default()
        };
        let e = allocate(&p, &want("192.168.2.50"), |_| None, |_| false).unwrap_err();
        assert!(matches!(e, Error::RequestedOutsideRange { .. }));
        let e = allocate(&p, &want("192.168.2.211"), |_| None, |_| false).unwrap_err();
        assert!(matches!(e, Error::RequestedOutsideRange { .. }));
        let e = allocate(&p, &want("192.168.2.212"), |_| Some("c1".into()), |_| false).unwrap_err();
        assert!(e.to_string().contains("c1"));
    }

    #[test]
    fn a_verified_address_beats_round_robin_but_not_sticky_or_owners() {
        let p = pool(&["192.168.2.210-192.168.2.219"], &[]);
        let want = Want {
            prefer: Some(ip("192.168.2.214")),
            ..Default::default()
        };
        assert_eq!(
            allocate(&p, &want, |_| None, |_| false).unwrap(),
            ip("192.168.2.214")
        );
        let sticky = Want {
            sticky: Some(ip("192.168.2.212")),
            ..want
        };
        assert_eq!(
            allocate(&p, &sticky, |_| None, |_| false).unwrap(),
            ip("192.168.2.212")
        );
        let taken = |a: IpAddr| (a == ip("192.168.2.214")).then(|| "pod x".to_string());
        assert_eq!(
            allocate(&p, &want, taken, |_| false).unwrap(),
            ip("192.168.2.210")
        );
        let reserved = |a: IpAddr| a == ip("192.168.2.214");
        assert_eq!(
            allocate(&p, &want, |_| None, reserved).unwrap(),
            ip("192.168.2.210")
        );
    }

    #[test]
    fn reserved_addresses_are_used_last() {
        let p = pool(&["192.168.2.210-192.168.2.211"], &[]);
        let reserved = |a: IpAddr| a == ip("192.168.2.210");
        assert_eq!(
            allocate(&p, &Want::default(), |_| None, reserved).unwrap(),
            ip("192.168.2.211")
        );
        let taken = |a: IpAddr| (a == ip("192.168.2.211")).then(|| "x".to_string());
        assert_eq!(
            allocate(&p, &Want::default(), taken, reserved).unwrap(),
            ip("192.168.2.210")
        );
    }

    #[test]
    fn exhausted_says_how_big_the_pool_was() {
        let p = pool(&["192.168.2.210-192.168.2.211"], &[]);
        let e = allocate(&p, &Want::default(), |_| Some("x".into()), |_| false).unwrap_err();
        assert!(e.to_string().contains("all 2 usable"), "{e}");
    }

    proptest! {
        /// Filling a random pool one address at a time never repeats an
        /// address, never returns an excluded one, and uses every usable one.
        #[test]
        fn fills_pool_exactly(
            start in 1u8..200, len in 1u8..40,
            excl in proptest::collection::vec((1u8..255, 0u8..5), 0..6),
            cursor in proptest::option::of(0u8..=255),
        ) {
            let end = start.saturating_add(len).min(254);
            let ranges = vec![IpRange::new(ip(&format!("192.168.2.{start}")), ip(&format!("192.168.2.{end}"))).unwrap()];
            let exclude: Vec<IpRange> = excl.iter().map(|&(a, l)| {
                let b = a.saturating_add(l).min(254);
                IpRange::new(ip(&format!("192.168.2.{a}")), ip(&format!("192.168.2.{b}"))).unwrap()
            }).collect();
            let p = Pool::new("192.168.2.0/24".parse().unwrap(), &ranges, &exclude).unwrap();
            let mut used = HashSet::new();
            let mut cur = cursor.map(|c| ip(&format!("192.168.2.{c}")));
            loop {
                let want = Want { cursor: cur, ..Default::default() };
                match allocate(&p, &want, |a| used.contains(&a).then(|| "x".into()), |_| false) {
                    Ok(a) => {
                        prop_assert!(!exclude.iter().any(|e| e.contains(a)), "excluded {a} allocated");
                        prop_assert!(ranges[0].contains(a));
                        prop_assert!(used.insert(a), "duplicate {a}");
                        cur = Some(a);
                    }
                    Err(Error::Exhausted { .. }) => break,
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            prop_assert_eq!(used.len() as u128, p.usable_count());
        }
    }
}
