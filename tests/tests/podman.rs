//! podman as a real runtime (issue 10 acceptance): Debian's podman 4.3
//! with its CNI backend, inside a lab node, calling flatlan (chained with
//! portmap) through libcni exactly as on a user's machine. See
//! netns_testkit::podman for the isolation.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use flatlan_e2e::{allocation_count, bin, bin_dir, plugin_conf, pod_veths, reference_plugins};
use flatlan_e2e::{settle_store, FlatLab};
use netns_testkit::podman::Podman;
use netns_testkit::probe::{ping, tcp_request};
use netns_testkit::{LabConfig, CLIENT_IP};
use serde_json::{json, Value};

/// node1's flatlan network for podman: flatlan, then portmap for `-p`.
/// `portmap` is merged into portmap's config (e.g. `{"snat": false}`).
fn conflist(l: &FlatLab, name: &str, ranges: &[&str], portmap: Value) -> Value {
    let mut pm = json!({"type": "portmap", "capabilities": {"portMappings": true}});
    if let (Some(pm), Some(extra)) = (pm.as_object_mut(), portmap.as_object()) {
        pm.extend(extra.clone());
    }
    // podman 4.3's libcni and Debian's portmap speak up to CNI 1.0.0.
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [plugin_conf(l.state.path(), 1, ranges).expect("plugin config"), pm],
    })
}

/// A lab with one node and podman on it, flatlan's calls recorded.
fn setup() -> (FlatLab, Podman) {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let podman = Podman::new(
        l.node_ns(1),
        &[bin_dir(), reference_plugins()],
        Some(&bin("flatlan")),
    )
    .expect("podman scratch instance");
    podman
        .add_network(&conflist(&l, "lan", &[], json!({"snat": false})))
        .expect("network lan");
    (l, podman)
}

/// The container's eth0 IPv4 address and MAC, as the container sees them.
fn eth0(podman: &Podman, name: &str) -> (Ipv4Addr, String) {
    let out = podman
        .exec(name, &["ip", "-o", "-4", "addr", "show", "eth0"])
        .expect("ip addr in the container");
    let ip = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 on eth0: {out}"));
    let mac = podman
        .exec(name, &["cat", "/sys/class/net/eth0/address"])
        .expect("eth0 MAC");
    (ip, mac)
}

/// Nothing of any container is left: no address, no veth, no portmap rule.
fn assert_no_leaks(l: &FlatLab, podman: &Podman, ids: &[String]) {
    assert_eq!(
        podman
            .podman_ok(&["ps", "-a", "-q"])
            .expect("podman ps")
            .lines()
            .count(),
        0,
        "containers left"
    );
    settle_store(&l.data_dir(1));
    assert_eq!(allocation_count(&l.data_dir(1)), 0, "addresses leaked");
    assert!(pod_veths(l.node_ns(1)).is_empty(), "host veths leaked");
    let rules = l
        .node_ns(1)
        .exec_ok(&["iptables-save"])
        .expect("iptables-save");
    let rules = String::from_utf8_lossy(&rules.stdout);
    // portmap keeps its shared top-level chains by design; per-container
    // chains (CNI-DN-...) and rules naming a container must be gone.
    for id in ids {
        assert!(!rules.contains(id.as_str()), "rule for {id} left:\n{rules}");
    }
    assert!(!rules.contains(":CNI-DN-"), "portmap chain left:\n{rules}");
}

