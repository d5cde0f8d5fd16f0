//! Emulated kube-proxy: replies to DNATed traffic must come back from the
//! address the client used, even though pod-to-pod and pod-to-LAN replies
//! are bridged rather than routed. That is what br_netfilter is for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flatlan_e2e::FlatLab;
use netns_testkit::probe::{tcp_request, tcp_serve};
use netns_testkit::{LabConfig, Netns};

const T: Duration = Duration::from_secs(5);

fn iptables(ns: &Netns, rule: &str) {
    let argv: Vec<&str> = std::iter::once("iptables").chain(rule.split(' ')).collect();
    ns.exec_ok(&argv)
        .unwrap_or_else(|e| panic!("iptables {rule}: {e}"));
}

#[test]
fn clusterip_to_a_pod_on_another_node_replies_from_the_clusterip() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let client = l.pod(1, "client");
    let backend = l.pod(2, "backend");
    let server = tcp_serve(&backend.ns, SocketAddr::new(backend.ip.into(), 8080)).expect("serve");

    // kube-proxy on node1: ClusterIP 10.43.0.10:80 -> backend:8080.
    let cluster_ip = Ipv4Addr::new(10, 43, 0, 10);
    iptables(
        l.node_ns(1),
        &format!("-t nat -A PREROUTING -d {cluster_ip}/32 -p tcp --dport 80 -j DNAT --to-destination {}:8080", backend.ip),
    );

    let reply = tcp_request(
        &client.ns,
        SocketAddr::new(cluster_ip.into(), 80),
        b"hello",
        T,
    )
    .expect("the pod's connection to the ClusterIP completes");
    assert_eq!(reply.peer, SocketAddr::new(cluster_ip.into(), 80));
    assert_eq!(reply.reply, b"hello", "echo");
    // No SNAT: the backend saw the client pod's own address.
    assert_eq!(
        server.peers().first().map(SocketAddr::ip),
        Some(IpAddr::from(client.ip))
    );
}

#[test]
fn loadbalancer_ip_with_local_policy_replies_from_the_lb_ip() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let backend = l.pod(1, "web");
    let server = tcp_serve(&backend.ns, SocketAddr::new(backend.ip.into(), 8080)).expect("serve");

    // The speaker would make node1 answer ARP for the VIP; pin it instead.
    let vip = Ipv4Addr::new(192, 168, 2, 240);
    let node1_mac = l.node_ns(1).link_mac("br0").expect("br0 MAC");
    l.lab
        .client
        .exec_ok(&[
            "ip",
            "neigh",
            "replace",
            &vip.to_string(),
            "lladdr",
            &node1_mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .expect("client neighbour entry");
    // kube-proxy, externalTrafficPolicy: Local: DNAT to the local pod, no SNAT.
    iptables(
        l.node_ns(1),
        &format!(
            "-t nat -A PREROUTING -d {vip}/32 -p tcp --dport 80 -j DNAT --to-destination {}:8080",
            backend.ip
        ),
    );

    let reply = tcp_request(&l.lab.client, SocketAddr::new(vip.into(), 80), b"lb", T)
        .expect("the LAN client's connection to the LoadBalancer IP completes");
    assert_eq!(reply.peer, SocketAddr::new(vip.into(), 80));
    assert_eq!(reply.reply, b"lb");
    assert_eq!(
        server.peers().first().map(SocketAddr::ip),
        Some(IpAddr::from(netns_testkit::CLIENT_IP)),
        "ETP Local keeps the client's source address"
    );
}

#[test]
fn without_bridge_netfilter_status_is_not_ready_and_add_repairs_it() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    node.exec_ok(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])
        .expect("sysctl");
    let net = l.network_with(1, |c| c["ensureBrNetfilter"] = false.into());
    let err = net.status(node).expect_err("STATUS must report not-ready");
    let msg = err.to_string();
    assert_eq!(err.cni_code(), Some(50), "{msg}");
    assert!(msg.contains("bridge-nf-call-iptables"), "{msg}");

    // With the default (ensureBrNetfilter: true) STATUS turns the hook on.
    l.network(1)
        .status(node)
        .expect("STATUS repairs and reports ready");
    let v = node
        .exec_ok(&["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"])
        .expect("sysctl");
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "1");
}

/// The control for the ClusterIP test: with the bridge netfilter hook off
/// (and flatlan told not to fix it), the bridged reply skips conntrack and
/// the connection cannot complete. This is the failure flatlan prevents.
#[test]
fn clusterip_breaks_without_bridge_netfilter() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    for n in 1..=2 {
        l.node_ns(n)
            .exec_ok(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])
            .expect("sysctl");
    }
    let keep_off = |c: &mut serde_json::Value| c["ensureBrNetfilter"] = false.into();
    let client = l.pod_on(&l.network_with(1, keep_off), 1, "client");
    let backend = l.pod_on(&l.network_with(2, keep_off), 2, "backend");
    let _server = tcp_serve(&backend.ns, SocketAddr::new(backend.ip.into(), 8080)).expect("serve");
    let cluster_ip = Ipv4Addr::new(10, 43, 0, 10);
    iptables(
        l.node_ns(1),
        &format!("-t nat -A PREROUTING -d {cluster_ip}/32 -p tcp --dport 80 -j DNAT --to-destination {}:8080", backend.ip),
    );
    let r = tcp_request(
        &client.ns,
        SocketAddr::new(cluster_ip.into(), 80),
        b"x",
        Duration::from_secs(2),
    );
    assert!(
        r.is_err(),
        "expected the asymmetric reply to break the connection, got {r:?}"
    );
    // The same request works once the hook is on: the failure above came
    // from the asymmetric reply, not from a broken server, rule or pod.
    for n in 1..=2 {
        l.node_ns(n)
            .exec_ok(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"])
            .expect("sysctl");
    }
    let reply = tcp_request(&client.ns, SocketAddr::new(cluster_ip.into(), 80), b"x", T)
        .expect("with bridge-nf on, the same ClusterIP request completes");
    assert_eq!(reply.reply, b"x");
}

