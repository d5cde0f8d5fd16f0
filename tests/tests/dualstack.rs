//! IPv6 dual-stack, end to end: a pod gets one address per family from
//! `ipam.subnets`, both reported, both reachable from the LAN, no SLAAC
//! address beside them, freed together and given back together.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use flatlan_e2e::{
    allocation_count, assert_quarantined, bin_dir, ipam_ls, plugin_conf_dual, pod_ipv4, pod_ipv6,
    pod_mac, pod_veths, settle_store, FlatLab,
};
use netns_testkit::cni::CniNetwork;
use netns_testkit::probe::{arp_neighbors, ping};
use netns_testkit::{LabConfig, Netns, CLIENT_IP6, GATEWAY6, LAN6_SUBNET};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

/// The IPv6 addresses on `dev` in `ns`, with their `ip -j addr` records.
fn ipv6_addrs(ns: &Netns, dev: &str) -> Vec<Value> {
    let out = ns
        .exec_ok(&["ip", "-j", "-6", "addr", "show", "dev", dev])
        .expect("ip -6 addr");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j addr");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn locals(addrs: &[Value]) -> BTreeSet<Ipv6Addr> {
    addrs
        .iter()
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect()
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Asserts the pod's interface holds exactly one global IPv6 address, the
/// allocated one, usable at once (not tentative), plus its link-local one.
fn assert_only_allocated_v6(pod: &Netns, allocated: Ipv6Addr) {
    let addrs = ipv6_addrs(pod, "eth0");
    let all = locals(&addrs);
    let global: Vec<_> = all.iter().filter(|ip| !is_link_local(ip)).collect();
    assert_eq!(global, vec![&allocated], "pod IPv6 addresses: {addrs:?}");
    assert_eq!(all.len(), 2, "one link-local beside it: {addrs:?}");
    let rec = addrs
        .iter()
        .find(|a| a["local"] == allocated.to_string())
        .expect("allocated address listed");
    assert_eq!(rec["prefixlen"], 64, "{rec}");
    for flag in ["tentative", "dadfailed"] {
        assert!(rec.get(flag).is_none(), "{flag}: {rec}");
    }
}

fn sysctl(ns: &Netns, key: &str) -> String {
    let out = ns
        .exec_ok(&["cat", &format!("/proc/sys/net/ipv6/conf/{key}")])
        .expect("read sysctl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Inside node `node`'s `fd00:2::N:0/112` slice ([`flatlan_e2e::node_slice6`]).
fn in_slice(ip: Ipv6Addr, node: usize) -> bool {
    let s = ip.segments();
    s[..6] == [0xfd00, 2, 0, 0, 0, 0] && format!("{:x}", s[6]) == node.to_string()
}

#[test]
fn a_dual_stack_pod_is_a_lan_host_on_both_families() {
    let l = FlatLab::new(LabConfig::new().nodes(2));
    let p1 = l.pod_on(&l.network_dual(1), 1, "web");
    let p2 = l.pod_on(&l.network_dual(2), 2, "db");
    let r = &p1.result;

    // Both addresses in the result, with the LAN prefix lengths and gateways.
    let ips = r["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{r}");
    let v6 = pod_ipv6(r);
    // A fresh store starts at the slice's first address: slice edges are
    // ordinary LAN hosts.
    assert_eq!(v6, "fd00:2::1:0".parse::<Ipv6Addr>().expect("v6"), "{r}");
    assert!(in_slice(pod_ipv6(&p2.result), 2), "{}", p2.result);
    let v6_entry = ips
        .iter()
        .find(|i| i["address"] == format!("{v6}/64"))
        .unwrap_or_else(|| panic!("{v6}/64 not in {r}"));
    assert_eq!(v6_entry["gateway"], GATEWAY6.to_string());
    assert_eq!(v6_entry["interface"], 1);
    assert!(ips.iter().any(|i| i["address"] == format!("{}/24", p1.ip)));
    let routes = r["routes"].as_array().expect("routes");
    for (dst, gw) in [("0.0.0.0/0", "192.168.2.1"), ("::/0", "fd00:2::1")] {
        assert!(
            routes.iter().any(|x| x["dst"] == dst && x["gw"] == gw),
            "no {dst} via {gw} in {r}"
        );
    }
    // The MAC follows the IPv4 address.
    let [_, _, c, d] = p1.ip.octets();
    assert_eq!(pod_mac(r), format!("0a:58:c0:a8:{c:02x}:{d:02x}"));

    // Both families reachable from the LAN client, and pod to pod across
    // nodes over IPv6.
    ping(&l.lab.client, p1.ip.into(), 2, WAIT).expect("ping from the LAN client");
    ping(&l.lab.client, v6.into(), 2, WAIT).expect("ping -6 from the LAN client");
    ping(&p1.ns, pod_ipv6(&p2.result).into(), 2, WAIT).expect("pod to pod over IPv6");
    ping(&p2.ns, v6.into(), 1, WAIT).expect("and back");
    ping(&p1.ns, CLIENT_IP6.into(), 1, WAIT).expect("pod to the LAN client over IPv6");

    // The default routes landed in the pod.
    let out = p1
        .ns
        .exec_ok(&["ip", "-6", "route", "show", "default"])
        .expect("ip -6 route");
    let default6 = String::from_utf8_lossy(&out.stdout);
    assert!(default6.contains("via fd00:2::1"), "{default6}");

    // Exactly the allocated global address (added NODAD, so usable at
    // once) and the link-local one.
    assert_only_allocated_v6(&p1.ns, v6);

    // The pod's IPv6 policy landed in the pod's namespace, and not in the
    // node's, where the plugin runs and where an `eth0` exists too.
    assert_eq!(sysctl(&p1.ns, "eth0/autoconf"), "0");
    assert_eq!(sysctl(&p1.ns, "eth0/accept_ra"), "0");
    assert_eq!(sysctl(l.node_ns(1), "eth0/autoconf"), "1");
    assert_eq!(sysctl(l.node_ns(1), "eth0/accept_ra"), "1");
    settle_store(&l.data_dir(1));
    settle_store(&l.data_dir(2));
}

/// CNI 0.4.0 results carry each IP's version; and with the IPv6 subnet
/// listed first, the MAC still follows the IPv4 address, everywhere.
#[test]
fn ipv6_first_with_cni_0_4_0() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let mut conf = plugin_conf_dual(l.state.path(), 1).expect("plugin config");
    if let Some(subnets) = conf["ipam"]["subnets"].as_array_mut() {
        subnets.reverse();
    }
    assert_eq!(conf["ipam"]["subnets"][0]["subnet"], "fd00:2::/64");
    let list = json!({"cniVersion": "0.4.0", "name": "lan", "plugins": [conf]});
    let net = CniNetwork::new(list, vec![bin_dir()]).expect("conflist");
    let pod = l.pod_on(&net, 1, "old");
    let mac = pod_mac(&pod.result);
    let [_, _, c, d] = pod.ip.octets();
    assert_eq!(mac, format!("0a:58:c0:a8:{c:02x}:{d:02x}"));
    let rows = ipam_ls(l.node_ns(1), &l.data_dir(1));
    let held: Vec<_> = rows.iter().filter(|r| r["pod"] == "default/old").collect();
    assert_eq!(held.len(), 2, "{rows:?}");
    for r in held {
        assert_eq!(r["mac"], mac, "`ipam ls` shows the pod's real MAC: {r}");
    }
    let ips = pod.result["ips"].as_array().expect("ips");
    let version_of = |fam: &str| {
        ips.iter()
            .find(|i| i["address"].as_str().is_some_and(|a| a.contains(fam)))
            .map(|i| i["version"].clone())
    };
    assert_eq!(version_of("."), Some(json!("4")), "{}", pod.result);
    assert_eq!(version_of(":"), Some(json!("6")), "{}", pod.result);
    net.check(l.node_ns(1), &pod.att, &pod.result)
        .expect("CHECK of a dual-stack pod");
    net.del(l.node_ns(1), &pod.att, Some(&pod.result))
        .expect("DEL");
    settle_store(&l.data_dir(1));
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
}

#[test]
fn del_frees_both_families_and_identity_brings_both_back() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = l.network_dual(1);
    let node = l.node_ns(1);
    let _other = l.pod_on(&net, 1, "other");
    let ha = l.pod_on(&net, 1, "homeassistant");
    let (v4, v6, mac) = (ha.ip, pod_ipv6(&ha.result), pod_mac(&ha.result));
    net.del(node, &ha.att, Some(&ha.result)).expect("DEL");
    settle_store(&l.data_dir(1));
    let left: Vec<String> = flatlan_e2e::store_state(&l.data_dir(1))["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ip"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !left.contains(&v4.to_string()) && !left.contains(&v6.to_string()),
        "DEL left {left:?}"
    );
    assert_eq!(
        left.len(),
        2,
        "only `other`'s two addresses remain: {left:?}"
    );
    // Someone else starts in between.
    let _third = l.pod_on(&net, 1, "third");

    let again = l.pod_as(&net, 1, "ha-2", "homeassistant");
    assert_eq!(pod_ipv4(&again.result), v4, "same IPv4");
    assert_eq!(pod_ipv6(&again.result), v6, "same IPv6");
    assert_eq!(pod_mac(&again.result), mac, "same MAC");
    ping(&l.lab.client, v6.into(), 1, WAIT).expect("reachable again over IPv6");

    // After a node reboot (new boot ID) the identity still gets all three.
    l.set_boot_id(1, "boot-2");
    l.lab
        .switch
        .exec_ok(&["ip", "netns", "del", again.ns.name()])
        .expect("pod gone");
    // The kernel tears a deleted namespace down in the background: until its
    // veth is gone, the old pod still answers the conflict probe that a
    // returning identity's address always gets, with its own MAC, and the
    // address would be quarantined. A real reboot leaves nothing behind.
    let deadline = Instant::now() + WAIT;
    while pod_veths(node).len() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pod_veths(node).len(), 2, "the deleted pod's veth is gone");
    let rebooted = l.pod_as(&net, 1, "ha-3", "homeassistant");
    assert_eq!(pod_ipv4(&rebooted.result), v4);
    assert_eq!(pod_ipv6(&rebooted.result), v6);
    assert_eq!(pod_mac(&rebooted.result), mac);

    // DEL of everything leaves the store empty.
    settle_store(&l.data_dir(1));
    for p in [&_other, &_third, &rebooted] {
        net.del(node, &p.att, Some(&p.result)).expect("DEL");
    }
    settle_store(&l.data_dir(1));
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
}

