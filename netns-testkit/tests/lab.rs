//! Privileged tests: they build real labs and need root. Without root they
//! fail (never silently pass).

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use netns_testkit::cni::{Attachment, CniCommand, CniInvocation, CniNetwork};
use netns_testkit::probe::{self, MdnsAnswer};
use netns_testkit::{
    dns, Lab, LabConfig, Netns, CLIENT_IP, DEVICE_IP, DEVICE_IP6, GATEWAY, GATEWAY6, INTERNET_IP,
    LAN_BROADCAST, ROUTER_WAN_IP,
};
use serde_json::json;

const PING_TIMEOUT: Duration = Duration::from_secs(3);
const POD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 210);

fn setup() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    if let Err(e) = netns_testkit::require_root() {
        panic!("privileged test cannot run: {e}. Run as root: sudo -E cargo test -p netns-testkit");
    }
}

fn lab(config: LabConfig) -> Lab {
    setup();
    let lab = config.build().expect("lab builds");
    eprintln!("lab {} built in {:?}", lab.name_prefix(), lab.build_time());
    lab
}

fn ping(from: &Netns, to: impl Into<IpAddr>) {
    let to = to.into();
    if let Err(e) = probe::ping(from, to, 2, PING_TIMEOUT) {
        panic!("{} cannot ping {to}: {e}", from.name());
    }
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.link_mac(dev).expect("link MAC")
}

fn our_namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect()
}

/// A pod the way a bridge CNI plugin would wire it, by hand: a veth from
/// the pod into node1's br0, with a LAN address.
fn manual_pod(lab: &Lab) -> Netns {
    let node = lab.node(1).expect("node1");
    let pod = lab.add_pod_netns(1, "manual").expect("pod netns");
    node.ns
        .ip_batch(&format!(
            "link add vpod0 type veth peer name eth0 netns {}\n\
             link set vpod0 master {}\n\
             link set vpod0 up\n",
            pod.name(),
            node.bridge
        ))
        .expect("pod veth");
    pod.ip_batch(&format!(
        "addr add {POD_IP}/{} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n",
        lab.prefix()
    ))
    .expect("pod address");
    pod
}