/// A pod reaching its own Service (Home Assistant calling itself): the
/// DNATed SYN must leave by the bridge port it came in on, which needs
/// hairpin mode on the host veth. kube-proxy masquerades this hairpin
/// traffic (KUBE-MARK-MASQ for a source that is the endpoint); so does
/// this emulation.
#[test]
fn a_pod_reaches_its_own_service() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let web = l.pod(1, "web");
    let server = tcp_serve(&web.ns, SocketAddr::new(web.ip.into(), 8080)).expect("serve");
    let cluster_ip = Ipv4Addr::new(10, 43, 0, 20);
    iptables(
        l.node_ns(1),
        &format!("-t nat -A PREROUTING -d {cluster_ip}/32 -p tcp --dport 80 -j DNAT --to-destination {}:8080", web.ip),
    );
    iptables(
        l.node_ns(1),
        &format!(
            "-t nat -A POSTROUTING -s {0}/32 -d {0}/32 -p tcp --dport 8080 -j MASQUERADE",
            web.ip
        ),
    );
    let veth = web.result["interfaces"][0]["name"]
        .as_str()
        .expect("host veth");
    let hairpin = l
        .node_ns(1)
        .exec_ok(&["cat", &format!("/sys/class/net/{veth}/brport/hairpin_mode")])
        .expect("hairpin_mode");
    assert_eq!(String::from_utf8_lossy(&hairpin.stdout).trim(), "1");
    let reply = tcp_request(&web.ns, SocketAddr::new(cluster_ip.into(), 80), b"me", T)
        .expect("the pod's connection to its own Service completes");
    assert_eq!(reply.peer, SocketAddr::new(cluster_ip.into(), 80));
    assert_eq!(reply.reply, b"me");
    assert_eq!(
        server.peers().first().map(SocketAddr::ip),
        Some(IpAddr::from(l.lab.nodes[0].ip)),
        "the hairpin connection arrives masqueraded to the node"
    );
}

/// With Service CIDRs configured, ADD turns on IPv4 forwarding in the node
/// (kube-proxy's DNAT to a pod on another node is routed); with
/// `ensureForwarding: false`, STATUS says what is wrong instead.
#[test]
fn add_turns_forwarding_on_and_status_reports_it_off() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let node = l.node_ns(1);
    let forwarding = || {
        let out = node
            .exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .expect("sysctl");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .expect("sysctl");
    let off = l.network_with(1, |c| c["ensureForwarding"] = false.into());
    let err = off.status(node).expect_err("STATUS must report not-ready");
    assert_eq!(err.cni_code(), Some(50), "{err}");
    assert!(err.to_string().contains("ip_forward"), "{err}");
    assert_eq!(forwarding(), "0", "ensureForwarding: false changes nothing");

    let client = l.pod(1, "client");
    assert_eq!(forwarding(), "1", "ADD turned forwarding on");
    let backend = l.pod(2, "backend");
    let _server = tcp_serve(&backend.ns, SocketAddr::new(backend.ip.into(), 8080)).expect("serve");
    let cluster_ip = Ipv4Addr::new(10, 43, 0, 10);
    iptables(
        node,
        &format!("-t nat -A PREROUTING -d {cluster_ip}/32 -p tcp --dport 80 -j DNAT --to-destination {}:8080", backend.ip),
    );
    let reply = tcp_request(&client.ns, SocketAddr::new(cluster_ip.into(), 80), b"fw", T)
        .expect("the pod reaches the ClusterIP");
    assert_eq!(reply.reply, b"fw");

    // STATUS repairs it like ADD does.
    node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        .expect("sysctl");
    l.network(1)
        .status(node)
        .expect("STATUS repairs forwarding");
    assert_eq!(forwarding(), "1");
}

/// An IPv6 Service CIDR needs IPv6 forwarding in the node too; only the
/// families of the Service CIDRs are touched.
#[test]
fn an_ipv6_service_cidr_turns_ipv6_forwarding_on() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let read = |key: &str| {
        let out = node.exec_ok(&["sysctl", "-n", key]).expect("sysctl");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"])
        .expect("sysctl");
    // IPv4 Service CIDRs only: IPv6 forwarding stays as it was.
    l.pod(1, "v4only");
    assert_eq!(read("net.ipv6.conf.all.forwarding"), "0");

    let mut conf = flatlan_e2e::plugin_conf_dual(l.state.path(), 1).expect("plugin config");
    conf["serviceCIDRs"] = serde_json::json!([flatlan_e2e::SERVICE_CIDR, "fd00:43::/112"]);
    let list = serde_json::json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
    let net =
        netns_testkit::cni::CniNetwork::new(list, vec![flatlan_e2e::bin_dir()]).expect("conflist");
    let pod = l.pod_on(&net, 1, "dual");
    assert_eq!(read("net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(read("net.ipv4.ip_forward"), "1");
    let routes = pod
        .ns
        .exec_ok(&["ip", "-6", "route", "show", "fd00:43::/112"])
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("via {}", l.lab.nodes[0].ip6)),
        "the IPv6 Service CIDR goes via the node: {routes}"
    );
}