#[test]
fn an_ipv6_address_held_by_a_lan_device_is_skipped_and_quarantined() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    // A device with a static address at the start of node1's IPv6 slice,
    // added without DAD, as a misconfigured host would hold it.
    let squatted: Ipv6Addr = "fd00:2::1:0".parse().expect("v6");
    l.lab
        .device
        .exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{squatted}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("static address on the device");
    let device_mac = {
        let out = l
            .lab
            .device
            .exec_ok(&["cat", "/sys/class/net/eth0/address"])
            .expect("mac");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ping(&l.lab.router, squatted.into(), 1, WAIT).expect("router learns it");
    let entry = |ns: &Netns| {
        arp_neighbors(ns, "eth0")
            .expect("neighbours")
            .into_iter()
            .find(|e| e.ip == IpAddr::from(squatted))
            .and_then(|e| e.mac)
    };
    assert_eq!(entry(&l.lab.router), Some(device_mac.clone()));

    let pod = l.pod_on(&l.network_dual(1), 1, "p");
    let v6 = pod_ipv6(&pod.result);
    assert_ne!(v6, squatted, "ADD handed out an address a LAN device holds");
    assert!(in_slice(v6, 1) && LAN6_SUBNET.contains(&v6), "{v6}");
    ping(&l.lab.client, v6.into(), 1, WAIT).expect("pod reachable over IPv6");

    assert_quarantined(l.node_ns(1), &l.data_dir(1), squatted.into(), &device_mac);

    // The DAD-style probe (source ::) must not disturb the device.
    assert_eq!(
        entry(&l.lab.router),
        Some(device_mac),
        "the router's entry changed"
    );
    ping(&l.lab.client, squatted.into(), 1, WAIT).expect("device still reachable");
    settle_store(&l.data_dir(1));
}

