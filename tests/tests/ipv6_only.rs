//! IPv6-only pods on two nodes whose slices differ only above the low 32
//! bits (issue 10, item 17): their MACs were both `0a:58:` + the same low
//! 32 bits, so the second pod's link-local address failed DAD and pings
//! were lost. Each now has its own MAC, and both are reachable.

use std::time::{Duration, Instant};

use flatlan_e2e::{bin_dir, plugin_conf_dual, pod_ipv6, pod_mac, settle_store, FlatLab};
use netns_testkit::cni::CniNetwork;
use netns_testkit::probe::ping;
use netns_testkit::{LabConfig, Netns};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

/// An IPv6-only network for `node`, with `slice` as its range.
fn ipv6_only(l: &FlatLab, node: usize, slice: &str) -> CniNetwork {
    let mut conf = plugin_conf_dual(l.state.path(), node).expect("plugin config");
    let v6 = conf["ipam"]["subnets"][1].clone();
    conf["ipam"]["subnets"] = json!([v6]);
    conf["ipam"]["subnets"][0]["ranges"] = json!([slice]);
    // The lab's IPv4 Service CIDR has no route on an IPv6-only network.
    conf["serviceCIDRs"] = json!([]);
    let list = json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
    CniNetwork::new(list, vec![bin_dir()]).expect("conflist")
}

/// The flags of the pod's link-local address once DAD is over (or `None`
/// if it stays tentative past `WAIT`).
fn link_local_after_dad(pod: &Netns) -> Option<Value> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let out = pod
            .exec_ok(&[
                "ip", "-j", "-6", "addr", "show", "dev", "eth0", "scope", "link",
            ])
            .expect("ip addr");
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        let rec = v[0]["addr_info"][0].clone();
        if rec.get("tentative").is_none() && !rec.is_null() {
            return Some(rec);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn ipv6_only_pods_of_two_nodes_get_their_own_macs() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    // Equal in the low 32 bits, different above them.
    let nets = [
        ipv6_only(&l, 1, "fd00:2::1:0:0:0/112"),
        ipv6_only(&l, 2, "fd00:2::2:0:0:0/112"),
    ];
    let pods: Vec<_> = (1..=2)
        .map(|n| {
            let ns = l.lab.add_pod_netns(n, &format!("v6-{n}")).expect("netns");
            let att = netns_testkit::cni::Attachment::new(&format!("ctr-v6-{n}"), &ns);
            let result = nets[n - 1]
                .add(l.node_ns(n), &att)
                .unwrap_or_else(|e| panic!("ADD on node{n}: {e}"));
            (ns, result)
        })
        .collect();
    let (ip1, ip2) = (pod_ipv6(&pods[0].1), pod_ipv6(&pods[1].1));
    assert_eq!(
        ip1.octets()[12..],
        ip2.octets()[12..],
        "the case as found: {ip1} and {ip2} share their low 32 bits"
    );
    let (mac1, mac2) = (pod_mac(&pods[0].1), pod_mac(&pods[1].1));
    assert_ne!(mac1, mac2, "{ip1} and {ip2}");
    for (mac, (ns, _)) in [&mac1, &mac2].into_iter().zip(&pods) {
        assert!(mac.starts_with("06:"), "the IPv6-only form: {mac}");
        let rec = link_local_after_dad(ns).expect("link-local DAD finished");
        assert!(rec.get("dadfailed").is_none(), "{mac}: {rec}");
    }
    for ip in [ip1, ip2] {
        ping(&l.lab.client, ip.into(), 3, WAIT).unwrap_or_else(|e| panic!("ping {ip}: {e}"));
    }
    settle_store(&l.data_dir(1));
    settle_store(&l.data_dir(2));
}
