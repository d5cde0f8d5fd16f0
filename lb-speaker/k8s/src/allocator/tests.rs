use proptest::prelude::*;

use super::*;
use crate::model::Source;
use crate::selector::Selector;
use crate::testutil::{ip, labels, pool, svc, tcp};

fn alloc(pools: Vec<Pool>) -> Allocator {
    let (a, w) = Allocator::new(pools);
    assert!(w.is_empty(), "{w:?}");
    a
}

fn ips(a: &Assignment) -> Vec<String> {
    a.ips.iter().map(|i| i.to_string()).collect()
}

#[test]
fn takes_the_lowest_free_address_and_frees_on_release() {
    let mut a = alloc(vec![pool("p", 1, &["192.168.1.240/30"])]);
    let one = a.assign(&svc("one")).unwrap();
    assert_eq!(
        (one.pool.as_str(), ips(&one)),
        ("p", vec!["192.168.1.240".to_string()])
    );
    assert_eq!(ips(&a.assign(&svc("two")).unwrap()), ["192.168.1.241"]);
    // Asking again changes nothing.
    assert_eq!(a.assign(&svc("one")).unwrap(), one);
    assert_eq!(a.release(&svc("one").key), Some(one));
    assert_eq!(ips(&a.assign(&svc("three")).unwrap()), ["192.168.1.240"]);
    assert_eq!(a.holders(ip("192.168.1.240")), [&svc("three").key]);
}