#[test]
fn router_advertisements_give_pods_no_slaac_address() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    // Pod `gw` has an IPv6 gateway in its config, so it ignores RAs
    // entirely; pod `ra` has none, so it takes its IPv6 default route from
    // RAs but must still not form an address of its own.
    let gw = l.pod_on(&l.network_dual(1), 1, "gw");
    let no_gw = l.network_with(1, |c| {
        let dual = plugin_conf_dual(l.state.path(), 1).expect("plugin config");
        c["ipam"] = dual["ipam"].clone();
        if let Some(s) = c["ipam"]["subnets"][1].as_object_mut() {
            s.remove("gateway");
        }
    });
    let ra = l.pod_on(&no_gw, 1, "ra");
    assert_eq!(sysctl(&ra.ns, "eth0/accept_ra"), "1");
    assert_eq!(sysctl(&ra.ns, "eth0/autoconf"), "0");

    // The lab's router is silent; make it a SLAAC router for this test:
    // dnsmasq sending RAs for fd00:2::/64 with the autonomous flag.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let argv = [
        "dnsmasq".to_owned(),
        "--keep-in-foreground".to_owned(),
        "--log-facility=-".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        "--port=0".to_owned(),
        "--user=root".to_owned(),
        "--group=root".to_owned(),
        "--bind-interfaces".to_owned(),
        "--interface=eth0".to_owned(),
        format!("--pid-file={d}/dnsmasq.pid"),
        format!("--dhcp-leasefile={d}/dnsmasq.leases"),
        "--enable-ra".to_owned(),
        "--dhcp-range=fd00:2::,ra-only,64".to_owned(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let _dnsmasq = l.lab.router.spawn(&argv).expect("dnsmasq with RAs");

    // Proof that RAs reach the LAN: the client (default sysctls) forms a
    // SLAAC address, and pod `ra` learns a default route from them.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let client_slaac = ipv6_addrs(&l.lab.client, "eth0")
            .iter()
            .any(|a| a.get("dynamic").is_some() && a["scope"] == "global");
        let out = ra
            .ns
            .exec_ok(&["ip", "-6", "route", "show", "default"])
            .expect("ip -6 route");
        let ra_route = String::from_utf8_lossy(&out.stdout).contains("proto ra");
        if client_slaac && ra_route {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no RA arrived within 15 s (client SLAAC {client_slaac}, pod RA route {ra_route})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_only_allocated_v6(&gw.ns, pod_ipv6(&gw.result));
    assert_only_allocated_v6(&ra.ns, pod_ipv6(&ra.result));
    // The configured default route is the only one in `gw`.
    let out = gw
        .ns
        .exec_ok(&["ip", "-6", "route", "show", "default"])
        .expect("ip -6 route");
    let routes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(routes.contains("via fd00:2::1"), "{routes}");
    settle_store(&l.data_dir(1));
}
