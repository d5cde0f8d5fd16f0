//! Issue 10, finding 1, exactly as found: release an address, let a LAN
//! host take it, then ADD again, by request (`IP=`) and by ordinary
//! allocation. flatlan used to hand the address out unprobed (a 600 s
//! "verified" verdict, which DEL granted) and arping then got two MACs.
//! Now the address is never handed out, and it is quarantined.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use flatlan_e2e::{
    allocation_count, assert_quarantined, error_code, ipam_ls, plugin_conf, plugin_conf_dual,
    settle_store, FlatLab,
};
use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::probe::ping;
use netns_testkit::{LabConfig, Netns, ProcHandle, GATEWAY};
use serde_json::json;

/// flatlan's "address unavailable" code (cni-plugin/src/error.rs).
const ADDRESS_UNAVAILABLE: u32 = 105;

/// Whether the LAN host announces the address once it has it.
#[derive(Clone, Copy)]
enum Taking {
    /// Gratuitous ARP, as a host bringing an address up often does.
    Announced,
    /// Nothing at all until someone asks (`ip addr add` alone sends no
    /// frame): only a probe can find it.
    Silent,
}

/// The lab's LAN device configures `ip` as a second address on its NIC.
fn device_takes(l: &FlatLab, ip: Ipv4Addr, how: Taking) -> String {
    let dev = &l.lab.device;
    dev.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])
        .expect("the device takes the address");
    if let Taking::Announced = how {
        dev.exec_ok(&["arping", "-U", "-c", "2", "-I", "eth0", &ip.to_string()])
            .expect("gratuitous ARP from the device");
    }
    dev.link_mac("eth0").expect("device MAC")
}

/// Every MAC that answers an ARP request for `ip`, asked from the LAN
/// client: exactly one, or the LAN has a duplicate address.
fn macs_answering(from: &Netns, ip: Ipv4Addr) -> BTreeSet<String> {
    // arping exits 1 when nothing answered; the empty set says so.
    let out = from
        .exec(&[
            "arping",
            "-c",
            "3",
            "-w",
            "3",
            "-I",
            "eth0",
            &ip.to_string(),
        ])
        .expect("run arping");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_lowercase()))
        .collect()
}

fn assert_only(l: &FlatLab, ip: Ipv4Addr, mac: &str) {
    let macs = macs_answering(&l.lab.client, ip);
    assert_eq!(
        macs,
        BTreeSet::from([mac.to_lowercase()]),
        "{ip} must be answered by the LAN host alone"
    );
}

/// An attachment for pod `name`, optionally asking for `ip` with `IP=`.
fn attachment(l: &FlatLab, label: &str, name: &str, ip: Option<Ipv4Addr>) -> (Netns, Attachment) {
    let ns = l.lab.add_pod_netns(1, label).expect("pod netns");
    let mut att = Attachment::new(&format!("ctr-{label}"), &ns);
    att.args = vec![
        ("K8S_POD_NAMESPACE".into(), "default".into()),
        ("K8S_POD_NAME".into(), name.into()),
    ];
    att.args
        .extend(ip.map(|ip| ("IP".to_string(), ip.to_string())));
    (ns, att)
}

/// A pod that is added and deleted again, leaving its address free.
fn add_and_release(l: &FlatLab, net: &CniNetwork, name: &str) -> Ipv4Addr {
    let pod = l.pod_on(net, 1, name);
    net.del(l.node_ns(1), &pod.att, Some(&pod.result))
        .expect("DEL");
    settle_store(&l.data_dir(1));
    pod.ip
}

fn refused_by_request(l: &FlatLab, net: &CniNetwork, ip: Ipv4Addr, mac: &str) {
    let (_ns, att) = attachment(l, "asks", "asks", Some(ip));
    let e = net
        .add(l.node_ns(1), &att)
        .expect_err("ADD with IP= got an address a LAN host holds");
    assert_eq!(error_code(&e), Some(ADDRESS_UNAVAILABLE), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&ip.to_string()) && msg.contains(mac),
        "the error names the address and the host's MAC: {msg}"
    );
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
    assert_quarantined(l.node_ns(1), &l.data_dir(1), ip.into(), mac);
    let rows = rows_for(l.node_ns(1), &l.data_dir(1), ip);
    assert_eq!(
        rows.len(),
        1,
        "quarantined, and not also remembered: {rows:?}"
    );
}

#[test]
fn a_requested_address_a_lan_host_took_after_release_is_refused_and_quarantined() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = l.network(1);
    let ip = add_and_release(&l, &net, "web");
    let mac = device_takes(&l, ip, Taking::Announced);
    refused_by_request(&l, &net, ip, &mac);
    assert_only(&l, ip, &mac);
    settle_store(&l.data_dir(1));
}