#[test]
fn two_node_lab_is_a_working_home_lan() {
    let lab = lab(LabConfig::new().nodes(2));
    // How fast is for the bench, not a test: printed only.
    eprintln!("lab built in {:?}", lab.build_time());
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);
    assert_eq!(n1.ip, Ipv4Addr::new(192, 168, 2, 11));
    assert_eq!((n1.bridge, n1.uplink, n1.index), ("br0", "eth0", 1));

    ping(&lab.device, CLIENT_IP);
    ping(&lab.client, DEVICE_IP);
    ping(&n1.ns, GATEWAY);
    ping(&lab.client, n1.ip);
    ping(&n2.ns, n1.ip);
    ping(&n1.ns, INTERNET_IP);

    // The internet sees the router's WAN address: the router masquerades.
    let echo = probe::tcp_echo(
        &lab.internet,
        INTERNET_IP.into(),
        0,
        &n1.ns,
        INTERNET_IP.into(),
    )
    .expect("node1 reaches the internet over TCP");
    assert_eq!(echo.client_seen_by_server.ip(), IpAddr::V4(ROUTER_WAN_IP));
    assert_eq!(echo.client_local.ip(), IpAddr::V4(n1.ip));
    // Inside the LAN there is no NAT.
    let echo = probe::tcp_echo(
        &lab.device,
        DEVICE_IP.into(),
        0,
        &lab.client,
        DEVICE_IP.into(),
    )
    .expect("client reaches device over TCP");
    assert_eq!(echo.client_seen_by_server.ip(), IpAddr::V4(CLIENT_IP));

    let neigh = probe::arp_neighbors(&lab.client, "eth0").expect("neighbours");
    let dev = neigh
        .iter()
        .find(|n| n.ip == IpAddr::V4(DEVICE_IP))
        .unwrap_or_else(|| panic!("client has learnt the device's MAC: {neigh:?}"));
    assert_eq!(
        dev.mac.as_deref(),
        Some(mac_of(&lab.device, "eth0").as_str())
    );

    // IPv6 through the same switch: the lab is dual-stack from the start
    // (nodad addresses, so no 1-2 s wait for DAD), with no RAs.
    ping(&lab.client, DEVICE_IP6);
    ping(&n1.ns, GATEWAY6);
    ping(&n2.ns, n1.ip6);
    let v6 = |ns: &Netns| {
        let out = ns
            .exec_ok(&["ip", "-6", "route", "show", "default"])
            .expect("ip -6 route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(v6(&lab.client).contains(&format!("via {GATEWAY6}")));
    assert!(v6(&n1.ns).contains(&format!("via {GATEWAY6} dev br0")));

    // Unreachable addresses fail, within the timeout.
    let t = Instant::now();
    let err = probe::ping(
        &lab.client,
        Ipv4Addr::new(192, 168, 2, 99).into(),
        1,
        Duration::from_secs(1),
    )
    .expect_err("nobody has .99");
    assert!(t.elapsed() < Duration::from_secs(4), "{err}");
}

#[test]
fn avahi_device_is_discovered_by_mdns_from_client_and_node() {
    let lab = lab(LabConfig::new().nodes(1).with_avahi_device(true));
    let started = Instant::now();
    let found = probe::mdns_query(
        &lab.client,
        CLIENT_IP,
        "_http._tcp.local",
        Duration::from_secs(10),
    )
    .expect("query runs");
    eprintln!(
        "mDNS discovery from the client took {:?}: {found:?}",
        started.elapsed()
    );
    let speaker: &MdnsAnswer = found
        .iter()
        .find(|a| a.instance.starts_with("Living Room Speaker."))
        .unwrap_or_else(|| panic!("device's service not found: {found:?}"));
    assert_eq!(speaker.port, Some(8080));
    assert_eq!(speaker.addrs, vec![IpAddr::V4(DEVICE_IP)]);
    assert_eq!(speaker.txt, vec!["model=flatlan-lab".to_owned()]);
    let host = lab.device_hostname().expect("avahi runs");
    assert_eq!(
        speaker.host.as_deref(),
        Some(format!("{host}.local").as_str())
    );

    // From a node, through its br0: multicast crosses the node bridge too.
    let node = lab.node(1).expect("node1");
    let found = probe::mdns_query(
        &node.ns,
        node.ip,
        "_http._tcp.local",
        Duration::from_secs(5),
    )
    .expect("query runs");
    assert!(
        found
            .iter()
            .any(|a| a.addrs.contains(&IpAddr::V4(DEVICE_IP))),
        "{found:?}"
    );

    // Nobody offers this type: an empty answer, after the full timeout.
    let none = probe::mdns_query(
        &lab.client,
        CLIENT_IP,
        "_nothing._tcp.local",
        Duration::from_millis(700),
    )
    .expect("query runs");
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn udp_broadcast_from_client_reaches_device() {
    let lab = lab(LabConfig::new().nodes(1));
    let from = probe::udp_broadcast(
        &lab.client,
        SocketAddrV4::new(LAN_BROADCAST, 40999),
        &lab.device,
    )
    .expect("broadcast arrives");
    assert_eq!(from.ip(), IpAddr::V4(CLIENT_IP));
    // ... and to a node, which hears it on br0.
    let from = probe::udp_broadcast(
        &lab.client,
        SocketAddrV4::new(LAN_BROADCAST, 40998),
        &lab.nodes[0].ns,
    )
    .expect("broadcast reaches node1");
    assert_eq!(from.ip(), IpAddr::V4(CLIENT_IP));
}

#[test]
fn pod_on_node_bridge_is_a_lan_host() {
    let lab = lab(LabConfig::new().nodes(2));
    let pod = manual_pod(&lab);
    ping(&pod, CLIENT_IP);
    ping(&lab.client, POD_IP);
    ping(&pod, lab.nodes[1].ip);
    ping(&pod, INTERNET_IP);
    let echo = probe::tcp_echo(&pod, POD_IP.into(), 8080, &lab.device, POD_IP.into())
        .expect("LAN device reaches pod");
    assert_eq!(echo.client_seen_by_server.ip(), IpAddr::V4(DEVICE_IP));
    assert!(pod
        .name()
        .starts_with(&format!("{}-pod1-", lab.name_prefix())));
}

#[test]
fn concurrent_labs_do_not_interfere() {
    setup();
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let a = s.spawn(|| LabConfig::new().nodes(1).build());
        let b = s.spawn(|| LabConfig::new().nodes(1).build());
        [a, b]
            .into_iter()
            .map(|h| h.join().expect("no panic").expect("lab builds"))
            .collect()
    });
    assert_ne!(labs[0].name_prefix(), labs[1].name_prefix());
    std::thread::scope(|s| {
        for lab in &labs {
            s.spawn(move || {
                ping(&lab.client, DEVICE_IP);
                // Same IPs in both labs, but each client learns its own device.
                let neigh = probe::arp_neighbors(&lab.client, "eth0").expect("neighbours");
                let mac = neigh
                    .iter()
                    .find(|n| n.ip == IpAddr::V4(DEVICE_IP))
                    .and_then(|n| n.mac.clone());
                assert_eq!(
                    mac,
                    Some(mac_of(&lab.device, "eth0")),
                    "lab {}",
                    lab.name_prefix()
                );
            });
        }
    });
}

