//! Issue 13's conflict Event with the real binary: a LAN host already
//! holds a Service's address, so the speaker that would announce it finds
//! it with its probe, does not announce, and writes an `AddressConflict`
//! Warning Event on the Service naming the host's MAC and the pool.
//!
//! Needs root (network namespaces); build the binaries first
//! (`cargo build --workspace --bins`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_testkit::kube_lab::KubeLab;
use serde_json::{json, Value};

const VIP: &str = "10.77.0.205";

fn speaker_bin() -> PathBuf {
    flatlan_e2e::bin("flatlan-speaker")
}

#[test]
fn a_lan_host_holding_the_vip_gets_a_conflict_event() {
    let mut lab = KubeLab::new(&speaker_bin(), 1).expect("lab (needs root)");
    // The client (a LAN host) already uses the address.
    lab.client
        .exec_ok(&["ip", "addr", "add", &format!("{VIP}/24"), "dev", "eth0"])
        .expect("address on the client");
    let host_mac = lab
        .client
        .link_mac("eth0")
        .expect("client MAC")
        .to_ascii_lowercase();
    let api = &lab.api;
    api.set(
        "/api/v1/nodes",
        vec![json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": KubeLab::node_name(0), "resourceVersion": "1"}})],
    );
    flatlan_e2e::serve_lan_pool(api);
    api.set(
        "/api/v1/services",
        vec![json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "uid": "uid-web", "resourceVersion": "1"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "flatlan.dev/l2"},
            "status": {"loadBalancer": {"ingress": [{"ip": VIP}]}}})],
    );
    lab.start(0, "heartbeatInterval: 100ms\ndeadAfter: 3\n")
        .expect("start speaker");
    let want = format!(
        "node node-0 does not announce {VIP}: the LAN host with MAC {host_mac} answered its \
         probe for it. Free the address on that host, or remove {VIP} from pool lan so that \
         the Service gets another"
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Value> = lab
            .api
            .seen()
            .into_iter()
            .filter(|s| {
                s.method == "POST" && s.path == "/apis/events.k8s.io/v1/namespaces/shop/events"
            })
            .filter_map(|s| serde_json::from_str(&s.body).ok())
            .collect();
        if let Some(ev) = events.iter().find(|e| e["reason"] == "AddressConflict") {
            assert_eq!(ev["type"], "Warning");
            assert_eq!(ev["note"], want.as_str());
            assert_eq!(ev["regarding"]["name"], "web");
            assert!(
                !events.iter().any(|e| e["reason"] == "nodeAssigned"),
                "announced a VIP a LAN host holds: {events:?}"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "no AddressConflict Event: {events:?}\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lab.announcers(VIP.parse().expect("an IP")).is_empty());
}