#[test]
fn podman_run_ip_and_rm_through_libcni_leave_nothing() {
    let (l, podman) = setup();
    let plain = podman
        .run("web", "lan", &[], &["sleep", "3600"])
        .expect("podman run");
    let (ip, mac) = eth0(&podman, "web");
    let slice: ipnet::Ipv4Net = flatlan_e2e::node_slice(1)
        .expect("slice")
        .parse()
        .expect("slice parses");
    assert!(slice.contains(&ip), "{ip} outside node1's slice {slice}");
    let [a, b, c, d] = ip.octets();
    assert_eq!(mac, format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}"));
    podman
        .exec(
            "web",
            &["ping", "-c", "1", "-W", "5", &CLIENT_IP.to_string()],
        )
        .expect("the container reaches a LAN host");
    ping(&l.lab.client, ip.into(), 1, Duration::from_secs(5))
        .expect("a LAN host reaches the container");

    // --ip: podman sends IP= in CNI_ARGS.
    let fixed = podman
        .run(
            "fixed",
            "lan",
            &["--ip", "192.168.2.219"],
            &["sleep", "3600"],
        )
        .expect("podman run --ip");
    assert_eq!(eth0(&podman, "fixed").0, Ipv4Addr::new(192, 168, 2, 219));
    assert_eq!(allocation_count(&l.data_dir(1)), 2);

    podman.rm(&["web", "fixed"]).expect("podman rm");
    assert_no_leaks(&l, &podman, &[plain.clone(), fixed.clone()]);

    // What podman sent, as libcni does: the container name as
    // K8S_POD_NAME without a namespace, IP= for --ip, and DEL with the
    // cached result as prevResult.
    let calls = podman.calls().expect("recorded calls");
    let add = calls
        .iter()
        .find(|c| c.command == "ADD" && c.container_id == fixed)
        .expect("ADD of fixed recorded");
    assert!(add.args.contains("IgnoreUnknown=1"), "{}", add.args);
    assert!(add.args.contains("K8S_POD_NAME=fixed"), "{}", add.args);
    assert!(!add.args.contains("K8S_POD_NAMESPACE"), "{}", add.args);
    assert!(add.args.contains("IP=192.168.2.219"), "{}", add.args);
    for id in [&plain, &fixed] {
        let del = calls
            .iter()
            .find(|c| c.command == "DEL" && &c.container_id == id)
            .unwrap_or_else(|| panic!("no DEL recorded for {id}: {calls:?}"));
        assert!(
            del.config["prevResult"]["ips"].is_array(),
            "DEL without prevResult: {}",
            del.config
        );
    }
}

/// A LAN client's HTTP request to the node's hostPort, answered by the
/// container's `/cgi-bin/peer` with the source address it saw.
fn peer_seen_via_hostport(l: &FlatLab, port: u16) -> netns_testkit::Result<String> {
    let reply = tcp_request(
        &l.lab.client,
        SocketAddr::new(l.lab.nodes[0].ip.into(), port),
        b"GET /cgi-bin/peer HTTP/1.0\r\n\r\n",
        Duration::from_secs(3),
    )?;
    let text = String::from_utf8_lossy(&reply.reply).into_owned();
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .or_else(|| text.split("\n\n").nth(1))
        .unwrap_or_default()
        .trim()
        // busybox httpd listens on IPv6 and shows `[::ffff:a.b.c.d]`.
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .to_owned())
}

/// [`peer_seen_via_hostport`], retried for up to 5 s while the
/// container's server is not yet listening.
fn once_listening(l: &FlatLab, port: u16) -> netns_testkit::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = peer_seen_via_hostport(l, port);
        if r.is_ok() || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set_ip_forward(l: &FlatLab, on: bool) {
    l.node_ns(1)
        .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", if on { "1" } else { "0" }))
        .expect("enter node")
        .expect("set ip_forward");
}

/// `-p`: portmap chained after flatlan. Documents the README's two
/// hostPort facts: it needs ip_forward (the DNATed packet is routed back
/// out of the bridge), and portmap's default SNAT masquerades every LAN
/// client (its "container network" is the whole LAN) unless `snat: false`.
#[test]
fn podman_publish_reaches_the_container_with_the_clients_address() {
    let (l, podman) = setup();
    podman
        .add_network(&conflist(
            &l,
            "lan-masq",
            &["192.168.2.216-192.168.2.223"],
            json!({}),
        ))
        .expect("network lan-masq");
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    let kept = podman
        .run("kept", "lan", &["-p", "8080:80"], &httpd)
        .expect("podman run -p");
    let masq = podman
        .run("masq", "lan-masq", &["-p", "8081:80"], &httpd)
        .expect("podman run -p on lan-masq");

    let seen =
        once_listening(&l, 8080).expect("LAN client reaches the container through -p 8080:80");
    assert_eq!(seen, CLIENT_IP.to_string(), "snat: false keeps the client");
    // Each container's httpd binds when it gets to it: `podman run -d`
    // returns before. Asking 8081 once, right after 8080 answered, was
    // refused in a CI run on a busy machine.
    let seen = once_listening(&l, 8081).expect("hostPort 8081");
    assert_eq!(
        seen,
        l.lab.nodes[0].ip.to_string(),
        "portmap's default SNAT masquerades a LAN client"
    );

    set_ip_forward(&l, false);
    let off = peer_seen_via_hostport(&l, 8080);
    set_ip_forward(&l, true);
    assert!(off.is_err(), "hostPort worked without ip_forward: {off:?}");
    assert_eq!(
        peer_seen_via_hostport(&l, 8080).expect("hostPort with ip_forward again"),
        CLIENT_IP.to_string()
    );

    podman.rm(&["kept", "masq"]).expect("podman rm");
    assert_no_leaks(&l, &podman, &[kept, masq]);
    let lan_masq = flatlan_ipam::Store::new(&l.data_dir(1), "lan-masq")
        .and_then(|s| s.peek())
        .expect("lan-masq store");
    assert!(
        lan_masq.allocations().is_empty(),
        "lan-masq leaked an address"
    );
}