#[test]
fn lab_dropped_during_a_panic_leaves_nothing() {
    setup();
    let mut seen: Option<(String, u32, usize)> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = LabConfig::new()
            .nodes(1)
            .with_avahi_device(true)
            .build()
            .expect("lab builds");
        let _pod = lab.add_pod_netns(1, "doomed").expect("pod");
        let avahi_pid = lab
            .daemon_pids()
            .into_iter()
            .find(|(name, _)| *name == "avahi")
            .map_or(0, |(_, pid)| pid);
        // Counted here, asserted outside: a failed assert in here would be
        // swallowed by catch_unwind as if it were the deliberate panic.
        let built = our_namespaces(lab.name_prefix()).len();
        seen = Some((lab.name_prefix().to_owned(), avahi_pid, built));
        panic!("deliberate panic with a live lab");
    }));
    assert!(result.is_err(), "the closure panicked");
    let (prefix, avahi_pid, built) = seen.expect("lab was built");
    assert!(
        built >= 5,
        "the lab had only {built} namespaces before the panic"
    );
    let left = our_namespaces(&prefix);
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_ne!(
        avahi_pid, 0,
        "found avahi-daemon's PID in the device namespace"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{avahi_pid}")).exists(),
        "avahi-daemon {avahi_pid} survived the lab"
    );
    let state = std::env::temp_dir().join("flatlan-lab");
    let files: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !files
            .iter()
            .any(|f| f.to_string_lossy().starts_with(&prefix)),
        "scratch files left behind: {files:?}"
    );
}

#[test]
fn dnsmasq_answers_for_lan_names() {
    let mut lab = lab(LabConfig::new().nodes(1).with_dnsmasq(true));
    let query = dns::build_query(0x4242, "node1.lan", dns::TYPE_A, false).expect("query");
    let answer = lab
        .client
        .run(|| -> std::io::Result<Vec<u8>> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.send_to(&query, (GATEWAY, 53))?;
            let mut buf = [0u8; 512];
            let (n, _) = s.recv_from(&mut buf)?;
            Ok(buf[..n].to_vec())
        })
        .expect("thread runs")
        .expect("dnsmasq answers");
    let m = dns::parse(&answer).expect("valid DNS");
    assert_eq!(m.id, 0x4242);
    assert!(
        m.records
            .iter()
            .any(|r| r.data == dns::RData::A(Ipv4Addr::new(192, 168, 2, 11))),
        "{m:?}"
    );
    assert!(lab.dnsmasq_lease_file().is_some());
    lab.nodes.clear(); // the lab still tears down fine with handles moved out
}

