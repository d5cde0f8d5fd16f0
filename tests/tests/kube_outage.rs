//! Issue 13's acceptance scenario: "an API outage (the mock errors or hangs
//! for 60 s) → 0 announcement changes, and a failover during the outage
//! still completes in ≤ 1 s", with the real `flatlan-speaker kubernetes`
//! binary on two nodes of a namespace lab, its API an HTTP-level fake
//! ([`netns_testkit::fake_api`]) in the lab's client namespace.
//!
//! Needs root (network namespaces); build the binaries first
//! (`cargo build --workspace --bins`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flatlan_l2::mac::MacAddr;
use netns_testkit::fake_api::Mode;
use netns_testkit::kube_lab::KubeLab;
use netns_testkit::speaker_fleet::arping;
use serde_json::{json, Value};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 201);
const OUTAGE: Duration = Duration::from_secs(60);
const FAILOVER_BUDGET: Duration = Duration::from_secs(1);

fn speaker_bin() -> PathBuf {
    flatlan_e2e::bin("flatlan-speaker")
}

fn node(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": KubeLab::node_name(i), "resourceVersion": "1",
                        "labels": {"kubernetes.io/hostname": KubeLab::node_name(i)}}})
}

fn fill(lab: &KubeLab) {
    let api = &lab.api;
    api.set("/api/v1/nodes", vec![node(0), node(1)]);
    flatlan_e2e::serve_lan_pool(api);
    // MetalLB is not installed: its kinds answer 404.
    api.remove("/apis/metallb.io/v1beta1/ipaddresspools");
    api.remove("/apis/metallb.io/v1beta1/l2advertisements");
    api.set(
        "/api/v1/services",
        vec![json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web", "resourceVersion": "1"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "flatlan.dev/l2",
                     "externalTrafficPolicy": "Cluster", "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": VIP.to_string()}]}}})],
    );
}

/// Waits until exactly one speaker announces the VIP; returns it.
fn wait_owner(lab: &KubeLab, timeout: Duration) -> usize {
    let end = Instant::now() + timeout;
    loop {
        if let [one] = lab.announcers(VIP.into()).as_slice() {
            return *one;
        }
        assert!(
            Instant::now() < end,
            "no single owner of {VIP} within {timeout:?}: {:?}\n{}",
            lab.announcers(VIP.into()),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The MACs that answer ARP for the VIP on the LAN (two requests).
fn responders(lab: &KubeLab) -> Vec<String> {
    arping(&lab.client, "eth0", VIP.into(), &["-c", "2", "-w", "2"])
        .unwrap_or_else(|e| panic!("arping {VIP}: {e}"))
        .macs
}

fn mac_of(lab: &KubeLab, i: usize) -> String {
    lab.nodes[i]
        .link_mac("eth0")
        .unwrap_or_else(|e| panic!("MAC of node {i}: {e}"))
        .to_ascii_lowercase()
}

/// `flatlan-speaker status --cluster` on the owner's node: the Service
/// from the API, joined with that node's speaker (issue 13, item 7).
fn assert_cluster_status(lab: &KubeLab, owner: usize) {
    let bin = speaker_bin().to_string_lossy().into_owned();
    let kc = lab.kubeconfig().to_string_lossy().into_owned();
    let out = lab.nodes[owner]
        .exec(&[&bin, "status", "--cluster", "--kubeconfig", &kc])
        .expect("run status --cluster");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "status --cluster failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("default/web "))
        .unwrap_or_else(|| panic!("no row for default/web:\n{text}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        &[
            "default/web",
            "10.77.0.201",
            "lan",
            &KubeLab::node_name(owner),
            "eth0"
        ],
        "{text}"
    );
    assert!(row.ends_with("s ago"), "last GARP: {text}");
}

/// The owner's speaker wrote a nodeAssigned Event on the Service
/// (events.k8s.io/v1), fed by its engine's status.
fn assert_node_assigned(lab: &KubeLab, owner: usize) {
    let want = format!(
        "announcing {VIP} from node {} interface eth0",
        KubeLab::node_name(owner)
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let found = lab.api.seen().into_iter().any(|s| {
            s.method == "POST"
                && s.path == "/apis/events.k8s.io/v1/namespaces/default/events"
                && serde_json::from_str::<Value>(&s.body).is_ok_and(|b| {
                    b["reason"] == "nodeAssigned"
                        && b["note"] == want.as_str()
                        && b["regarding"]["name"] == "web"
                        && b["reportingInstance"] == KubeLab::node_name(owner).as_str()
                })
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < end,
            "no nodeAssigned Event ({want}) in {:?}",
            lab.api.seen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_api_outage_changes_nothing_and_failover_still_takes_under_a_second() {
    let mut lab = KubeLab::new(&speaker_bin(), 2).expect("lab (needs root)");
    fill(&lab);
    for i in 0..2 {
        lab.start(i, "heartbeatInterval: 100ms\ndeadAfter: 3\n")
            .expect("start speaker");
    }
    let owner = wait_owner(&lab, Duration::from_secs(20));
    let owner_mac = mac_of(&lab, owner);
    assert_eq!(responders(&lab), vec![owner_mac.clone()], "{}", lab.logs());
    assert_cluster_status(&lab, owner);
    assert_node_assigned(&lab, owner);

    // The outage: every request fails for a while, then hangs for 60 s.
    let before = lab.api.seen().len();
    lab.api.set_mode(Mode::Fail);
    // What a recovering API would say is gone must not matter while it
    // cannot be listed.
    lab.api.set("/api/v1/services", vec![]);
    lab.api.expire_watches();
    let fail_until = Instant::now() + Duration::from_secs(10);
    let mut changes = 0;
    let mut check = |lab: &KubeLab| {
        if lab.announcers(VIP.into()) != vec![owner] {
            changes += 1;
        }
    };
    while Instant::now() < fail_until {
        check(&lab);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lab.api.seen().len() > before,
        "the speakers never asked the failing API"
    );
    lab.api.set_mode(Mode::Hang);
    let hang_until = Instant::now() + OUTAGE;
    let mut arpings = 0;
    while Instant::now() < hang_until {
        check(&lab);
        if arpings < 3 && hang_until - Instant::now() < OUTAGE * (3 - arpings) / 3 {
            assert_eq!(
                responders(&lab),
                vec![owner_mac.clone()],
                "during the outage\n{}",
                lab.logs()
            );
            arpings += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        changes,
        0,
        "announcements changed during the outage\n{}",
        lab.logs()
    );

    // Still in the outage: the owner dies; the other node takes over on
    // the wire within the budget.
    let old: MacAddr = owner_mac.parse().expect("a MAC");
    let cap = flatlan_e2e::garp_from_another_mac(&lab.client, VIP, old, Duration::from_secs(3));
    let killed = Instant::now();
    lab.speaker(owner).expect("owner").crash().expect("SIGKILL");
    let took = cap
        .join()
        .expect("capture thread")
        .map(|t| t.saturating_duration_since(killed));
    let Some(took) = took else {
        panic!(
            "no GARP for {VIP} from the other node within 3 s\n{}",
            lab.logs()
        );
    };
    assert!(
        took <= FAILOVER_BUDGET,
        "failover during the outage took {took:?}\n{}",
        lab.logs()
    );
    let survivor = 1 - owner;
    assert_eq!(wait_owner(&lab, Duration::from_secs(5)), survivor);
    assert_eq!(responders(&lab), vec![mac_of(&lab, survivor)]);
}