#[test]
fn exhaustion_is_an_actionable_error_for_that_service_only() {
    let mut a = alloc(vec![pool("small", 1, &["10.0.0.1-10.0.0.2"])]);
    a.assign(&svc("a")).unwrap();
    a.assign(&svc("b")).unwrap();
    let e = a.assign(&svc("c")).unwrap_err();
    assert_eq!(e.reason(), "AllocationFailed");
    assert_eq!(
        e.to_string(),
        "pool exhausted: small has no free IPv4 address; add addresses to a pool or delete an unused LoadBalancer Service"
    );
    assert!(a.assignment(&svc("c").key).is_none());
    assert_eq!(ips(a.assignment(&svc("a").key).unwrap()), ["10.0.0.1"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255_and_counts_them_out() {
    let mut p = pool("p", 1, &["10.0.0.255-10.0.1.1", "fd00::/127"]);
    p.avoid_buggy_ips = true;
    let mut a = alloc(vec![p]);
    assert_eq!(ips(&a.assign(&svc("a")).unwrap()), ["10.0.1.1"]);
    assert!(a.assign(&svc("b")).is_err());
    let u = &a.usage()[0];
    assert_eq!((u.assigned_v4, u.available_v4, u.available_v6), (1, 0, 2));
    let mut r = svc("r");
    r.requested = vec![ip("10.0.1.0")];
    assert_eq!(
        a.assign(&r).unwrap_err(),
        Error::OutsidePools(ip("10.0.1.0"))
    );
    assert_eq!(buggy(0, 255), 2);
    assert_eq!(buggy(1, 254), 0);
    assert_eq!(buggy(255, 256), 2);
    assert_eq!(buggy(0, 1023), 8);
}

#[test]
fn pools_are_tried_by_priority_then_age_and_auto_assign_off_is_skipped() {
    let mut manual = pool("manual", 1, &["10.0.9.0/24"]);
    manual.auto_assign = false;
    let old = pool("old", 2, &["10.0.1.1"]);
    let mut prio = pool("prio", 3, &["10.0.2.1"]);
    prio.alloc.priority = Some(10);
    let mut first = pool("first", 4, &["10.0.3.1"]);
    first.alloc.priority = Some(1);
    let young = pool("young", 5, &["10.0.4.1"]);
    let mut a = alloc(vec![young, first, prio, old, manual]);
    let order: Vec<String> = (0..4)
        .map(|i| a.assign(&svc(&format!("s{i}"))).unwrap().pool)
        .collect();
    assert_eq!(order, ["first", "prio", "old", "young"]);
    let e = a.assign(&svc("s4")).unwrap_err().to_string();
    assert!(e.contains("pool exhausted: first, prio, old, young"), "{e}");
    // A pool with autoAssign off serves who names it.
    let mut named = svc("named");
    named.pool = Some("manual".into());
    assert_eq!(a.assign(&named).unwrap().pool, "manual");
    named.pool = Some("nope".into());
    assert_eq!(
        a.assign(&named).unwrap_err().to_string(),
        "no valid pool named nope; check the address-pool annotation and the pool's status"
    );
}

#[test]
fn namespace_and_service_selectors_limit_a_pool() {
    let mut team = pool("team", 1, &["10.0.1.0/24"]);
    team.alloc.namespaces = vec!["team-a".into()];
    team.alloc.namespace_selectors = vec![Selector::parse(
        &serde_yaml::from_str("matchLabels: {team: b}").unwrap(),
        "x",
    )
    .unwrap()];
    let mut web = pool("web", 2, &["10.0.2.0/24"]);
    web.alloc.service_selectors = vec![Selector::parse(
        &serde_yaml::from_str("matchLabels: {app: web}").unwrap(),
        "x",
    )
    .unwrap()];
    let mut a = alloc(vec![team, web]);
    let mut s = svc("s");
    s.key.namespace = "team-a".into();
    assert_eq!(a.assign(&s).unwrap().pool, "team");
    let mut s = svc("labelled-ns");
    s.key.namespace = "other".into();
    s.namespace_labels = labels(&[("team", "b")]);
    assert_eq!(a.assign(&s).unwrap().pool, "team");
    let mut s = svc("web");
    s.labels = labels(&[("app", "web")]);
    assert_eq!(a.assign(&s).unwrap().pool, "web");
    let e = a.assign(&svc("nobody")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no pool serves this Service automatically"),
        "{e}"
    );
    let mut s = svc("named");
    s.pool = Some("team".into());
    assert_eq!(
        a.assign(&s).unwrap_err(),
        Error::PoolExcludes("team".into())
    );
}

#[test]
fn a_requested_address_is_honoured_or_refused_with_the_reason() {
    let mut a = alloc(vec![
        pool("a", 1, &["10.0.0.0/29"]),
        pool("b", 2, &["10.0.1.0/29"]),
    ]);
    let mut r = svc("r");
    r.requested = vec![ip("10.0.0.5")];
    assert_eq!(ips(&a.assign(&r).unwrap()), ["10.0.0.5"]);
    let mut other = svc("other");
    other.requested = vec![ip("10.0.0.5")];
    assert_eq!(
        a.assign(&other).unwrap_err().to_string(),
        "requested IP 10.0.0.5 is taken by Service default/r; request another address, or give both Services the same allow-shared-ip key"
    );
    other.requested = vec![ip("192.168.7.7")];
    assert!(a
        .assign(&other)
        .unwrap_err()
        .to_string()
        .contains("outside every pool"));
    other.requested = vec![ip("10.0.1.3")];
    other.pool = Some("a".into());
    assert_eq!(
        a.assign(&other).unwrap_err(),
        Error::NotInNamedPool {
            ip: ip("10.0.1.3"),
            pool: "a".into()
        }
    );
    other.pool = None;
    assert_eq!(a.assign(&other).unwrap().pool, "b");
    // Changing the request moves the Service, and frees the old address.
    r.requested = vec![ip("10.0.0.6")];
    assert_eq!(ips(&a.assign(&r).unwrap()), ["10.0.0.6"]);
    assert!(a.holders(ip("10.0.0.5")).is_empty());
}

#[test]
fn dual_stack_follows_ip_family_policy() {
    let dual = pool("dual", 1, &["10.0.0.1-10.0.0.2", "fd00::1-fd00::2"]);
    let v4only = pool("v4", 0, &["10.9.0.1"]);
    let mut a = alloc(vec![v4only, dual]);
    let mut s = svc("prefer");
    s.policy = FamilyPolicy::PreferDualStack;
    // The first pool has IPv4 only: prefer takes what it offers.
    assert_eq!(ips(&a.assign(&s).unwrap()), ["10.9.0.1"]);
    let mut s = svc("require");
    s.policy = FamilyPolicy::RequireDualStack;
    assert_eq!(ips(&a.assign(&s).unwrap()), ["10.0.0.1", "fd00::1"]);
    let mut s = svc("v6first");
    s.policy = FamilyPolicy::RequireDualStack;
    s.primary_v4 = false;
    assert_eq!(ips(&a.assign(&s).unwrap()), ["fd00::2", "10.0.0.2"]);
    let mut s = svc("v6single");
    s.primary_v4 = false;
    let e = a.assign(&s).unwrap_err().to_string();
    assert!(
        e.contains("pool exhausted: dual has no free IPv6 address"),
        "{e}"
    );
    let mut s = svc("req");
    s.requested = vec![ip("10.0.0.1"), ip("fd00::1")];
    let e = a.assign(&s).unwrap_err().to_string();
    assert!(e.contains("do not fit ipFamilyPolicy SingleStack"), "{e}");
}

fn shared(name: &str, key: &str, port: i32) -> ServiceRequest {
    let mut s = svc(name);
    s.sharing_key = Some(key.into());
    s.ports = vec![tcp(port)];
    s
}

#[test]
fn sharing_needs_the_same_key_distinct_ports_and_the_same_policy() {
    let mut a = alloc(vec![pool("p", 1, &["10.0.0.1-10.0.0.9"])]);
    let dns_tcp = shared("dns-tcp", "dns", 53);
    let mut dns_udp = shared("dns-udp", "dns", 53);
    dns_udp.ports = vec![Port {
        protocol: "UDP".into(),
        port: 53,
    }];
    let first = a.assign(&dns_tcp).unwrap();
    // Same key, other protocol: the same address, unasked.
    assert_eq!(a.assign(&dns_udp).unwrap().ips, first.ips);
    assert_eq!(a.holders(first.ips[0]).len(), 2);
    // Same key, same port: a new address when not requested ...
    let clash = shared("clash", "dns", 53);
    assert_ne!(a.assign(&clash).unwrap().ips, first.ips);
    // ... and a conflict when requested.
    let mut clash2 = shared("clash2", "dns", 53);
    clash2.requested = first.ips.clone();
    let e = a.assign(&clash2).unwrap_err().to_string();
    assert!(
        e.starts_with("sharing conflict on 10.0.0.1 with Service default/dns-tcp: both use TCP/53"),
        "{e}"
    );
    let mut other_key = shared("k", "other", 80);
    other_key.requested = first.ips.clone();
    assert!(a
        .assign(&other_key)
        .unwrap_err()
        .to_string()
        .contains("the allow-shared-ip keys differ"));
    let mut local = shared("local", "dns", 8080);
    local.local = true;
    local.requested = first.ips.clone();
    assert!(a
        .assign(&local)
        .unwrap_err()
        .to_string()
        .contains("externalTrafficPolicy differs"));
    // Two Local Services share only with the same pods.
    let mut l1 = shared("l1", "loc", 1);
    l1.local = true;
    l1.selector = labels(&[("app", "a")]);
    let got = a.assign(&l1).unwrap();
    let mut l2 = shared("l2", "loc", 2);
    l2.local = true;
    l2.selector = labels(&[("app", "b")]);
    l2.requested = got.ips.clone();
    assert!(a
        .assign(&l2)
        .unwrap_err()
        .to_string()
        .contains("select the same pods"));
    l2.selector = l1.selector.clone();
    assert_eq!(a.assign(&l2).unwrap().ips, got.ips);
    // Releasing one sharer keeps the address for the other.
    a.release(&dns_tcp.key);
    assert_eq!(a.holders(first.ips[0]), [&dns_udp.key]);
}

#[test]
fn a_service_that_changes_its_ports_into_a_clash_moves_alone() {
    let mut a = alloc(vec![pool("p", 1, &["10.0.0.1-10.0.0.9"])]);
    let x = shared("x", "k", 80);
    let mut y = shared("y", "k", 81);
    let ip0 = a.assign(&x).unwrap().ips;
    assert_eq!(a.assign(&y).unwrap().ips, ip0);
    y.ports = vec![tcp(80)];
    assert_ne!(a.assign(&y).unwrap().ips, ip0);
    assert_eq!(a.assignment(&x.key).unwrap().ips, ip0);
}

#[test]
fn rebuild_restores_status_and_refuses_what_no_longer_fits() {
    let pools = vec![pool("p", 1, &["10.0.0.0/24", "fd00::/120"])];
    let mut old = svc("old");
    old.created = 10;
    let mut young = svc("young");
    young.created = 20;
    let outside = svc("outside");
    let fresh = svc("fresh");
    let mut moved = svc("moved");
    moved.requested = vec![ip("10.0.0.9")];
    let services = vec![
        (moved.clone(), vec![ip("10.0.0.3")]),
        (young.clone(), vec![ip("10.0.0.7")]),
        (old.clone(), vec![ip("10.0.0.7")]),
        (outside.clone(), vec![ip("172.16.0.1")]),
        (fresh.clone(), vec![]),
    ];
    let mut twice = svc("twice");
    twice.policy = FamilyPolicy::PreferDualStack;
    let mut services = services;
    services.push((
        twice.clone(),
        vec![ip("10.0.0.20"), ip("fd00::1"), ip("10.0.0.20")],
    ));
    let (mut a, w, failed) = Allocator::rebuild(pools, &services);
    assert!(w.is_empty());
    assert_eq!(ips(a.assignment(&old.key).unwrap()), ["10.0.0.7"]);
    assert_eq!(
        failed,
        [
            (
                moved.key.clone(),
                Error::RequestChanged {
                    held: "[10.0.0.3]".into(),
                    requested: "[10.0.0.9]".into()
                }
            ),
            (outside.key.clone(), Error::OutsidePools(ip("172.16.0.1"))),
            (
                young.key.clone(),
                Error::Taken {
                    ip: ip("10.0.0.7"),
                    by: "default/old".into()
                }
            ),
        ]
    );
    assert_eq!(
        ips(a.assignment(&twice.key).unwrap()),
        ["10.0.0.20", "fd00::1"]
    );
    // Assigning after the rebuild never moves a restored Service.
    assert_eq!(ips(&a.assign(&old).unwrap()), ["10.0.0.7"]);
    assert_eq!(ips(&a.assign(&fresh).unwrap()), ["10.0.0.0"]);
    assert_eq!(ips(&a.assign(&young).unwrap()), ["10.0.0.1"]);
    let m = a.assign(&moved).unwrap();
    assert_eq!(m.message(), "assigned [10.0.0.9] from pool p");
}

#[test]
fn bad_pools_are_refused_and_never_move_existing_addresses() {
    let older = pool("older", 1, &["10.0.0.0/24"]);
    let overlapping = pool("newer", 2, &["10.0.0.128/25", "10.1.0.0/24"]);
    let mut dup = pool("older", 3, &["10.2.0.0/24"]);
    dup.source = Source::MetalLb;
    dup.object.api_version = "metallb.io/v1beta1".into();
    dup.object.namespace = Some("metallb-system".into());
    let fine = pool("fine", 4, &["10.3.0.0/24"]);
    let (a, w) = Allocator::new(vec![fine, dup, overlapping, older]);
    let names: Vec<&str> = a.pools().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["older", "fine"]);
    let msgs: Vec<String> = w
        .iter()
        .map(|w| format!("{}: {}", w.object.name, w.problem))
        .collect();
    assert_eq!(
        msgs,
        [
            "newer: pool newer overlaps pool older at 10.0.0.128-10.0.0.255; remove the overlap (pool older keeps its addresses)",
            "older: a pool named older already exists (flatlan.dev/v1alpha1 IPAddressPool older); rename one of them",
        ]
    );
    assert!(w.iter().all(|w| w.reason() == "InvalidPool"));
}

#[test]
fn usage_counts_each_family_and_shared_addresses_once() {
    let mut a = alloc(vec![pool("p", 1, &["10.0.0.0/30", "fd00::/64"])]);
    a.assign(&shared("a", "k", 1)).unwrap();
    a.assign(&shared("b", "k", 2)).unwrap();
    let mut s = svc("v6");
    s.primary_v4 = false;
    a.assign(&s).unwrap();
    let u = &a.usage()[0];
    assert_eq!((u.assigned_v4, u.available_v4), (1, 3));
    assert_eq!((u.assigned_v6, u.available_v6), (1, (1u128 << 64) - 1));
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Assign {
        svc: u8,
        key: Option<u8>,
        port: u8,
        local: bool,
        request: Option<u8>,
    },
    Release(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, proptest::option::of(0u8..2), 0u8..3, any::<bool>(), proptest::option::of(0u8..8))
            .prop_map(|(svc, key, port, local, request)| Op::Assign { svc, key, port, local, request }),
        1 => (0u8..12).prop_map(Op::Release),
    ]
}

fn request_of(op: &Op) -> Option<ServiceRequest> {
    let Op::Assign {
        svc: n,
        key,
        port,
        local,
        request,
    } = op
    else {
        return None;
    };
    let mut s = svc(&format!("s{n}"));
    s.sharing_key = key.map(|k| format!("k{k}"));
    s.ports = vec![tcp(i32::from(*port))];
    s.local = *local;
    s.requested = request
        .map(|r| ip(&format!("10.0.0.{r}")))
        .into_iter()
        .collect();
    Some(s)
}

fn small_pools() -> Vec<Pool> {
    vec![
        pool("a", 1, &["10.0.0.0-10.0.0.3"]),
        pool("b", 2, &["10.0.0.4-10.0.0.7"]),
    ]
}

proptest! {
    /// Whatever the sequence, no address is held by two Services that may
    /// not share it, and every held address is in a pool.
    #[test]
    fn never_double_allocates(ops in proptest::collection::vec(op(), 1..60)) {
        let mut a = alloc(small_pools());
        let mut reqs = std::collections::BTreeMap::new();
        for o in &ops {
            match request_of(o) {
                Some(r) => {
                    let _ = a.assign(&r);
                    reqs.insert(r.key.clone(), r);
                }
                None => if let Op::Release(n) = o {
                    a.release(&svc(&format!("s{n}")).key);
                },
            }
            // MetalLB's sharing rule, restated here rather than through
            // `Holder::admits`, so that a broken rule cannot pass itself.
            for (ip, hs) in &a.by_ip {
                prop_assert!(a.pool_of(*ip).is_some());
                for (i, x) in hs.iter().enumerate() {
                    for y in &hs[i + 1..] {
                        let (rx, ry) = (&reqs[&x.key], &reqs[&y.key]);
                        prop_assert!(rx.sharing_key.is_some() && rx.sharing_key == ry.sharing_key, "{:?} and {:?} on {}", x.key, y.key, ip);
                        prop_assert!(rx.ports.iter().all(|p| !ry.ports.contains(p)), "{:?} and {:?} on {}", x.key, y.key, ip);
                        prop_assert_eq!(rx.local, ry.local);
                    }
                }
            }
            for (k, asg) in a.assignments() {
                for ip in &asg.ips {
                    prop_assert!(a.holders(*ip).contains(&k));
                }
            }
        }
    }

    /// A rebuild from the Services' status, in any order, gives back every
    /// address, and assigning again afterwards moves nobody.
    #[test]
    fn rebuild_is_stable(ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()) {
        let mut a = alloc(small_pools());
        let mut reqs = std::collections::BTreeMap::new();
        for o in &ops {
            if let Some(r) = request_of(o) {
                let _ = a.assign(&r);
                reqs.insert(r.key.clone(), r);
            } else if let Op::Release(n) = o {
                a.release(&svc(&format!("s{n}")).key);
            }
        }
        let mut statuses: Vec<(ServiceRequest, Vec<IpAddr>)> = reqs
            .values()
            .map(|r| (r.clone(), a.assignment(&r.key).map(|x| x.ips.clone()).unwrap_or_default()))
            .collect();
        // A cheap deterministic shuffle.
        let len = statuses.len();
        for i in 0..len {
            let j = (seed.wrapping_mul(i as u64 + 7) % len as u64) as usize;
            statuses.swap(i, j);
        }
        let (mut b, _, failed) = Allocator::rebuild(small_pools(), &statuses);
        prop_assert!(failed.is_empty(), "{:?}", failed);
        let before: Vec<_> = a.assignments().map(|(k, x)| (k.clone(), x.clone())).collect();
        let after: Vec<_> = b.assignments().map(|(k, x)| (k.clone(), x.clone())).collect();
        prop_assert_eq!(&before, &after);
        for r in reqs.values() {
            if let Some(kept) = b.assignment(&r.key).cloned() {
                prop_assert_eq!(b.assign(r).ok(), Some(kept));
            }
        }
    }
}

#[test]
fn advertisements_naming_unknown_or_refused_pools_are_warned_about() {
    use crate::model::{Advertisement, ObjectRef};
    let (a, _) = Allocator::new(vec![
        pool("good", 1, &["10.0.0.0/24"]),
        pool("bad", 2, &["10.0.0.5"]),
    ]);
    let ad = Advertisement {
        object: ObjectRef {
            api_version: "metallb.io/v1beta1".into(),
            kind: "L2Advertisement".into(),
            namespace: Some("metallb-system".into()),
            name: "l2".into(),
        },
        pools: vec!["good".into(), "bad".into(), "typo".into()],
        pool_selectors: vec![],
        node_selectors: vec![],
        service_selectors: vec![],
        interfaces: vec![],
    };
    let w = crate::pools::unknown_pools(a.pools(), &[ad]);
    let msgs: Vec<String> = w
        .iter()
        .map(|w| format!("{}: {}", w.reason(), w.problem))
        .collect();
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0].starts_with("InvalidAdvertisement: spec.ipAddressPools names pool bad"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].contains("pool typo, which does not exist"),
        "{msgs:?}"
    );
}