#[test]
fn allocation_never_hands_out_an_address_a_lan_host_took_after_release() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    // Three addresses, so that round-robin comes back to the released one.
    let net = l.network_with(1, |c| {
        c["ipam"]["ranges"] = json!(["192.168.2.208-192.168.2.210"]);
    });
    let node = l.node_ns(1);
    let a = l.pod_on(&net, 1, "a");
    let b = l.pod_on(&net, 1, "b");
    let c = l.pod_on(&net, 1, "c");
    for p in [&a, &c] {
        net.del(node, &p.att, Some(&p.result)).expect("DEL");
    }
    settle_store(&l.data_dir(1));
    let mac = device_takes(&l, a.ip, Taking::Announced);

    // The cursor is at .210, so the next candidate is .208 again.
    let d = l.pod_on(&net, 1, "d");
    assert_ne!(d.ip, a.ip, "ADD handed out an address a LAN host holds");
    assert_eq!(d.ip, c.ip, "the other free address");
    assert_quarantined(node, &l.data_dir(1), a.ip.into(), &mac);
    assert_only(&l, a.ip, &mac);
    // The pool is now full, and the quarantined address stays out of it.
    let (_ns, att) = attachment(&l, "e", "e", None);
    let e = net.add(node, &att).expect_err("no address is left");
    assert_eq!(error_code(&e), Some(101), "{e}");
    assert_only(&l, a.ip, &mac);
    drop(b);
    settle_store(&l.data_dir(1));
}

#[test]
fn a_pod_coming_back_to_its_address_is_probed_like_a_request() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = l.network(1);
    let ip = add_and_release(&l, &net, "homeassistant");
    let mac = device_takes(&l, ip, Taking::Announced);
    // The same pod identity returns: its remembered address is gone to the
    // LAN host, so it gets another one, and the MAC follows that address.
    let back = l.pod_as(&net, 1, "ha-2", "homeassistant");
    assert_ne!(back.ip, ip, "the sticky address went to a LAN host");
    assert_quarantined(l.node_ns(1), &l.data_dir(1), ip.into(), &mac);
    assert_only(&l, ip, &mac);
    settle_store(&l.data_dir(1));
}

#[test]
fn a_silent_lan_host_is_found_by_the_probe() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = l.network_with(1, |c| {
        c["ipam"]["ranges"] = json!(["192.168.2.208-192.168.2.209"]);
    });
    let node = l.node_ns(1);
    let a = l.pod_on(&net, 1, "a");
    let b = l.pod_on(&net, 1, "b");
    for p in [&a, &b] {
        net.del(node, &p.att, Some(&p.result)).expect("DEL");
    }
    settle_store(&l.data_dir(1));
    let mac = device_takes(&l, a.ip, Taking::Silent);

    refused_by_request(&l, &net, a.ip, &mac);
    // By allocation too: the quarantine keeps it out without a new probe,
    // and a store without the quarantine (operator released it) probes.
    let c = l.pod_on(&net, 1, "c");
    assert_eq!(c.ip, b.ip);
    let flatlan = flatlan_e2e::bin("flatlan").display().to_string();
    let dir = l.data_dir(1).display().to_string();
    node.exec_ok(&[
        &flatlan,
        "ipam",
        "release",
        &a.ip.to_string(),
        "--data-dir",
        &dir,
    ])
    .expect("release the quarantine");
    net.del(node, &c.att, Some(&c.result)).expect("DEL");
    settle_store(&l.data_dir(1));
    let d = l.pod_on(&net, 1, "d");
    assert_eq!(d.ip, b.ip, "the silent host's address was handed out");
    assert_quarantined(node, &l.data_dir(1), a.ip.into(), &mac);
    assert_only(&l, a.ip, &mac);
    settle_store(&l.data_dir(1));
}

/// `flatlan ipam watch` on node1 for the network with plugin config `conf`.
fn start_watcher(l: &FlatLab, conf: serde_json::Value) -> ProcHandle {
    let conflist = l.state.path().join("10-flatlan.conflist");
    let list = json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
    std::fs::write(&conflist, list.to_string()).expect("write the conflist");
    let flatlan = flatlan_e2e::bin("flatlan").display().to_string();
    let conf = conflist.display().to_string();
    let mut watcher = l
        .node_ns(1)
        .spawn(&[&flatlan, "ipam", "watch", "--conf", &conf])
        .expect("start the watcher");
    watcher
        .wait_for_log("watching for foreign use", Duration::from_secs(10))
        .expect("the watcher is up");
    watcher
}

/// `flatlan ipam ls` rows for `ip`.
fn rows_for(node: &Netns, data_dir: &Path, ip: impl Into<IpAddr>) -> Vec<serde_json::Value> {
    let ip = ip.into();
    // `ipam ls` refuses a data directory that does not exist yet: nothing
    // has been written, so nothing is listed.
    if !data_dir.exists() {
        return Vec::new();
    }
    ipam_ls(node, data_dir)
        .into_iter()
        .filter(|r| r["ip"] == ip.to_string())
        .collect()
}

