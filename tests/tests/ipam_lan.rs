//! LAN-aware IPAM: conflict probes against real LAN hosts, sticky
//! identities, and the inspection command.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use flatlan_e2e::{assert_quarantined, settle_store, FlatLab};
use netns_testkit::probe::{arp_neighbors, ping};
use netns_testkit::{LabConfig, DEVICE_IP};

#[test]
fn an_address_held_by_a_lan_device_is_skipped_and_quarantined() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    // A printer with a static address inside node1's slice (.208/28).
    let squatted = Ipv4Addr::new(192, 168, 2, 208);
    l.lab
        .device
        .exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{squatted}/24"),
            "dev",
            "eth0",
        ])
        .expect("static address on the device");
    let device_mac = l.lab.device.link_mac("eth0").expect("device MAC");
    ping(&l.lab.router, squatted.into(), 1, Duration::from_secs(5)).expect("router learns it");
    let before = arp_neighbors(&l.lab.router, "eth0").expect("router neighbours");

    let pod = l.pod(1, "p");
    assert_ne!(
        pod.ip, squatted,
        "ADD handed out an address a LAN device holds"
    );
    assert_eq!(pod.ip, Ipv4Addr::new(192, 168, 2, 209));

    assert_quarantined(l.node_ns(1), &l.data_dir(1), squatted.into(), &device_mac);

    // The probe (sender 0.0.0.0, RFC 5227) must not disturb the device.
    let after = arp_neighbors(&l.lab.router, "eth0").expect("router neighbours");
    let entry = |n: &[netns_testkit::probe::Neighbor]| {
        n.iter()
            .find(|e| e.ip == IpAddr::from(squatted))
            .and_then(|e| e.mac.clone())
    };
    assert_eq!(entry(&before), Some(device_mac.clone()));
    assert_eq!(
        entry(&after),
        Some(device_mac),
        "the router's entry for the device changed"
    );
    ping(&l.lab.client, squatted.into(), 1, Duration::from_secs(5))
        .expect("device still reachable");
    ping(&l.lab.client, DEVICE_IP.into(), 1, Duration::from_secs(5)).expect("device primary");
    settle_store(&l.data_dir(1));
}

#[test]
fn a_pod_gets_its_address_and_mac_back_across_restarts_and_reboots() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = l.network(1);
    let node = l.node_ns(1);
    let _other = l.pod(1, "other");
    let ha = l.pod(1, "homeassistant");
    let (ip, mac) = (ha.ip, flatlan_e2e::pod_mac(&ha.result));
    net.del(node, &ha.att, Some(&ha.result)).expect("DEL");
    // Someone else starts in between; the freed address stays reserved for
    // its owner while other addresses are free.
    let _third = l.pod(1, "third");

    let again = l.pod_as(&net, 1, "ha-2", "homeassistant");
    assert_eq!(again.ip, ip, "same pod identity, same address");
    assert_eq!(flatlan_e2e::pod_mac(&again.result), mac, "and the same MAC");

    // A node reboot (new boot ID) reclaims the allocation; the identity
    // still gets its address back.
    l.set_boot_id(1, "boot-2");
    l.lab
        .switch
        .exec_ok(&["ip", "netns", "del", again.ns.name()])
        .expect("pod gone");
    let after_reboot = l.pod_as(&net, 1, "ha-3", "homeassistant");
    assert_eq!(after_reboot.ip, ip, "same address after a reboot");
    assert_eq!(flatlan_e2e::pod_mac(&after_reboot.result), mac);
    settle_store(&l.data_dir(1));
}

#[test]
fn ipam_release_refuses_a_live_pod_without_force() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let pod = l.pod(1, "live");
    let node = l.node_ns(1);
    let flatlan = flatlan_e2e::bin("flatlan").display().to_string();
    let dir = l.data_dir(1).display().to_string();
    let ip = pod.ip.to_string();
    let out = node
        .exec(&[&flatlan, "ipam", "release", &ip, "--data-dir", &dir])
        .expect("run release");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(flatlan_e2e::allocation_count(&l.data_dir(1)), 1);
    node.exec_ok(&[
        &flatlan,
        "ipam",
        "release",
        &ip,
        "--data-dir",
        &dir,
        "--force",
    ])
    .expect("forced release");
    assert_eq!(flatlan_e2e::allocation_count(&l.data_dir(1)), 0);
    settle_store(&l.data_dir(1));
}
