//! DEL idempotency, ADD on an existing interface, CHECK, reboot reclaim
//! and GC.

use std::time::Duration;

use flatlan_e2e::{allocation_count, error_code, pod_veths, store_state, FlatLab};
use netns_testkit::cni::Attachment;
use netns_testkit::probe::ping;
use netns_testkit::{LabConfig, CLIENT_IP};

#[test]
fn del_is_idempotent_with_or_without_the_netns() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = l.network(1);
    let pod = l.pod(1, "p");
    assert_eq!(pod_veths(node).len(), 1);
    net.del(node, &pod.att, Some(&pod.result))
        .expect("first DEL");
    net.del(node, &pod.att, Some(&pod.result))
        .expect("second DEL");
    let mut no_ns = pod.att.clone();
    no_ns.netns = None;
    net.del(node, &no_ns, None).expect("DEL without a netns");
    assert!(pod_veths(node).is_empty());
    assert_eq!(allocation_count(&l.data_dir(1)), 0);

    // The runtime deleted the namespace before calling DEL.
    let gone = l.pod(1, "gone");
    gone.ns.exec_ok(&["true"]).expect("ns alive");
    let path = gone.att.netns.clone().expect("path");
    l.lab
        .switch
        .exec_ok(&["ip", "netns", "del", gone.ns.name()])
        .expect("ip netns del");
    assert!(!path.exists());
    net.del(node, &gone.att, None)
        .expect("DEL after the netns is gone");
    assert_eq!(allocation_count(&l.data_dir(1)), 0);
}

#[test]
fn add_on_an_existing_interface_fails_cleanly_and_del_after_it_succeeds() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let ns = l.lab.add_pod_netns(1, "busy").expect("netns");
    ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ])
    .expect("a pre-existing eth0 (no dummy driver on these kernels)");
    let att = Attachment::new("ctr-busy", &ns);
    let err = l.network(1).add(node, &att).expect_err("ADD must fail");
    assert_eq!(error_code(&err), Some(102), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(pod_veths(node).is_empty(), "ADD left a host veth");
    assert_eq!(
        allocation_count(&l.data_dir(1)),
        0,
        "ADD leaked its address"
    );
    l.network(1)
        .del(node, &att, None)
        .expect("DEL after a failed ADD");
    // The pre-existing interface is not ours and survives.
    ns.exec_ok(&["ip", "link", "show", "eth0"])
        .expect("the pre-existing eth0 survives");
}

#[test]
fn check_detects_a_removed_route_and_address() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = l.network(1);
    let pod = l.pod(1, "chk");
    net.check(node, &pod.att, &pod.result)
        .expect("CHECK right after ADD");

    pod.ns
        .exec_ok(&["ip", "route", "del", "10.43.0.0/16"])
        .expect("route del");
    let err = net
        .check(node, &pod.att, &pod.result)
        .expect_err("missing route");
    assert_eq!(error_code(&err), Some(104), "{err}");
    assert!(err.to_string().contains("10.43.0.0/16"), "{err}");
    pod.ns
        .exec_ok(&[
            "ip",
            "route",
            "add",
            "10.43.0.0/16",
            "via",
            &l.lab.nodes[0].ip.to_string(),
        ])
        .expect("route add");
    net.check(node, &pod.att, &pod.result)
        .expect("CHECK after repair");

    pod.ns
        .exec_ok(&[
            "ip",
            "addr",
            "del",
            &format!("{}/24", pod.ip),
            "dev",
            "eth0",
        ])
        .expect("addr del");
    let err = net
        .check(node, &pod.att, &pod.result)
        .expect_err("missing address");
    assert!(err.to_string().contains(&pod.ip.to_string()), "{err}");
}

#[test]
fn a_new_boot_id_reclaims_old_allocations() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    l.pod(1, "old1");
    l.pod(1, "old2");
    assert_eq!(allocation_count(&l.data_dir(1)), 2);
    l.set_boot_id(1, "boot-2");
    let fresh = l.pod(1, "fresh");
    let state = store_state(&l.data_dir(1));
    let allocs = state["allocations"].as_array().expect("allocations");
    assert_eq!(allocs.len(), 1, "{state}");
    assert_eq!(allocs[0]["container_id"], "ctr-fresh");
    assert_eq!(allocs[0]["boot_id"], "boot-2");
    ping(&fresh.ns, CLIENT_IP.into(), 1, Duration::from_secs(5)).expect("fresh pod works");
}