/// Polls `ipam ls` until `ip` is quarantined; panics after `within`.
fn wait_quarantined(node: &Netns, data_dir: &Path, ip: impl Into<IpAddr>, within: Duration) {
    let ip = ip.into();
    let deadline = Instant::now() + within;
    loop {
        let rows = rows_for(node, data_dir, ip);
        if rows
            .iter()
            .any(|r| r["state"].as_str().unwrap_or("").starts_with("quarantined"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ip} not quarantined within {within:?}: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_watcher_quarantines_an_address_a_lan_host_starts_using_with_no_add() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let dir = l.data_dir(1);
    let conf = plugin_conf(l.state.path(), 1, &[]).expect("plugin config");
    let mut watcher = start_watcher(&l, conf);

    // Our own pod talking on the LAN is not foreign.
    let web = l.pod(1, "web");
    ping(&web.ns, GATEWAY.into(), 1, Duration::from_secs(5)).expect("the pod reaches the router");
    settle_store(&dir);
    // Probe-ahead has just verified the next candidates (.209 on), so only
    // the watcher stands between them and a LAN host that takes one now.
    let announced = Ipv4Addr::new(192, 168, 2, 211);
    let mac = device_takes(&l, announced, Taking::Announced);
    // A DHCP client's RFC 5227 probe (sender 0.0.0.0) for another one.
    let probed = Ipv4Addr::new(192, 168, 2, 212);
    l.lab
        .client
        .exec(&[
            "arping",
            "-D",
            "-c",
            "1",
            "-w",
            "1",
            "-I",
            "eth0",
            &probed.to_string(),
        ])
        .expect("run arping -D");
    let client_mac = l.lab.client.link_mac("eth0").expect("client MAC");
    wait_quarantined(node, &dir, announced, Duration::from_secs(5));
    wait_quarantined(node, &dir, probed, Duration::from_secs(5));
    assert_quarantined(node, &dir, announced.into(), &mac);
    assert_quarantined(node, &dir, probed.into(), &client_mac);
    let web_rows = rows_for(node, &dir, web.ip);
    assert_eq!(web_rows.len(), 1, "our pod's row in ipam ls: {web_rows:?}");
    assert!(
        web_rows.iter().all(|r| r["state"] == "allocated"),
        "our own pod's address was taken for foreign use: {web_rows:?}"
    );

    // Ordinary allocation now walks past both.
    let pods: Vec<_> = (0..4).map(|i| l.pod(1, &format!("p{i}"))).collect();
    let got: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(
        got,
        [209, 210, 213, 214].map(|h| Ipv4Addr::new(192, 168, 2, h)),
        "quarantined addresses must be skipped"
    );
    assert_only(&l, announced, &mac);
    assert!(watcher.is_running(), "the watcher died: {}", watcher.log());
    settle_store(&dir);
}

#[test]
fn the_watcher_sees_a_lan_host_take_a_pool_ipv6_address_by_dad_or_by_using_it() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let dir = l.data_dir(1);
    let mut watcher = start_watcher(&l, plugin_conf_dual(l.state.path(), 1).expect("config"));
    // A SLAAC or static host picks an address in node1's IPv6 slice
    // (fd00:2::1:0/112); the kernel's DAD solicitation (from ::) gives it
    // away before the host ever uses it.
    let taken = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 1, 5);
    let dev = &l.lab.device;
    dev.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{taken}/64"),
        "dev",
        "eth0",
    ])
    .expect("the device takes the address, with DAD");
    wait_quarantined(node, &dir, taken, Duration::from_secs(10));
    let mac = dev.link_mac("eth0").expect("MAC");
    assert_quarantined(node, &dir, taken.into(), &mac);
    // Another one, configured without DAD (no frame at all), is seen the
    // moment the host uses it: its Neighbor Solicitation for the router
    // carries it as the source, as an ARP request carries the sender's IP.
    let quiet = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 1, 6);
    dev.exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{quiet}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("a second address, no DAD");
    dev.exec_ok(&["ip", "-6", "neigh", "flush", "dev", "eth0"])
        .expect("forget the router, so the next packet resolves it");
    let gw = netns_testkit::GATEWAY6.to_string();
    dev.exec_ok(&[
        "ping",
        "-6",
        "-c",
        "1",
        "-W",
        "2",
        "-I",
        &quiet.to_string(),
        &gw,
    ])
    .expect("the device uses the address");
    wait_quarantined(node, &dir, quiet, Duration::from_secs(10));
    assert_quarantined(node, &dir, quiet.into(), &mac);
    // A dual-stack pod's own IPv6 traffic (its DAD is off, its NAs carry
    // its 0a:58 MAC) is not foreign.
    let pod = l.pod_on(&l.network_dual(1), 1, "web");
    let v6 = flatlan_e2e::pod_ipv6(&pod.result);
    ping(
        &pod.ns,
        netns_testkit::GATEWAY6.into(),
        1,
        Duration::from_secs(5),
    )
    .expect("the pod reaches the router over IPv6");
    std::thread::sleep(Duration::from_millis(1500));
    let rows = rows_for(node, &dir, v6);
    assert_eq!(rows.len(), 1, "our pod's IPv6 row in ipam ls: {rows:?}");
    assert!(
        rows.iter().all(|r| r["state"] == "allocated"),
        "our own pod's IPv6 address was taken for foreign use: {rows:?}"
    );
    assert_ne!(v6, taken, "ADD handed out the address the device took");
    assert!(watcher.is_running(), "the watcher died: {}", watcher.log());
    settle_store(&dir);
}
