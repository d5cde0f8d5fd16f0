//! The plan alone, without any API: what each round decides.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use serde_json::json;

use super::*;
use crate::controller::world::{Change, Kind, Obj};

fn now() -> Time {
    serde_json::from_str("\"2026-12-03T12:00:00Z\"").unwrap()
}

fn pool() -> Obj {
    Obj::FlatlanPool(Box::new(
        serde_json::from_value(json!({"apiVersion": "flatlan.dev/v1alpha1",
            "kind": "IPAddressPool", "metadata": {"name": "lan", "resourceVersion": "1"},
            "spec": {"addresses": ["192.0.2.10-192.0.2.11"]}}))
        .unwrap(),
    ))
}

fn service(name: &str, class: &str, ingress: &[&str]) -> Service {
    let ingress: Vec<_> = ingress.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "5"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": class,
            "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": ingress}}}))
    .unwrap()
}

/// A world where every kind has listed, with `objs`.
fn world(objs: Vec<Obj>) -> World {
    let mut w = World::default();
    for k in crate::controller::watch::kinds() {
        w.apply(Change::Reset(k, vec![]));
    }
    for o in objs {
        w.apply(Change::Upsert(o));
    }
    assert!(w.synced(&crate::controller::watch::kinds()));
    w
}

fn status_writes(p: &Plan) -> Vec<(String, Vec<IpAddr>)> {
    p.writes
        .iter()
        .filter_map(|w| match w {
            Write::ServiceStatus { name, ips, .. } => Some((name.clone(), ips.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_round_with_nothing_new_writes_nothing() {
    let svc = service("a", LOAD_BALANCER_CLASS, &[]);
    let mut w = world(vec![pool(), Obj::Service(Box::new(svc.clone()))]);
    let mut c = Controller::new(false);
    let p = c.plan(&w, now());
    assert_eq!(
        status_writes(&p),
        [("a".to_string(), vec!["192.0.2.10".parse().unwrap()])]
    );
    assert_eq!(p.allocated, 1);
    // What the API returns goes back into the world.
    w.upsert(Obj::Service(Box::new(service(
        "a",
        LOAD_BALANCER_CLASS,
        &["192.0.2.10"],
    ))));
    for wr in &p.writes {
        if let Write::FlatlanPoolStatus { status, .. } = wr {
            let mut p = w.flatlan_pools.values().next().unwrap().clone();
            p.status = Some(status.clone());
            w.upsert(Obj::FlatlanPool(Box::new(p)));
        }
    }
    let again = c.plan(&w, now());
    assert!(again.writes.is_empty(), "{:#?}", again.writes);
}

#[test]
fn an_address_is_not_given_twice_before_its_status_echoes() {
    let mut w = world(vec![
        pool(),
        Obj::Service(Box::new(service("a", LOAD_BALANCER_CLASS, &[]))),
    ]);
    let mut c = Controller::new(false);
    let first = status_writes(&c.plan(&w, now()));
    // "b" arrives before the watch shows "a"'s status.
    w.upsert(Obj::Service(Box::new(service(
        "b",
        LOAD_BALANCER_CLASS,
        &[],
    ))));
    let second = status_writes(&c.plan(&w, now()));
    assert_eq!(first[0].1, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
    assert!(second
        .iter()
        .any(|(n, ips)| n == "b" && ips == &["192.0.2.11".parse::<IpAddr>().unwrap()]));
}

#[test]
fn another_implementations_service_is_left_alone() {
    let foreign = service("theirs", "example.com/other", &["192.0.2.10"]);
    let w = world(vec![pool(), Obj::Service(Box::new(foreign))]);
    let mut c = Controller::new(false);
    let p = c.plan(&w, now());
    assert!(status_writes(&p).is_empty());
    assert!(!p
        .writes
        .iter()
        .any(|w| matches!(w, Write::Event(e) if e.object.name == "theirs")));
    // Not ours, so its address is not ours to hold either.
    assert!(c
        .allocator()
        .unwrap()
        .holders("192.0.2.10".parse().unwrap())
        .is_empty());
}

#[test]
fn without_every_kind_listed_the_world_is_not_synced() {
    let mut w = World::default();
    w.apply(Change::Reset(Kind::Service, vec![]));
    assert!(!w.synced(&crate::controller::watch::kinds()));
}
