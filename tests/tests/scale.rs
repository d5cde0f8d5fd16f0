//! Concurrency and leak checks: many ADDs at once on one node, then many
//! ADD/DEL cycles, and nothing may be left behind.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use flatlan_e2e::{allocation_count, links, pod_ipv4, pod_veths, FlatLab};
use netns_testkit::cni::Attachment;
use netns_testkit::LabConfig;

const RANGE: &str = "192.168.2.200-192.168.2.254";

#[test]
fn fifty_concurrent_adds_get_distinct_addresses_then_500_cycles_leak_nothing() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = flatlan_e2e::network(l.state.path(), 1, &[RANGE]);
    let pods: Vec<_> = (0..50)
        .map(|i| l.lab.add_pod_netns(1, &format!("c{i}")).expect("netns"))
        .collect();
    let atts: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(i, ns)| Attachment::new(&format!("ctr-{i}"), ns))
        .collect();

    let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
        let handles: Vec<_> = atts
            .iter()
            .map(|att| s.spawn(|| net.add(node, att).map(|r| pod_ipv4(&r))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("concurrent ADD"))
            .collect()
    });
    let distinct: HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 50, "duplicate addresses: {ips:?}");
    assert_eq!(allocation_count(&l.data_dir(1)), 50);
    assert_eq!(pod_veths(node).len(), 50);

    std::thread::scope(|s| {
        for att in &atts {
            let net = &net;
            s.spawn(move || net.del(node, att, None).expect("concurrent DEL"));
        }
    });
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
    assert!(pod_veths(node).is_empty());

    // 500 cycles from 5 workers, each reusing its own pod namespace.
    std::thread::scope(|s| {
        for (w, att) in atts.iter().take(5).enumerate() {
            let net = &net;
            s.spawn(move || {
                for i in 0..100 {
                    net.add(node, att)
                        .unwrap_or_else(|e| panic!("worker {w} cycle {i} ADD: {e}"));
                    net.del(node, att, None)
                        .unwrap_or_else(|e| panic!("worker {w} cycle {i} DEL: {e}"));
                }
            });
        }
    });
    flatlan_e2e::settle_store(&l.data_dir(1));
    assert_eq!(allocation_count(&l.data_dir(1)), 0, "leaked addresses");
    let mut node_links = links(node);
    node_links.sort();
    assert_eq!(
        node_links,
        ["br0", "eth0", "lo"],
        "leaked links on the node"
    );
    for ns in pods.iter().take(5) {
        assert_eq!(links(ns), ["lo"], "leaked interface in {}", ns.name());
    }
    assert_eq!(
        flatlan_e2e::store_files(&l.data_dir(1)),
        flatlan_e2e::STORE_FILES,
        "leaked store files"
    );
}