#[test]
fn concurrent_podman_runs_get_distinct_addresses_and_rm_leaks_nothing() {
    let (l, podman) = setup();
    const N: usize = 6;
    let names: Vec<String> = (0..N).map(|i| format!("c{i}")).collect();
    let ids: Vec<String> = std::thread::scope(|s| {
        let jobs: Vec<_> = names
            .iter()
            .map(|n| {
                let podman = &podman;
                s.spawn(move || podman.run(n, "lan", &[], &["sleep", "3600"]))
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("thread").expect("concurrent podman run"))
            .collect()
    });
    let ips: HashSet<Ipv4Addr> = names.iter().map(|n| eth0(&podman, n).0).collect();
    assert_eq!(ips.len(), N, "duplicate addresses: {ips:?}");
    assert_eq!(allocation_count(&l.data_dir(1)), N);
    std::thread::scope(|s| {
        for n in &names {
            let podman = &podman;
            s.spawn(move || podman.rm(&[n]).expect("concurrent podman rm"));
        }
    });
    assert_no_leaks(&l, &podman, &ids);
}

/// podman sends the container name as K8S_POD_NAME without a namespace;
/// flatlan treats it as the sticky identity (README, "podman"): a
/// container recreated under the same name gets its address back.
#[test]
fn a_recreated_podman_container_gets_its_address_back() {
    let (l, podman) = setup();
    podman
        .run("ha", "lan", &[], &["sleep", "3600"])
        .expect("podman run");
    let (first, _) = eth0(&podman, "ha");
    // Another container takes the next address in between.
    podman
        .run("other", "lan", &[], &["sleep", "3600"])
        .expect("podman run other");
    podman.rm(&["ha"]).expect("podman rm");
    podman
        .run("filler", "lan", &[], &["sleep", "3600"])
        .expect("podman run filler");
    podman
        .run("ha", "lan", &[], &["sleep", "3600"])
        .expect("podman run again");
    assert_eq!(eth0(&podman, "ha").0, first, "the same name, the same IP");
    podman.rm(&["ha", "other", "filler"]).expect("podman rm");
    assert_no_leaks(&l, &podman, &[]);
}

/// `--mac-address`: podman sends `MAC=` in CNI_ARGS (and `runtimeConfig.mac`
/// to a plugin declaring the `mac` capability). The container gets that MAC,
/// a LAN host reaches it there, and `rm` leaves nothing.
#[test]
fn podman_mac_address_is_the_containers() {
    let (l, podman) = setup();
    let want = "02:42:c0:a8:02:77";
    let id = podman
        .run("mac", "lan", &["--mac-address", want], &["sleep", "3600"])
        .expect("podman run --mac-address");
    let (ip, mac) = eth0(&podman, "mac");
    assert_eq!(mac, want, "--mac-address was ignored");
    ping(&l.lab.client, ip.into(), 1, Duration::from_secs(5))
        .expect("a LAN host reaches the container");
    let neigh = l
        .lab
        .client
        .exec_ok(&["ip", "neigh", "show", &ip.to_string()])
        .expect("ip neigh");
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(want),
        "the LAN learned another MAC: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    let calls = podman.calls().expect("recorded calls");
    let add = calls
        .iter()
        .find(|c| c.command == "ADD" && c.container_id == id)
        .expect("ADD recorded");
    assert!(add.args.contains(&format!("MAC={want}")), "{}", add.args);
    podman.rm(&["mac"]).expect("podman rm");
    assert_no_leaks(&l, &podman, &[id]);
}
