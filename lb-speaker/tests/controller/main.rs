//! The LoadBalancer allocator against exact API requests (issue 13, "the
//! kube layer is tested against exact requests"): `controller::run` on a
//! kube Client whose transport is a `tower-test` mock serving an in-memory
//! API ([`fake`]). Time is paused, so the Lease's seconds pass at once.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod fake;

use std::sync::Arc;

use fake::{Fake, Req};
use flatlan_speaker::controller::{self, Options};
use flatlan_speaker::metrics::{scrape, Metrics};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const SVCS: &str = "/api/v1/namespaces/default/services";
const POOLS: &str = "/apis/flatlan.dev/v1alpha1/ipaddresspools";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/flatlan-system/leases/flatlan-allocator";

fn pool(name: &str, addresses: &[&str]) -> Value {
    json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": {"addresses": addresses}})
}

/// A LoadBalancer Service of flatlan's class on TCP port 80; `spec` and
/// `annotations` are merged in.
fn svc(name: &str, spec: Value, annotations: Value) -> Value {
    let mut s = json!({"type": "LoadBalancer", "loadBalancerClass": "flatlan.dev/l2",
        "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name},
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"});
    for (k, v) in spec.as_object().into_iter().flatten() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": s})
}

fn start(fake: &Fake, identity: &str) -> (JoinHandle<()>, Arc<Metrics>) {
    let mut o = Options::new("flatlan-system", identity);
    let metrics = o.metrics.clone();
    o.missing_crd_retry = std::time::Duration::from_secs(600);
    let client = fake.client();
    let h = tokio::spawn(async move {
        controller::run(client, o).await.unwrap();
    });
    (h, metrics)
}

fn status_path(name: &str) -> String {
    format!("{SVCS}/{name}/status")
}

/// The status patches written for Service `name`, as bodies.
fn patches(log: &[Req], name: &str) -> Vec<Value> {
    let p = status_path(name);
    log.iter()
        .filter(|r| r.method == "PATCH" && r.path == p)
        .map(|r| r.body.clone())
        .collect()
}

/// The Events posted about `name`: (type, reason, message).
fn events(log: &[Req], name: &str) -> Vec<(String, String, String)> {
    log.iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .filter(|r| r.body["involvedObject"]["name"] == name)
        .map(|r| {
            let s = |k: &str| r.body[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

fn ingress(body: &Value) -> Vec<String> {
    body["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["ip"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The address Service `name` holds in the fake's state.
fn held(fake: &Fake, name: &str) -> Vec<String> {
    fake.get(&format!("{SVCS}/{name}"))
        .map(|s| ingress(&s))
        .unwrap_or_default()
}

async fn wait_held(fake: &Fake, name: &str) -> Vec<String> {
    let p = status_path(name);
    fake.wait_for(&format!("a status patch of {name}"), |l| {
        l.iter().any(|r| r.method == "PATCH" && r.path == p)
    })
    .await;
    held(fake, name)
}

async fn wait_event(fake: &Fake, name: &str, reason: &str) -> (String, String, String) {
    fake.wait_for(&format!("Event {reason} on {name}"), |l| {
        events(l, name).iter().any(|e| e.1 == reason)
    })
    .await;
    events(&fake.log(), name)
        .into_iter()
        .find(|e| e.1 == reason)
        .unwrap()
}

/// The reads are watches and LISTs of collections and the Lease: never a
/// GET of one Service, so the traffic does not grow with the Services.
fn assert_reads_are_o1(log: &[Req]) {
    for r in log.iter().filter(|r| r.is_read()) {
        assert!(
            r.path == LEASE || !r.path.contains("/services/"),
            "a per-Service read: {r:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_lb_service_gets_a_pool_address_through_the_status_subresource() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (_h, metrics) = start(&fake, "node-a");
    fake.apply(SVCS, svc("web", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "web").await, ["192.0.2.10"]);
    wait_event(&fake, "web", "IPAllocated").await;
    fake.wait_for("the pool's status", |l| {
        l.iter()
            .any(|r| r.method == "PATCH" && r.path == format!("{POOLS}/lan/status"))
    })
    .await;

    let log = fake.log();
    let patch: Vec<&Req> = log
        .iter()
        .filter(|r| r.path == status_path("web"))
        .collect();
    assert_eq!(patch.len(), 1, "{patch:#?}");
    assert_eq!(patch[0].method, "PATCH");
    assert_eq!(patch[0].query, "&fieldManager=flatlan-allocator");
    assert_eq!(
        patch[0].body["status"],
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}})
    );
    assert!(patch[0].body["metadata"]["resourceVersion"].is_string());

    let ev = log
        .iter()
        .find(|r| r.method == "POST" && r.body["reason"] == "IPAllocated")
        .unwrap();
    assert_eq!(ev.path, "/api/v1/namespaces/default/events");
    assert_eq!(ev.body["type"], "Normal");
    assert_eq!(ev.body["message"], "assigned 192.0.2.10 from pool lan");
    assert_eq!(
        ev.body["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Service", "namespace": "default",
            "name": "web", "uid": "uid-web"})
    );

    let pool_patch = log
        .iter()
        .find(|r| r.path == format!("{POOLS}/lan/status"))
        .unwrap();
    let st = &pool_patch.body["status"];
    assert_eq!(
        (st["assignedIPv4"].clone(), st["availableIPv4"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(st["conditions"][0]["type"], "Valid");
    assert_eq!(st["conditions"][0]["status"], "True");

    let text = metrics.render();
    assert_eq!(
        scrape(&text, "flatlan_speaker_lb_allocations_total"),
        Some(1.0)
    );
    assert_eq!(scrape(&text, "flatlan_speaker_allocator_leader"), Some(1.0));
    assert!(
        text.contains(r#"flatlan_speaker_pool_addresses{pool="lan",family="ipv4",state="free"} 2"#),
        "{text}"
    );
    assert_reads_are_o1(&log);
}

#[tokio::test(start_paused = true)]
async fn a_requested_ip_is_honoured_or_refused_with_an_event() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(
        SVCS,
        svc("asks", json!({"loadBalancerIP": "192.0.2.12"}), json!({})),
    );
    assert_eq!(wait_held(&fake, "asks").await, ["192.0.2.12"]);
    // MetalLB's annotation, old spelling.
    fake.apply(
        SVCS,
        svc(
            "annotated",
            json!({}),
            json!({"metallb.universe.tf/loadBalancerIPs": "192.0.2.11"}),
        ),
    );
    assert_eq!(wait_held(&fake, "annotated").await, ["192.0.2.11"]);
    fake.apply(
        SVCS,
        svc(
            "outside",
            json!({"loadBalancerIP": "198.51.100.7"}),
            json!({}),
        ),
    );
    let (t, _, msg) = wait_event(&fake, "outside", "AllocationFailed").await;
    assert_eq!(t, "Warning");
    assert_eq!(msg, "requested IP 198.51.100.7 is outside every pool; request an address from a pool's addresses or add a pool for it");
    fake.apply(
        SVCS,
        svc("taken", json!({"loadBalancerIP": "192.0.2.12"}), json!({})),
    );
    let (_, _, msg) = wait_event(&fake, "taken", "AllocationFailed").await;
    assert_eq!(msg, "requested IP 192.0.2.12 is taken by Service default/asks; request another address, or give both Services the same allow-shared-ip key");
    let log = fake.log();
    assert!(patches(&log, "outside").is_empty());
    assert!(patches(&log, "taken").is_empty());
    // Refused once, not on every round.
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(events(&fake.log(), "taken").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn sharing_needs_the_same_key_and_disjoint_ports() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (_h, _m) = start(&fake, "node-a");
    let key = json!({"metallb.io/allow-shared-ip": "k"});
    fake.apply(SVCS, svc("http", json!({}), key.clone()));
    assert_eq!(wait_held(&fake, "http").await, ["192.0.2.10"]);
    let tls = json!({"ports": [{"port": 443, "protocol": "TCP"}]});
    fake.apply(SVCS, svc("https", tls, key.clone()));
    assert_eq!(wait_held(&fake, "https").await, ["192.0.2.10"]);
    // Same key, port 80 again, asking for the shared address.
    fake.apply(
        SVCS,
        svc(
            "clash",
            json!({"loadBalancerIP": "192.0.2.10"}),
            key.clone(),
        ),
    );
    let (_, _, msg) = wait_event(&fake, "clash", "AllocationFailed").await;
    assert_eq!(msg, "sharing conflict on 192.0.2.10 with Service default/http: both use TCP/80; give each Service its own ports");
    // Same key and ports without a request: a different address.
    fake.apply(SVCS, svc("other80", json!({}), key));
    assert_eq!(wait_held(&fake, "other80").await, ["192.0.2.11"]);
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_pool_is_an_event_that_says_how_to_fix_it() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("tiny", &["192.0.2.10/32"]));
    let (_h, metrics) = start(&fake, "node-a");
    fake.apply(SVCS, svc("first", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "first").await, ["192.0.2.10"]);
    fake.apply(SVCS, svc("second", json!({}), json!({})));
    let (t, _, msg) = wait_event(&fake, "second", "AllocationFailed").await;
    assert_eq!(t, "Warning");
    assert_eq!(msg, "pool exhausted: tiny has no free IPv4 address; add addresses to a pool or delete an unused LoadBalancer Service");
    assert!(patches(&fake.log(), "second").is_empty());
    let text = metrics.render();
    assert_eq!(
        scrape(
            &text,
            r#"flatlan_speaker_lb_allocation_failures_total{reason="pool_exhausted"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // Freeing the address serves the waiting Service.
    fake.delete(SVCS, "first");
    assert_eq!(wait_held(&fake, "second").await, ["192.0.2.10"]);
}

#[tokio::test(start_paused = true)]
async fn delete_type_change_and_class_change_release_the_address() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.11"]));
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(SVCS, svc("a", json!({}), json!({})));
    fake.apply(SVCS, svc("b", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "a").await, ["192.0.2.10"]);
    assert_eq!(wait_held(&fake, "b").await, ["192.0.2.11"]);

    fake.modify(&format!("{SVCS}/a"), |s| {
        s["spec"]["type"] = json!("ClusterIP")
    });
    wait_event(&fake, "a", "IPReleased").await;
    let cleared = patches(&fake.log(), "a").pop().unwrap();
    assert_eq!(
        cleared["status"],
        json!({"loadBalancer": {"ingress": null}})
    );
    assert!(held(&fake, "a").is_empty());
    fake.apply(SVCS, svc("c", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "c").await, ["192.0.2.10"]);

    fake.modify(&format!("{SVCS}/b"), |s| {
        s["spec"]["loadBalancerClass"] = json!("example.com/other")
    });
    wait_event(&fake, "b", "IPReleased").await;
    assert!(held(&fake, "b").is_empty());

    fake.delete(SVCS, "c");
    fake.apply(SVCS, svc("d", json!({}), json!({})));
    fake.apply(SVCS, svc("e", json!({}), json!({})));
    let mut got = [wait_held(&fake, "d").await, wait_held(&fake, "e").await].concat();
    got.sort();
    assert_eq!(got, ["192.0.2.10", "192.0.2.11"]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_rebuilds_from_status_and_reshuffles_nothing() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    // What a previous run wrote: not in allocation order.
    for (name, ip) in [("old1", "192.0.2.12"), ("old2", "192.0.2.10")] {
        let mut s = svc(name, json!({}), json!({}));
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        fake.apply(SVCS, s);
    }
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(SVCS, svc("new", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "new").await, ["192.0.2.11"]);
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let log = fake.log();
    assert!(patches(&log, "old1").is_empty());
    assert!(patches(&log, "old2").is_empty());
    assert!(events(&log, "old1").is_empty());
    assert_eq!(held(&fake, "old1"), ["192.0.2.12"]);
}

fn lease_holder(fake: &Fake) -> Option<String> {
    let l = fake.get(LEASE)?;
    l["spec"]["holderIdentity"].as_str().map(str::to_string)
}

fn lease_writes_by(log: &[Req], who: &str) -> usize {
    log.iter()
        .filter(|r| r.path.contains("/leases") && !r.is_read())
        .filter(|r| r.body["spec"]["holderIdentity"] == who)
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_leader_handover_does_not_double_allocate() {
    use std::time::Duration;
    use tokio::time::Instant;

    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (ha, _) = start(&fake, "node-a");
    let (hb, _) = start(&fake, "node-b");
    fake.apply(SVCS, svc("one", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "one").await, ["192.0.2.10"]);
    fake.apply(SVCS, svc("two", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "two").await, ["192.0.2.11"]);
    // Both run; one leads, the other only reads the Lease.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let leader = lease_holder(&fake).unwrap();
    let follower = if leader == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let log = fake.log();
    assert_eq!(
        patches(&log, "one").len(),
        1,
        "one status write, by one leader"
    );
    assert!(
        lease_writes_by(&log, follower) <= 1,
        "at most the lost create race"
    );
    let renewals = lease_writes_by(&log, &leader);
    assert!(
        (14..=17).contains(&renewals),
        "renewed every 2 s: {renewals}"
    );

    // The leader dies without a word.
    let died = Instant::now();
    if leader == "node-a" {
        ha.abort()
    } else {
        hb.abort()
    }
    // While nobody leads, .10 is freed: a leader that did not rebuild
    // from status would now hand .10 to "two" (the older Service) and
    // .11, which "two" is still announced with, to the next one.
    fake.delete(SVCS, "one");
    fake.wait_for("the follower's takeover", |l| {
        l.iter()
            .any(|r| r.method == "PUT" && r.body["spec"]["holderIdentity"] == follower)
    })
    .await;
    let took = died.elapsed();
    assert!(
        took >= Duration::from_secs(6) && took <= Duration::from_secs(9),
        "takeover after {took:?}: not before the Lease could have been renewed, within a few seconds after"
    );
    let lease = fake.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    fake.apply(SVCS, svc("three", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "three").await, ["192.0.2.10"]);
    let log = fake.log();
    assert_eq!(
        patches(&log, "two").len(),
        1,
        "the new leader rebuilt, it did not rewrite"
    );
    assert_eq!(held(&fake, "two"), ["192.0.2.11"]);
    // The new leader listed Services afresh after it took the Lease.
    let takeover = log
        .iter()
        .position(|r| r.method == "PUT" && r.body["spec"]["holderIdentity"] == follower)
        .unwrap();
    assert!(log[takeover..]
        .iter()
        .any(|r| r.path == "/api/v1/services" && !r.is_watch()));
}

#[tokio::test(start_paused = true)]
async fn steady_state_traffic_does_not_grow_with_the_services() {
    use std::time::Duration;
    let mut per_minute = Vec::new();
    for n in [1usize, 100] {
        let fake = Fake::start(false);
        fake.apply(POOLS, pool("lan", &["10.0.0.0/24"]));
        let (_h, metrics) = start(&fake, "node-a");
        for i in 0..n {
            fake.apply(SVCS, svc(&format!("s{i}"), json!({}), json!({})));
        }
        let last = format!("s{}", n - 1);
        wait_held(&fake, &last).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let text = metrics.render();
        assert_eq!(
            scrape(&text, "flatlan_speaker_lb_allocations_total"),
            Some(n as f64)
        );
        let before = fake.log().len();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let log = fake.log();
        let minute = &log[before..];
        assert!(
            minute.iter().all(|r| r.path == LEASE && r.method == "PUT"),
            "only Lease renewals at steady state: {minute:#?}"
        );
        per_minute.push(minute.len());
        assert_reads_are_o1(&log);
    }
    assert_eq!(
        per_minute[0], per_minute[1],
        "requests per minute with 1 and 100 Services"
    );
    assert!(per_minute[0] <= 31, "{per_minute:?}");
}

fn condition(fake: &Fake, pool: &str) -> (String, String, String) {
    let p = fake.get(&format!("{POOLS}/{pool}")).unwrap();
    let c = &p["status"]["conditions"][0];
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test(start_paused = true)]
async fn bad_objects_get_a_condition_or_an_event_and_touch_nobody_else() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    fake.apply(POOLS, pool("overlap", &["192.0.2.12-192.0.2.20"]));
    fake.apply(POOLS, pool("junk", &["192.0.2.300/24"]));
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(
        SVCS,
        svc(
            "torn",
            json!({}),
            json!({"metallb.io/loadBalancerIPs": "192.0.2.10",
                   "metallb.universe.tf/loadBalancerIPs": "192.0.2.11"}),
        ),
    );
    fake.apply(
        SVCS,
        svc("far", json!({"loadBalancerIP": "203.0.113.9"}), json!({})),
    );
    fake.apply(
        SVCS,
        svc("bad-ip", json!({"loadBalancerIP": "192.0.2"}), json!({})),
    );
    fake.apply(SVCS, svc("fine", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "fine").await, ["192.0.2.10"]);
    let (_, reason, msg) = wait_event(&fake, "torn", "AllocationFailed").await;
    assert_eq!(reason, "AllocationFailed");
    assert_eq!(msg, "metallb.io/loadBalancerIPs: \"192.0.2.10\" and metallb.universe.tf/loadBalancerIPs: \"192.0.2.11\" disagree; keep only one of them");
    wait_event(&fake, "far", "AllocationFailed").await;
    let (_, _, msg) = wait_event(&fake, "bad-ip", "AllocationFailed").await;
    assert!(msg.contains("is not an IP address"), "{msg}");
    fake.wait_for("the refused pools' conditions", |l| {
        ["overlap", "junk"]
            .iter()
            .all(|p| l.iter().any(|r| r.path == format!("{POOLS}/{p}/status")))
    })
    .await;
    let (st, reason, msg) = condition(&fake, "overlap");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "InvalidPool"));
    assert_eq!(msg, "pool overlap overlaps pool lan at 192.0.2.12-192.0.2.20; remove the overlap (pool lan keeps its addresses)");
    let (st, reason, msg) = condition(&fake, "junk");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "InvalidPool"));
    assert!(msg.starts_with("addresses: "), "{msg}");
    assert_eq!(condition(&fake, "lan").0, "True");
    // The pools' Events too, once each.
    wait_event(&fake, "overlap", "InvalidPool").await;
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let log = fake.log();
    assert_eq!(events(&log, "junk").len(), 1);
    // Status written once per change, not per round.
    let junk = format!("{POOLS}/junk/status");
    assert_eq!(log.iter().filter(|r| r.path == junk).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn metallb_pools_legacy_config_and_unsupported_kinds() {
    let fake = Fake::start(true);
    let ml_pools = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools";
    fake.apply(
        ml_pools,
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "ml", "namespace": "metallb-system"},
            "spec": {"addresses": ["192.0.2.64/30"], "autoAssign": false}}),
    );
    let config = "address-pools:\n- name: legacy\n  protocol: layer2\n  auto-assign: false\n  addresses: [192.0.2.128/31]\n- name: bgp\n  protocol: bgp\n  addresses: [192.0.2.200/31]\n";
    fake.apply(
        "/api/v1/namespaces/metallb-system/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config", "namespace": "metallb-system"},
            "data": {"config": config}}),
    );
    fake.apply(
        "/apis/metallb.io/v1beta2/namespaces/metallb-system/bgppeers",
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
            "metadata": {"name": "router", "namespace": "metallb-system"},
            "spec": {"peerAddress": "192.0.2.1"}}),
    );
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(
        SVCS,
        svc(
            "a",
            json!({}),
            json!({"metallb.universe.tf/address-pool": "ml"}),
        ),
    );
    fake.apply(
        SVCS,
        svc("b", json!({}), json!({"metallb.io/address-pool": "legacy"})),
    );
    assert_eq!(wait_held(&fake, "a").await, ["192.0.2.64"]);
    assert_eq!(wait_held(&fake, "b").await, ["192.0.2.128"]);
    let (t, reason, msg) = wait_event(&fake, "router", "Unsupported").await;
    assert_eq!(t, "Warning");
    assert!(msg.contains("BGP is not implemented"), "{msg}");
    let (_, _, msg) = wait_event(&fake, "config", "Unsupported").await;
    assert!(msg.contains("protocol: bgp"), "{msg}");
    let _ = reason;
    let status = format!("{ml_pools}/ml/status");
    fake.wait_for("the MetalLB pool's counts", |l| {
        l.iter().any(|r| r.path == status)
    })
    .await;
    let p = fake.get(&format!("{ml_pools}/ml")).unwrap();
    assert_eq!(p["status"]["assignedIPv4"], 1);
    assert_eq!(p["status"]["availableIPv4"], 3);
    // autoAssign: false keeps it out of plain Services.
    fake.apply(SVCS, svc("plain", json!({}), json!({})));
    let (_, _, msg) = wait_event(&fake, "plain", "AllocationFailed").await;
    assert!(
        msg.starts_with("no pool serves this Service automatically"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn dual_stack_gets_one_address_per_family() {
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10/31", "fd00::10-fd00::11"]));
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(
        SVCS,
        svc(
            "dual",
            json!({"ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}),
            json!({}),
        ),
    );
    assert_eq!(wait_held(&fake, "dual").await, ["fd00::10", "192.0.2.10"]);
}

#[tokio::test(start_paused = true)]
async fn an_optional_kind_rbac_forbids_does_not_stop_allocation() {
    // The legacy ConfigMap's Role ships in an overlay; without it the
    // allocator still serves flatlan's pools.
    let fake = Fake::start(true);
    fake.forbid("v1", "configmaps");
    fake.forbid("metallb.io/v1beta2", "bgppeers");
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(SVCS, svc("web", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "web").await, ["192.0.2.10"]);
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_shuts_down_hands_over_at_the_next_poll() {
    use std::time::Duration;
    use tokio::time::Instant;

    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = fake.client();
    let o = Options::new("flatlan-system", "node-a");
    let metrics = o.metrics.clone();
    let a = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        controller::run_until(client, o, shutdown).await.unwrap();
    });
    fake.wait_for("node-a leads", |_| {
        lease_holder(&fake).as_deref() == Some("node-a")
    })
    .await;
    let (_hb, _) = start(&fake, "node-b");
    fake.apply(SVCS, svc("one", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "one").await, ["192.0.2.10"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(lease_holder(&fake).as_deref(), Some("node-a"));

    let t = Instant::now();
    stop.send(()).unwrap();
    a.await.unwrap();
    let lease = fake.get(LEASE).unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    let text = metrics.render();
    assert_eq!(scrape(&text, "flatlan_speaker_allocator_leader"), Some(0.0));
    assert!(!text.contains("flatlan_speaker_pool_addresses{"), "{text}");
    fake.wait_for("node-b's takeover", |_| {
        lease_holder(&fake).as_deref() == Some("node-b")
    })
    .await;
    assert!(t.elapsed() <= Duration::from_secs(3), "{:?}", t.elapsed());
    fake.apply(SVCS, svc("two", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "two").await, ["192.0.2.11"]);
    assert_eq!(patches(&fake.log(), "one").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_write_the_api_keeps_refusing_is_retried_ever_more_slowly() {
    use std::time::Duration;
    let fake = Fake::start(false);
    fake.apply(POOLS, pool("lan", &["192.0.2.10-192.0.2.12"]));
    let status = format!("{POOLS}/lan/status");
    fake.refuse_writes(&status);
    let (_h, _m) = start(&fake, "node-a");
    fake.apply(SVCS, svc("web", json!({}), json!({})));
    assert_eq!(wait_held(&fake, "web").await, ["192.0.2.10"]);
    tokio::time::sleep(Duration::from_secs(120)).await;
    let tries = fake.log().iter().filter(|r| r.path == status).count();
    // 2, 4, 8, 16, 32, 60 s apart: 7 in two minutes, not 60.
    assert!((5..=8).contains(&tries), "{tries} tries");
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_follows_our_clock_not_the_renew_time_written() {
    use std::time::Duration;
    let fake = Fake::start(false);
    let leases = "/apis/coordination.k8s.io/v1/namespaces/flatlan-system/leases";
    // A holder whose clock is a year behind, renewing every 2 s: alive.
    let lease = |n: u32| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "flatlan-allocator", "namespace": "flatlan-system"},
            "spec": {"holderIdentity": "behind", "leaseDurationSeconds": 10,
                "renewTime": format!("2025-12-03T12:00:{n:02}.000000Z")}})
    };
    fake.apply(leases, lease(0));
    let (_h, _m) = start(&fake, "node-a");
    for n in 1..=30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        fake.modify(LEASE, |l| l["spec"] = lease(n)["spec"].clone());
    }
    assert_eq!(lease_holder(&fake).as_deref(), Some("behind"));
    // Its renewTime now says a year ahead, but it stopped renewing: dead
    // after 10 s of our clock, not a year.
    fake.modify(LEASE, |l| {
        l["spec"]["renewTime"] = json!("2027-12-03T12:00:00.000000Z")
    });
    let stopped = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(lease_holder(&fake).as_deref(), Some("behind"));
    fake.wait_for("the takeover", |_| {
        lease_holder(&fake).as_deref() == Some("node-a")
    })
    .await;
    assert!(
        stopped.elapsed() <= Duration::from_secs(13),
        "{:?}",
        stopped.elapsed()
    );
}