#[test]
fn gc_frees_exactly_what_is_not_valid() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let keep = l.pod(1, "keep");
    let _x = l.pod(1, "x");
    let _y = l.pod(1, "y");
    assert_eq!(pod_veths(node).len(), 3);
    l.network(1)
        .gc(node, std::slice::from_ref(&keep.att))
        .expect("GC");
    let state = store_state(&l.data_dir(1));
    let allocs = state["allocations"].as_array().expect("allocations");
    assert_eq!(allocs.len(), 1, "{state}");
    assert_eq!(allocs[0]["container_id"], "ctr-keep");
    assert_eq!(
        pod_veths(node).len(),
        1,
        "GC must remove the stale host veths"
    );
    ping(&keep.ns, CLIENT_IP.into(), 1, Duration::from_secs(5)).expect("the valid pod still works");
    // An absent list must never be read as "nothing is valid".
    let raw = flatlan_e2e::run_raw(
        node,
        &[("CNI_COMMAND", "GC")],
        l.network(1)
            .plugin_config(0, None)
            .expect("conf")
            .to_string()
            .as_bytes(),
    );
    assert_eq!(raw.cni_code(), Some(7), "{}", raw.stdout);
    assert_eq!(allocation_count(&l.data_dir(1)), 1);
}

/// A bridge takes the lowest MAC among its ports unless one was set, so a
/// pod veth could change the node's MAC under every LAN host's ARP cache.
/// The first ADD pins it; later ADDs leave it alone.
#[test]
fn the_first_add_pins_the_bridge_mac_and_it_never_drifts() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let assign_type = || {
        let out = node
            .exec_ok(&["cat", "/sys/class/net/br0/addr_assign_type"])
            .expect("read addr_assign_type");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // NET_ADDR_SET is 3; a lab bridge that starts pinned proves nothing.
    assert_ne!(assign_type(), "3", "the lab's br0 starts pinned");
    let mac = node.link_mac("br0").expect("br0 MAC");
    let pods: Vec<_> = (0..3).map(|i| l.pod(1, &format!("m{i}"))).collect();
    assert_eq!(assign_type(), "3", "the first ADD pins br0's MAC");
    assert_eq!(node.link_mac("br0").expect("br0 MAC"), mac);
    let net = l.network(1);
    for p in &pods {
        net.del(node, &p.att, Some(&p.result)).expect("DEL");
    }
    assert_eq!(node.link_mac("br0").expect("br0 MAC"), mac, "after DELs");
}

/// The result's host-veth MAC is the one the kernel holds (it reported
/// `0e:58:...` while the kernel had picked a random one).
#[test]
fn the_result_reports_the_host_veths_real_mac() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let pod = l.pod(1, "hm");
    let host = &pod.result["interfaces"][0];
    let name = host["name"].as_str().expect("host veth name");
    let kernel = l.node_ns(1).link_mac(name).expect("host veth MAC");
    assert_eq!(host["mac"], kernel.as_str(), "{}", pod.result);
    let pod_if = &pod.result["interfaces"][1];
    let kernel = pod.ns.link_mac("eth0").expect("pod MAC");
    assert_eq!(pod_if["mac"], kernel.as_str(), "{}", pod.result);
}

