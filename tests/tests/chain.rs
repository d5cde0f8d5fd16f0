//! flatlan as the first plugin of a conflist, followed by Debian's
//! reference `portmap`, `tuning` or `sbr`: prevResult chaining, CHECK
//! against what the chain changed, and DEL in reverse order.

use std::net::SocketAddr;
use std::time::Duration;

use flatlan_e2e::{bin_dir, plugin_conf, pod_ipv4, reference_plugins, FlatLab};
use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::probe::{tcp_request, tcp_serve};
use netns_testkit::LabConfig;
use serde_json::json;

#[test]
fn portmap_after_flatlan_works_for_add_and_del() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    // Debian's plugins speak up to CNI 1.0.0, so the list uses that.
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lan",
        "plugins": [
            plugin_conf(l.state.path(), 1, &[]).expect("plugin config"),
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    let mut net = CniNetwork::new(list, vec![bin_dir(), reference_plugins()]).expect("conflist");
    net.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let ns = l.lab.add_pod_netns(1, "pm").expect("netns");
    let att = Attachment::new("ctr-pm", &ns);
    let result = net
        .add(l.node_ns(1), &att)
        .expect("ADD through flatlan then portmap");
    let pod_ip = pod_ipv4(&result);
    assert_eq!(result["cniVersion"], "1.0.0");

    let _server = tcp_serve(&ns, SocketAddr::new(pod_ip.into(), 80)).expect("serve");
    let node_ip = l.lab.nodes[0].ip;
    let reply = tcp_request(
        &l.lab.client,
        SocketAddr::new(node_ip.into(), 18080),
        b"hostport",
        Duration::from_secs(5),
    )
    .expect("LAN client reaches the pod through portmap's hostPort");
    assert_eq!(reply.reply, b"hostport");

    // Debian's portmap 1.1.1 fails its own CHECK on an IPv4-only pod (it
    // looks for an IPv6 DNAT chain it never created), so CHECK flatlan alone,
    // with the chain's final result as prevResult, as libcni would.
    flatlan_e2e::network(l.state.path(), 1, &[])
        .check(l.node_ns(1), &att, &result)
        .expect("CHECK of flatlan with the chained result");
    net.del(l.node_ns(1), &att, Some(&result))
        .expect("DEL in reverse order");
    let rules = l
        .node_ns(1)
        .exec_ok(&["iptables-save", "-t", "nat"])
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains("18080"),
        "portmap left its rule behind:\n{rules}"
    );
    assert!(flatlan_e2e::pod_veths(l.node_ns(1)).is_empty());
    assert_eq!(flatlan_e2e::allocation_count(&l.data_dir(1)), 0);
}

/// flatlan then `other` (a Debian reference plugin config), ADD, CHECK of
/// the whole chain with its final result as prevResult, and DEL.
fn chained_check(other: serde_json::Value) -> (FlatLab, serde_json::Value) {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "lan",
        "plugins": [
            plugin_conf(l.state.path(), 1, &[]).expect("plugin config"),
            other,
        ],
    });
    let net = CniNetwork::new(list, vec![bin_dir(), reference_plugins()]).expect("conflist");
    let ns = l.lab.add_pod_netns(1, "chk").expect("netns");
    let att = Attachment::new("ctr-chk", &ns);
    let result = net.add(l.node_ns(1), &att).expect("ADD through the chain");
    net.check(l.node_ns(1), &att, &result)
        .expect("CHECK of the chain against its own result");
    net.del(l.node_ns(1), &att, Some(&result)).expect("DEL");
    assert!(flatlan_e2e::pod_veths(l.node_ns(1)).is_empty());
    assert_eq!(flatlan_e2e::allocation_count(&l.data_dir(1)), 0);
    (l, result)
}

/// `tuning` sets its own MAC and reports it in the result; CHECK must
/// expect that MAC, not flatlan's derived one (issue 10 item 15).
#[test]
fn check_passes_with_tuning_changing_the_mac() {
    let (_l, result) = chained_check(json!({"type": "tuning", "mac": "02:11:22:33:44:55"}));
    assert_eq!(flatlan_e2e::pod_mac(&result), "02:11:22:33:44:55");
}

/// `sbr` moves the pod's routes into a per-interface table.
#[test]
fn check_passes_with_sbr_moving_the_routes() {
    chained_check(json!({"type": "sbr"}));
}