#[test]
fn reference_cni_plugins_attach_a_pod_via_conflist() {
    let lab = lab(LabConfig::new().nodes(1));
    let node = lab.node(1).expect("node1");
    let data = tempfile::tempdir().expect("tempdir");
    let name = format!("{}-ref", lab.name_prefix());
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": node.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": data.path(),
                "ranges": [[{"subnet": "192.168.2.0/24", "rangeStart": "192.168.2.220",
                             "rangeEnd": "192.168.2.229", "gateway": "192.168.2.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        }, {
            "type": "tuning",
            "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}
        }]
    });
    let net = CniNetwork::new(conflist, vec!["/usr/lib/cni".into()]).expect("valid conflist");
    let pod = lab.add_pod_netns(1, "ref").expect("pod");
    let att = Attachment::new("ref-container-1", &pod);

    let (result, took) = net.add_timed(&node.ns, &att).expect("ADD succeeds");
    eprintln!("bridge+host-local+tuning ADD took {took:?}");
    let ip = result["ips"][0]["address"]
        .as_str()
        .expect("an IP")
        .to_owned();
    assert!(ip.starts_with("192.168.2.22"), "{result}");
    let pod_ip: Ipv4Addr = ip
        .split('/')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("IPv4");
    ping(&pod, CLIENT_IP);
    ping(&lab.client, pod_ip);

    net.check(&node.ns, &att, &result).expect("CHECK passes");
    let took = net
        .del_timed(&node.ns, &att, Some(&result))
        .expect("DEL succeeds");
    eprintln!("DEL took {took:?}");
    net.del(&node.ns, &att, Some(&result))
        .expect("second DEL succeeds");

    // VERSION, as a single invocation.
    let v = CniInvocation::new(
        "/usr/lib/cni/bridge",
        CniCommand::Version,
        json!({"cniVersion": "1.0.0"}),
    )
    .run(&node.ns)
    .expect("runs")
    .result()
    .expect("VERSION succeeds");
    assert!(
        v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.0.0"))),
        "{v}"
    );

    // A bad config fails with a spec error JSON.
    let mut bad = CniInvocation::new(
        "/usr/lib/cni/bridge",
        CniCommand::Add,
        json!({"cniVersion": "1.0.0", "name": "x", "type": "bridge", "ipam": {"type": "no-such-ipam"}}),
    );
    bad.container_id = "bad".into();
    bad.netns = Some(pod.path());
    let err = bad
        .run(&node.ns)
        .expect("runs")
        .result()
        .expect_err("ADD fails");
    assert!(err.cni_code().is_some(), "{err}");
}

#[test]
fn netns_run_spawn_and_exec_stay_inside() {
    setup();
    let ns = Netns::new("basics").expect("netns");
    assert!(ns.path().exists());
    // A socket made in `run` belongs to the namespace: only a client inside
    // it reaches its loopback. (A namespace's loopback is never reachable
    // from another one, so a check from outside could not fail.)
    let server = probe::tcp_serve(&ns, "127.0.0.1:0".parse().expect("addr")).expect("serve");
    let addr = server.local_addr();
    let reply = probe::tcp_request(&ns, addr, b"hi", Duration::from_secs(2)).expect("echo inside");
    assert_eq!(reply.reply, b"hi");
    assert_eq!(server.peers().len(), 1);

    let out = ns.exec(&["ip", "-br", "link"]).expect("exec");
    let links = String::from_utf8_lossy(&out.stdout);
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    let err = ns
        .exec_ok(&["sh", "-c", "echo nope >&2; exit 3"])
        .expect_err("fails");
    assert!(err.to_string().contains("nope"), "{err}");

    let mut proc = ns.spawn(&["sleep", "30"]).expect("spawn");
    assert!(proc.is_running());
    proc.kill(nix::sys::signal::Signal::SIGKILL).expect("kill");
    assert!(
        proc.wait_timeout(Duration::from_secs(2)).is_some(),
        "sleep was killed"
    );
    let path = ns.path();
    drop(ns);
    assert!(!path.exists(), "namespace removed on drop");
}

#[test]
fn stale_namespaces_of_dead_processes_are_cleaned() {
    setup();
    // PID 4194305 is above the kernel's pid_max limit, so "its" process is
    // always dead; our own PID in the counter field keeps the name unique.
    let prefix = format!("fl4194305l{}", std::process::id());
    let name = format!("{prefix}-stale");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .expect("ip netns add");
    assert!(out.status.success(), "{out:?}");
    let live = Netns::new("live").expect("netns");
    let removed = netns_testkit::cleanup_stale(Some(&prefix)).expect("cleanup");
    assert_eq!(removed, vec![name.clone()]);
    assert!(our_namespaces(&prefix).is_empty());
    // Our own (live) namespaces are never stale.
    let mine = live.name().split('-').next().expect("prefix").to_owned();
    assert!(netns_testkit::cleanup_stale(Some(&mine))
        .expect("cleanup")
        .is_empty());
    assert!(live.path().exists());
}

#[test]
fn impossible_configs_fail_before_touching_anything() {
    setup();
    let err = LabConfig::new()
        .nodes(40)
        .build()
        .expect_err("too many nodes");
    assert!(
        matches!(err, netns_testkit::Error::InvalidConfig(_)),
        "{err}"
    );
    let lab = lab(LabConfig::new().nodes(1));
    assert!(lab.add_pod_netns(2, "x").is_err(), "node 2 does not exist");
    assert!(lab.add_pod_netns(1, "Bad Name").is_err());
    assert!(lab.node(0).is_err());
}

