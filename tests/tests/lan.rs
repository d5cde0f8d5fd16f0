//! Pods are hosts on the LAN: they reach the LAN, their node, pods on other
//! nodes and the internet, and discovery traffic flows both ways.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use flatlan_e2e::FlatLab;
use netns_testkit::avahi::{start_avahi, wait_avahi_ready, MdnsService};
use netns_testkit::probe::{mdns_query, ping, tcp_echo, udp_broadcast};
use netns_testkit::{LabConfig, CLIENT_IP, DEVICE_IP, INTERNET_IP, LAN_BROADCAST};

const T: Duration = Duration::from_secs(5);

#[test]
fn pods_reach_lan_node_other_nodes_and_internet() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let a = l.pod(1, "a");
    let b = l.pod(1, "b");
    let c = l.pod(2, "c");
    assert_ne!(a.ip, b.ip);
    assert!(
        a.ip.octets()[3] >= 208 && a.ip.octets()[3] < 224,
        "node1 slice: {}",
        a.ip
    );
    assert!(
        c.ip.octets()[3] >= 224 && c.ip.octets()[3] < 240,
        "node2 slice: {}",
        c.ip
    );

    let node1 = l.lab.nodes[0].ip;
    for (what, to) in [
        ("LAN client", IpAddr::from(CLIENT_IP)),
        ("own node", node1.into()),
        ("pod on the same node", b.ip.into()),
        ("pod on the other node", c.ip.into()),
        ("internet host behind the router", INTERNET_IP.into()),
    ] {
        ping(&a.ns, to, 1, T).unwrap_or_else(|e| panic!("pod a -> {what} ({to}): {e}"));
    }
    // And back: LAN hosts and nodes reach the pod directly, no NAT.
    ping(&l.lab.client, a.ip.into(), 1, T).expect("LAN client -> pod");
    ping(l.node_ns(2), a.ip.into(), 1, T).expect("node2 -> pod on node1");

    // TCP across nodes sees the real pod address on both ends (no NAT).
    let echo = tcp_echo(&c.ns, c.ip.into(), 8080, &a.ns, c.ip.into()).expect("tcp a -> c");
    assert_eq!(echo.client_seen_by_server.ip(), IpAddr::from(a.ip));
    assert_eq!(echo.peer_seen_by_client, SocketAddr::new(c.ip.into(), 8080));
}

#[test]
fn broadcast_from_a_pod_reaches_the_lan() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let pod = l.pod(1, "bc");
    let from = udp_broadcast(
        &pod.ns,
        SocketAddrV4::new(LAN_BROADCAST, 9999),
        &l.lab.client,
    )
    .expect("broadcast from pod reaches the LAN client");
    assert_eq!(from.ip(), IpAddr::from(pod.ip));
    // The reverse: a LAN device's broadcast reaches the pod.
    let from = udp_broadcast(
        &l.lab.device,
        SocketAddrV4::new(LAN_BROADCAST, 9998),
        &pod.ns,
    )
    .expect("broadcast from the LAN reaches the pod");
    assert_eq!(from.ip(), IpAddr::from(DEVICE_IP));
}

#[test]
fn mdns_discovery_works_both_ways_with_avahi() {
    let l = FlatLab::new(LabConfig::new().nodes(1).with_avahi_device(true));
    let pod = l.pod(1, "ha");

    // A pod (think Home Assistant) discovers the LAN device's service.
    let device_service = netns_testkit::device_service();
    let found = mdns_query(
        &pod.ns,
        pod.ip,
        &format!("{}.local", device_service.stype),
        Duration::from_secs(10),
    )
    .expect("mDNS query from the pod");
    let hit = found
        .iter()
        .find(|a| a.instance.starts_with(&device_service.name))
        .unwrap_or_else(|| panic!("pod did not discover {}: {found:?}", device_service.name));
    assert!(hit.addrs.contains(&IpAddr::from(DEVICE_IP)), "{hit:?}");

    // The LAN client discovers a service published by avahi inside the pod.
    let svc = MdnsService::new("flatlan pod web", "_flatlan-pod._tcp", 8080);
    let mut avahi =
        start_avahi(&pod.ns, "flatlan-pod", std::slice::from_ref(&svc)).expect("avahi in the pod");
    wait_avahi_ready(
        &mut avahi,
        std::slice::from_ref(&svc),
        Duration::from_secs(10),
    )
    .expect("pod avahi ready");
    let found = mdns_query(
        &l.lab.client,
        CLIENT_IP,
        &format!("{}.local", svc.stype),
        Duration::from_secs(10),
    )
    .expect("mDNS query from the client");
    let hit = found
        .iter()
        .find(|a| a.instance.starts_with(&svc.name))
        .unwrap_or_else(|| panic!("client did not discover the pod's service: {found:?}"));
    assert_eq!(hit.port, Some(8080));
    assert!(hit.addrs.contains(&IpAddr::from(pod.ip)), "{hit:?}");
}