/// podman's `--mac-address`: `MAC=` in CNI_ARGS, or the `mac` capability
/// (which wins, as in the reference bridge plugin). The pod gets it, the
/// result and the store report it, and DEL cleans up.
#[test]
fn a_requested_mac_is_honoured_from_cni_args_and_the_capability() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let mut net = l.network_with(1, |c| c["capabilities"] = serde_json::json!({"mac": true}));
    for (i, (args_mac, cap_mac)) in [
        ("02:42:c0:a8:02:01", None),
        ("02:42:c0:a8:02:02", Some("02:42:c0:a8:02:03")),
    ]
    .into_iter()
    .enumerate()
    {
        match cap_mac {
            Some(m) => net.capability_args.insert("mac".into(), m.into()),
            None => net.capability_args.remove("mac"),
        };
        let want = cap_mac.unwrap_or(args_mac);
        let ns = l.lab.add_pod_netns(1, &format!("mac{i}")).expect("netns");
        let mut att = Attachment::new(&format!("ctr-mac{i}"), &ns);
        att.args = vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAME".into(), format!("mac{i}")),
            ("MAC".into(), args_mac.into()),
        ];
        let r = net.add(node, &att).expect("ADD with a MAC");
        assert_eq!(ns.link_mac("eth0").expect("pod MAC"), want);
        assert_eq!(r["interfaces"][1]["mac"], want, "{r}");
        let state = store_state(&l.data_dir(1));
        assert_eq!(state["allocations"][0]["mac"], want, "{state}");
        ping(&ns, CLIENT_IP.into(), 1, Duration::from_secs(5)).expect("the pod works");
        net.check(node, &att, &r)
            .expect("CHECK with a requested MAC");
        net.del(node, &att, Some(&r)).expect("DEL");
        assert!(pod_veths(node).is_empty());
        assert_eq!(allocation_count(&l.data_dir(1)), 0);
    }
}

/// STATUS runs a flatlan invocation with `conf` and returns it.
fn status_raw(l: &FlatLab, conf: &serde_json::Value) -> flatlan_e2e::RawRun {
    flatlan_e2e::run_raw(
        l.node_ns(1),
        &[("CNI_COMMAND", "STATUS")],
        conf.to_string().as_bytes(),
    )
}

/// A `bridge` that is a veth: STATUS is not-ready, names it, and changes
/// nothing (MAC pinning used to reach the veth first).
#[test]
fn status_is_not_ready_when_the_bridge_is_not_a_bridge() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let mut conf = l.network(1).plugin_config(0, None).expect("conf");
    conf["bridge"] = "eth0".into();
    let run = status_raw(&l, &conf);
    assert_eq!(run.cni_code(), Some(50), "{}", run.stdout);
    let msg = serde_json::from_str::<serde_json::Value>(&run.stdout).expect("json")["msg"].clone();
    assert!(
        msg.as_str().unwrap_or("").contains("\"eth0\" is a veth"),
        "{msg}"
    );
}

/// A full slice keeps the node ready: not-ready would taint the node and
/// evict its running pods. ADD says 101, and STATUS warns in its log.
#[test]
fn status_stays_ready_with_an_exhausted_pool_and_warns() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = flatlan_e2e::network(l.state.path(), 1, &["192.168.2.210-192.168.2.210"]);
    let conf = net.plugin_config(0, None).expect("conf");
    let run = status_raw(&l, &conf);
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("exhausted"), "{}", run.stderr);
    l.pod_on(&net, 1, "only");
    let ns = l.lab.add_pod_netns(1, "more").expect("netns");
    let err = net
        .add(l.node_ns(1), &Attachment::new("ctr-more", &ns))
        .expect_err("the pool is full");
    assert_eq!(error_code(&err), Some(101), "{err}");
    let run = status_raw(&l, &conf);
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("192.168.2.0/24") && run.stderr.contains("exhausted"),
        "STATUS must say why ADD fails: {}",
        run.stderr
    );
}

/// CHECK without a prevResult expects the MAC the store recorded, so a
/// requested one (`MAC=`, podman's `--mac-address`) is not a mismatch.
#[test]
fn check_without_prev_result_expects_the_requested_mac() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = l.network(1);
    let ns = l.lab.add_pod_netns(1, "mac").expect("netns");
    let mut att = Attachment::new("ctr-mac", &ns);
    att.args = vec![("MAC".into(), "02:42:c0:a8:02:99".into())];
    let result = net.add(node, &att).expect("ADD with MAC=");
    assert_eq!(flatlan_e2e::pod_mac(&result), "02:42:c0:a8:02:99");
    let conf = net.plugin_config(0, None).expect("conf").to_string();
    let netns = ns.path().display().to_string();
    let run = flatlan_e2e::run_raw(
        node,
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "ctr-mac"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        conf.as_bytes(),
    );
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
}
