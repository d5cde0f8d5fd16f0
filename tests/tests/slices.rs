//! Node slices from the node agent's podCIDR files: each node allocates
//! only from its own slice, so addresses are unique cluster-wide without
//! the CNI binary ever talking to the API; exclusions always win.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use flatlan_e2e::{bin_dir, pod_ipv4, settle_store, FlatLab};
use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::flatlan::plugin_conf;
use netns_testkit::LabConfig;
use serde_json::json;

/// What k3s `--cluster-cidr=192.168.2.0/24 --node-cidr-mask-size=25` gives
/// the two nodes; the household's DHCP pool and devices sit inside them.
const SLICES: [&str; 2] = ["192.168.2.0/25", "192.168.2.128/25"];
const EXCLUDE: &[&str] = &[
    "192.168.2.100-192.168.2.199",
    "192.168.2.50",
    "192.168.2.60",
    "192.168.2.20-192.168.2.29",
];

fn excluded(ip: Ipv4Addr) -> bool {
    let o = ip.octets()[3];
    matches!(o, 0 | 1 | 11 | 12 | 50 | 60 | 255)
        || (100..=199).contains(&o)
        || (20..=29).contains(&o)
}

#[test]
fn fifty_concurrent_adds_per_node_from_podcidr_files_never_collide() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let nets: Vec<CniNetwork> = (1..=2)
        .map(|n| {
            let file = l
                .state
                .path()
                .join(format!("node{n}"))
                .join("node-range.json");
            // The node agent's output: the Node's spec.podCIDRs, verbatim.
            std::fs::write(&file, json!({"podCIDRs": [SLICES[n - 1]]}).to_string())
                .expect("range file");
            let mut conf = plugin_conf(l.state.path(), n, &[]).expect("plugin config");
            conf["ipam"].as_object_mut().expect("ipam").remove("ranges");
            conf["ipam"]["rangeFile"] = file.display().to_string().into();
            conf["ipam"]["exclude"] = json!(EXCLUDE);
            let list = json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
            CniNetwork::new(list, vec![bin_dir()]).expect("conflist")
        })
        .collect();
    let pods: Vec<(usize, Attachment, netns_testkit::Netns)> = (1..=2)
        .flat_map(|n| (0..50).map(move |i| (n, i)))
        .map(|(n, i)| {
            let ns = l.lab.add_pod_netns(n, &format!("s{i}")).expect("netns");
            (n, Attachment::new(&format!("ctr-{n}-{i}"), &ns), ns)
        })
        .collect();

    let got: Vec<(usize, Ipv4Addr)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(n, att, _)| {
                let (net, node) = (&nets[n - 1], l.node_ns(*n));
                s.spawn(move || (*n, pod_ipv4(&net.add(node, att).expect("ADD"))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });

    let all: HashSet<Ipv4Addr> = got.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(
        all.len(),
        100,
        "duplicate addresses across the cluster: {got:?}"
    );
    for (n, ip) in &got {
        assert!(!excluded(*ip), "node{n} handed out excluded {ip}");
        let slice: ipnet::Ipv4Net = SLICES[n - 1].parse().expect("slice");
        assert!(
            slice.contains(ip),
            "node{n} allocated {ip} outside its slice {slice}"
        );
    }
    for n in 1..=2 {
        settle_store(&l.data_dir(n));
    }
}
