//! GC is scoped to the network it is run for (CNI 1.1, issue 10 items 13
//! and 14): CRI-O runs it once per network, and Multus or two conflists
//! put several flatlan networks on one bridge.

use flatlan_e2e::{allocation_count, bin_dir, plugin_conf, pod_veths, run_raw, FlatLab};
use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::LabConfig;
use serde_json::json;

/// Network `name` on node1's br0, allocating only from `range`. A
/// secondary network (`primary: false`) has no default or Service route,
/// as a Multus attachment beside the pod's primary interface.
fn net(l: &FlatLab, name: &str, range: &str, primary: bool) -> CniNetwork {
    let mut conf = plugin_conf(l.state.path(), 1, &[range]).expect("plugin config");
    if !primary {
        conf.as_object_mut().map(|c| c.remove("serviceCIDRs"));
        conf["ipam"].as_object_mut().map(|i| i.remove("gateway"));
    }
    let list = json!({"cniVersion": "1.1.0", "name": name, "plugins": [conf]});
    CniNetwork::new(list, vec![bin_dir()]).expect("conflist")
}

#[test]
fn gc_of_one_network_leaves_another_networks_pods_on_the_same_bridge() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let a = net(&l, "lan-a", "192.168.2.208-192.168.2.215", true);
    let b = net(&l, "lan-b", "192.168.2.216-192.168.2.223", false);
    let ns = l.lab.add_pod_netns(1, "c1").expect("netns");
    let eth0 = Attachment::new("c1", &ns);
    let mut net1 = Attachment::new("c1", &ns);
    net1.ifname = "net1".into();
    let ra = a.add(node, &eth0).expect("ADD c1/eth0 on lan-a");
    let rb = b.add(node, &net1).expect("ADD c1/net1 on lan-b");
    // A pod of lan-a that the runtime has forgotten, so GC has real work.
    let gone_ns = l.lab.add_pod_netns(1, "gone").expect("netns");
    let gone = Attachment::new("gone", &gone_ns);
    a.add(node, &gone).expect("ADD gone on lan-a");
    assert_eq!(pod_veths(node).len(), 3);

    a.gc(node, std::slice::from_ref(&eth0)).expect("GC lan-a");

    assert_eq!(
        pod_veths(node).len(),
        2,
        "GC of lan-a must remove exactly its forgotten pod's veth"
    );
    b.check(node, &net1, &rb)
        .expect("lan-b's c1/net1 is intact after GC of lan-a");
    a.check(node, &eth0, &ra)
        .expect("lan-a's c1/eth0 is intact");
    let b_store = flatlan_ipam::Store::new(&l.data_dir(1), "lan-b")
        .and_then(|s| s.peek())
        .expect("lan-b store");
    assert_eq!(b_store.allocations().len(), 1, "lan-b's address survives");
}

/// libcni (CRI-O's ocicni) sends `null` for a network with no attachments.
#[test]
fn gc_with_null_valid_attachments_is_an_empty_list() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let _orphan = l.pod(1, "orphan");
    assert_eq!(allocation_count(&l.data_dir(1)), 1);
    let mut conf = l.network(1).plugin_config(0, None).expect("conf");
    conf["cni.dev/valid-attachments"] = serde_json::Value::Null;
    let run = run_raw(
        node,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")],
        conf.to_string().as_bytes(),
    );
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
    assert!(pod_veths(node).is_empty());
}