#[test]
fn portmap_gets_port_mappings_as_runtime_config() {
    let lab = lab(LabConfig::new().nodes(1));
    let node = lab.node(1).expect("node1");
    let data = tempfile::tempdir().expect("tempdir");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": format!("{}-pm", lab.name_prefix()),
        "plugins": [{
            "type": "bridge",
            "bridge": node.bridge,
            "ipam": {
                "type": "host-local",
                "dataDir": data.path(),
                "ranges": [[{"subnet": "192.168.2.0/24", "rangeStart": "192.168.2.230",
                             "rangeEnd": "192.168.2.239", "gateway": "192.168.2.1"}]]
            }
        }, {
            "type": "portmap",
            "capabilities": {"portMappings": true}
        }]
    });
    let mut net = CniNetwork::new(conflist, vec!["/usr/lib/cni".into()]).expect("valid conflist");
    net.capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
    );
    let pod = lab.add_pod_netns(1, "pm").expect("pod");
    let att = Attachment::new("pm-container", &pod);
    let result = net.add(&node.ns, &att).expect("ADD succeeds");
    let pod_ip: Ipv4Addr = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .expect("pod IPv4");
    // The node reaches the pod through portmap's DNAT (OUTPUT chain).
    let server = probe::tcp_serve(&pod, (pod_ip, 80).into()).expect("serve in pod");
    let reply = probe::tcp_request(
        &node.ns,
        (node.ip, 18080).into(),
        b"pm",
        Duration::from_secs(3),
    )
    .expect("hostPort 18080 reaches the pod");
    assert_eq!(reply.reply, b"pm");
    assert_eq!(reply.peer, (node.ip, 18080).into());
    assert_eq!(server.peers().len(), 1);
    net.del(&node.ns, &att, Some(&result))
        .expect("DEL succeeds");
    assert!(
        probe::tcp_request(
            &node.ns,
            (node.ip, 18080).into(),
            b"pm",
            Duration::from_secs(1)
        )
        .is_err(),
        "mapping removed by DEL"
    );
}

/// A lab host neither forwards nor filters ARP, whatever the host machine
/// does: a new namespace copies IPv4 forwarding and the ARP settings from
/// the host's, so on a machine running Docker or the real-cluster harness
/// (ip_forward=1) every lab host was a router, and on one whose speaker
/// set arp_ignore=1/arp_announce=2 the hardening tests failed. (On a host
/// with kernel defaults this passes either way; on one like those, it
/// fails without `reset_inherited_sysctls`.)
#[test]
fn a_new_namespace_starts_from_kernel_defaults() {
    setup();
    let ns = Netns::new("fwd").expect("namespace");
    let read = |key: &str| {
        let path = format!("/proc/sys/net/ipv4/{key}");
        ns.run(|| std::fs::read_to_string(&path))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("read {key}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(read("ip_forward"), "0");
    for conf in ["all", "default"] {
        assert_eq!(read(&format!("conf/{conf}/arp_ignore")), "0", "{conf}");
        assert_eq!(read(&format!("conf/{conf}/arp_announce")), "0", "{conf}");
    }
}

/// The reset itself, on a namespace dirtied the way a host with Docker and
/// a strict-ARP speaker would be: unlike the test above, this one fails on
/// any machine if the reset is broken.
#[test]
fn the_reset_puts_forwarding_and_arp_back_to_kernel_defaults() {
    setup();
    let ns = Netns::new("rst").expect("namespace");
    let got = ns
        .run(|| -> std::io::Result<Vec<String>> {
            let keys = [
                "ip_forward",
                "conf/all/arp_ignore",
                "conf/all/arp_announce",
                "conf/default/arp_ignore",
                "conf/default/arp_announce",
            ];
            for (key, dirty) in keys.iter().zip(["1", "1", "2", "1", "2"]) {
                std::fs::write(format!("/proc/sys/net/ipv4/{key}"), dirty)?;
            }
            netns_testkit::reset_inherited_sysctls()?;
            keys.iter()
                .map(|k| {
                    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{k}"))
                        .map(|v| format!("{k}={}", v.trim()))
                })
                .collect()
        })
        .expect("enter namespace")
        .expect("sysctls");
    assert_eq!(
        got,
        [
            "ip_forward=0",
            "conf/all/arp_ignore=0",
            "conf/all/arp_announce=0",
            "conf/default/arp_ignore=0",
            "conf/default/arp_announce=0"
        ]
    );
}
