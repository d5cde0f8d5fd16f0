//! `flatlan node bridge --uplink eth0` in the lab (issue 14 item 4): a
//! node namespace with its IP on eth0, a gateway and a LAN client pinging
//! the node every 20 ms, all on one switch.
//!
//! - the migration loses at most 3 pings and br0 has eth0's MAC, its
//!   addresses and routes, with eth0 as its port; a rerun is a no-op;
//! - with the gateway gone the command rolls back by itself to the exact
//!   original links, addresses and routes and exits non-zero; so does a
//!   failure injected at any step, and when the undo itself is refused at
//!   any step, the `ip` commands printed finish it exactly;
//! - a network manager seeded in `--root` (or a DHCP client process in the
//!   node's namespace) is refused with its snippet and nothing changes;
//!   `--force` proceeds.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use flatlan_e2e::{bin, require_root};
use netns_testkit::probe::{ping, ping_background, ping_finish};
use netns_testkit::{Netns, ProcHandle};
use nix::sys::signal::Signal;
use serde_json::Value;

const NODE_IP: &str = "10.78.0.11";
const GATEWAY: &str = "10.78.0.1";

/// The switch, gateway, client and node namespaces (dropped last to first
/// is fine: each is removed on drop, even when a test panics).
struct Lan {
    /// An empty `--root` by default: the host's /etc/netplan and
    /// /run/systemd/netif must not decide a lab test.
    root: tempfile::TempDir,
    node: Netns,
    client: Netns,
    gateway: Netns,
    _switch: Netns,
}

impl Lan {
    fn new() -> Lan {
        require_root();
        let switch = Netns::new("nb-switch").expect("netns");
        let gateway = Netns::new("nb-gw").expect("netns");
        let client = Netns::new("nb-client").expect("netns");
        let node = Netns::new("nb-node").expect("netns");
        let mut script = String::from(
            "link add sw0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0\nlink set sw0 up\n",
        );
        for (port, ns) in [("p-gw", &gateway), ("p-cl", &client), ("p-node", &node)] {
            script += &format!(
                "link add {port} type veth peer name eth0 netns {}\nlink set {port} master sw0 up\n",
                ns.name()
            );
        }
        switch.ip_batch(&script).expect("switch");
        for ns in [&gateway, &client, &node] {
            // No DAD in the lab: static addresses, and a tentative one
            // after a rollback would differ from the snapshot for a second.
            ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0"))
                .expect("thread")
                .expect("accept_dad");
            ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0"))
                .expect("thread")
                .expect("accept_dad");
        }
        gateway
            .ip_batch(&format!(
                "addr add {GATEWAY}/24 dev eth0\naddr add fd78::1/64 dev eth0 nodad\nlink set eth0 up\n"
            ))
            .expect("gateway");
        client
            .ip_batch("addr add 10.78.0.2/24 dev eth0\nlink set eth0 up\n")
            .expect("client");
        // A DHCP-looking primary with a lifetime, a labelled secondary, an
        // IPv6 address, both default routes (metrics kept) and one more
        // static route.
        node.ip_batch(&format!(
            "addr add {NODE_IP}/24 dev eth0 valid_lft 86400 preferred_lft 86400\n\
             addr add 10.78.0.12/24 dev eth0 label eth0:1\n\
             addr add fd78::11/64 dev eth0 nodad\n\
             link set eth0 up\n\
             route add default via {GATEWAY} metric 100 proto dhcp\n\
             route add 10.99.0.0/16 via 10.78.0.1 metric 50\n\
             route add ::/0 via fd78::1 metric 1024\n"
        ))
        .expect("node");
        ping(
            &client,
            NODE_IP.parse().expect("ip"),
            1,
            Duration::from_secs(5),
        )
        .expect("lab up");
        Lan {
            root: tempfile::tempdir().expect("an empty root: no manager"),
            node,
            client,
            gateway,
            _switch: switch,
        }
    }

    /// `env VARS flatlan node bridge ARGS`, with `--root` the lab's empty
    /// one unless ARGS has its own.
    fn argv<'a>(&'a self, exe: &'a str, env: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        let mut argv = vec!["env"];
        argv.extend_from_slice(env);
        argv.extend_from_slice(&[exe, "node", "bridge"]);
        argv.extend_from_slice(args);
        if !args.contains(&"--root") {
            argv.extend_from_slice(&["--root", self.root.path().to_str().expect("utf-8")]);
        }
        argv
    }

    fn flatlan(&self, args: &[&str]) -> Output {
        self.flatlan_env(&[], args)
    }

    fn flatlan_env(&self, env: &[&str], args: &[&str]) -> Output {
        let exe = bin("flatlan");
        let exe = exe.to_str().expect("utf-8 path");
        self.node
            .exec_timeout(&self.argv(exe, env, args), Duration::from_secs(60))
            .expect("runs")
    }

    /// How many steps the migration of eth0 takes (its `--dry-run` plan).
    fn plan_steps(&self) -> usize {
        let plan = self.flatlan(&["--uplink", "eth0", "--dry-run"]);
        assert!(plan.status.success(), "{}", text(&plan));
        String::from_utf8_lossy(&plan.stdout)
            .lines()
            .filter(|l| l.starts_with("  ip "))
            .count()
    }

    fn spawn_flatlan(&self, args: &[&str]) -> ProcHandle {
        let exe = bin("flatlan");
        let exe = exe.to_str().expect("utf-8 path");
        self.node.spawn(&self.argv(exe, &[], args)).expect("spawns")
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(ns: &Netns, argv: &[&str]) -> Value {
    let out = ns.exec_ok(argv).expect("ip -j");
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Links, addresses and routes (every table, both families), with the
/// fields that tick (lifetimes, counters) left out, as sorted lines.
fn snapshot(ns: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for l in json(ns, &["ip", "-j", "link", "show"])
        .as_array()
        .expect("links")
    {
        out.push(format!(
            "link {} {} master={} mtu={} up={}",
            l["ifname"], l["address"], l["master"], l["mtu"], l["operstate"]
        ));
    }
    for l in json(ns, &["ip", "-j", "addr", "show"])
        .as_array()
        .expect("addrs")
    {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let mut a = a.clone();
            if let Some(o) = a.as_object_mut() {
                o.remove("valid_life_time");
                o.remove("preferred_life_time");
            }
            out.push(format!("addr {} {a}", l["ifname"]));
        }
    }
    for fam in ["-4", "-6"] {
        for r in json(ns, &["ip", "-j", fam, "route", "show", "table", "all"])
            .as_array()
            .expect("routes")
        {
            out.push(format!("route {r}"));
        }
    }
    out.sort();
    out
}

/// The one address-carrying interface's routes, for the assertions.
fn routes(ns: &Netns, fam: &str) -> Vec<Value> {
    json(ns, &["ip", "-j", fam, "route", "show"])
        .as_array()
        .expect("routes")
        .clone()
}

fn addrs_of(ns: &Netns, dev: &str) -> Vec<String> {
    let v = json(ns, &["ip", "-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

#[test]
fn the_node_moves_into_br0_losing_at_most_3_pings_and_keeps_its_mac() {
    let lan = Lan::new();
    let mac = lan.node.link_mac("eth0").expect("mac");
    let pinger = ping_background(
        &lan.client,
        NODE_IP.parse().expect("ip"),
        Duration::from_millis(20),
        6,
    )
    .expect("ping");
    std::thread::sleep(Duration::from_millis(1500));
    let out = lan.flatlan(&["--uplink", "eth0"]);
    let run = ping_finish(pinger, 6).expect("ping ran");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    eprintln!(
        "node bridge: {} sent, {} lost, longest gap {} pings, longest silence {:.0} ms\n{t}",
        run.sent,
        run.lost(),
        run.longest_gap(),
        run.longest_silence_ms()
    );
    assert!(
        run.sent > 100,
        "the client pinged throughout: {} sent",
        run.sent
    );
    assert!(
        run.lost() <= 3,
        "lost {} pings (longest gap {}, silence {:.0} ms)\n{t}",
        run.lost(),
        run.longest_gap(),
        run.longest_silence_ms()
    );
    assert!(run.resumed(), "no replies at the end: {:?}", run.seqs());
    assert!(t.contains("moved eth0 into br0"), "{t}");
    assert!(t.contains("note: 10.78.0.11/24 has a lease"), "{t}");
    assert!(
        t.contains("runtime change") && t.contains("docs/bridge.md"),
        "{t}"
    );

    assert_eq!(
        lan.node.link_mac("br0").expect("br0"),
        mac,
        "br0 has eth0's MAC"
    );
    let eth0 = json(&lan.node, &["ip", "-j", "-d", "link", "show", "eth0"]);
    assert_eq!(eth0[0]["master"], "br0", "{eth0}");
    let br0 = json(&lan.node, &["ip", "-j", "-d", "link", "show", "br0"]);
    let info = &br0[0]["linkinfo"]["info_data"];
    assert_eq!(info["stp_state"], 0, "{info}");
    assert_eq!(info["forward_delay"], 0, "{info}");
    assert_eq!(br0[0]["mtu"], eth0[0]["mtu"]);
    assert_eq!(
        addrs_of(&lan.node, "br0"),
        ["10.78.0.11/24", "10.78.0.12/24", "fd78::11/64"]
    );
    assert!(addrs_of(&lan.node, "eth0").is_empty());
    let v4 = routes(&lan.node, "-4");
    let default = v4
        .iter()
        .find(|r| r["dst"] == "default")
        .expect("default route");
    assert_eq!(default["dev"], "br0", "{v4:?}");
    assert_eq!(default["metric"], 100, "{v4:?}");
    assert_eq!(default["protocol"], "dhcp", "{v4:?}");
    assert!(
        v4.iter()
            .any(|r| r["dst"] == "10.99.0.0/16" && r["dev"] == "br0" && r["metric"] == 50),
        "{v4:?}"
    );
    let v6 = routes(&lan.node, "-6");
    assert!(
        v6.iter()
            .any(|r| r["dst"] == "default" && r["dev"] == "br0" && r["metric"] == 1024),
        "{v6:?}"
    );
    ping(
        &lan.node,
        GATEWAY.parse().expect("ip"),
        2,
        Duration::from_secs(5),
    )
    .expect("node reaches the gateway");

    let before = snapshot(&lan.node);
    let again = lan.flatlan(&["--uplink", "eth0"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already a port of br0"),
        "{}",
        text(&again)
    );
    assert_eq!(snapshot(&lan.node), before, "a rerun changes nothing");
}

#[test]
fn an_unreachable_gateway_rolls_back_to_the_original_state() {
    let lan = Lan::new();
    // The gateway loses its addresses: the node's routes still name it,
    // but nothing answers for it any more.
    lan.gateway
        .ip_batch(&format!(
            "addr del {GATEWAY}/24 dev eth0\naddr del fd78::1/64 dev eth0\n"
        ))
        .expect("break the gateway");
    let before = snapshot(&lan.node);
    let out = lan.flatlan(&["--uplink", "eth0"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("the gateway 10.78.0.1 did not answer ARP through br0"),
        "{t}"
    );
    assert!(
        t.contains("rolled back: eth0 has its addresses, routes and MAC again"),
        "{t}"
    );
    assert_eq!(snapshot(&lan.node), before, "{t}");
    // And the node still works as before.
    ping(
        &lan.client,
        NODE_IP.parse().expect("ip"),
        2,
        Duration::from_secs(5),
    )
    .expect("reachable");
}

/// Until `bash -c 'exec -a ...'` has exec'd, its command line is bash's.
fn wait_for_exec(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"dhclient\0"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never became `dhclient`");
}

/// Writes `text` at `root/path`.
fn seed(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("seed");
}

#[test]
fn an_owning_manager_is_refused_with_its_snippet_and_force_proceeds() {
    let lan = Lan::new();
    let ifindex = String::from_utf8(
        lan.node
            .exec_ok(&["cat", "/sys/class/net/eth0/ifindex"])
            .expect("ifindex")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let mac = lan.node.link_mac("eth0").expect("mac");
    let before = snapshot(&lan.node);
    let cases = [
        (
            "etc/netplan/50-cloud-init.yaml",
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n".to_string(),
            "netplan",
            format!("macaddress: \"{mac}\""),
        ),
        (
            &*format!("run/NetworkManager/devices/{ifindex}"),
            "[device]\nmanaged=true\n".to_string(),
            "NetworkManager",
            format!("ethernet.cloned-mac-address {mac}"),
        ),
        (
            &*format!("run/systemd/netif/links/{ifindex}"),
            "ADMIN_STATE=configured\nOPER_STATE=routable\n".to_string(),
            "systemd-networkd",
            format!("MACAddress={mac}"),
        ),
    ]
    .map(|(p, t, m, s)| (p.to_string(), t, m, s));
    for (path, content, manager, snippet) in &cases {
        let root = tempfile::tempdir().expect("root");
        seed(root.path(), path, content);
        let out = lan.flatlan(&[
            "--uplink",
            "eth0",
            "--root",
            root.path().to_str().expect("utf-8"),
        ]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{manager}: {t}");
        assert!(t.contains(&format!("eth0 is managed by {manager}")), "{t}");
        assert!(t.contains(snippet.as_str()), "{manager}: {t}");
        assert!(t.contains("nothing was changed"), "{t}");
        assert_eq!(snapshot(&lan.node), before, "{manager}: {t}");
    }

    // A DHCP client for eth0, in the node's namespace only.
    let dhclient = lan
        .node
        .spawn(&["bash", "-c", "exec -a dhclient tail -f /dev/null eth0"])
        .expect("fake dhclient");
    let elsewhere = lan
        .client
        .spawn(&["bash", "-c", "exec -a dhclient tail -f /dev/null eth0"])
        .expect("another namespace's dhclient");
    let root = tempfile::tempdir().expect("root");
    let root = root.path().to_str().expect("utf-8").to_string();
    for p in [dhclient.pid(), elsewhere.pid()] {
        wait_for_exec(p);
    }
    let out = lan.flatlan(&["--uplink", "eth0", "--root", &root]);
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "eth0 is managed by dhclient (pid {})",
            dhclient.pid()
        )),
        "{t}"
    );
    assert!(
        !t.contains(&format!("pid {})", elsewhere.pid())),
        "another namespace's: {t}"
    );
    assert!(t.contains("dhclient br0"), "{t}");
    assert_eq!(snapshot(&lan.node), before, "{t}");

    let out = lan.flatlan(&["--uplink", "eth0", "--root", &root, "--force"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("warning: dhclient"), "{t}");
    assert_eq!(lan.node.link_mac("br0").expect("br0"), mac);
    drop((dhclient, elsewhere));
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let lan = Lan::new();
    let before = snapshot(&lan.node);
    let out = lan.flatlan(&["--uplink", "eth0", "--dry-run"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ip link set eth0 master br0"), "{t}");
    assert!(t.contains("ip addr add 10.78.0.11/24 dev br0"), "{t}");
    assert_eq!(snapshot(&lan.node), before);
}

#[test]
fn an_ipv6_gateway_is_checked_with_a_neighbour_solicitation() {
    let lan = Lan::new();
    let out = lan.flatlan(&["--uplink", "eth0", "--gateway", "fd78::1"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("the gateway fd78::1"), "{t}");
    assert!(t.contains("answered through br0"), "{t}");
    // And one that is not there is not taken for an answer.
    let lan = Lan::new();
    let before = snapshot(&lan.node);
    let out = lan.flatlan(&["--uplink", "eth0", "--gateway", "fd78::99"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("did not answer neighbour solicitations through br0"),
        "{t}"
    );
    assert_eq!(snapshot(&lan.node), before, "{t}");
}

#[test]
fn a_failure_at_any_step_is_undone_on_the_real_kernel() {
    let lan = Lan::new();
    let before = snapshot(&lan.node);
    let steps = lan.plan_steps();
    assert_eq!(steps, 14);
    for n in 0..steps {
        let var = format!("FLATLAN_TEST_BRIDGE_FAIL_AT={n}");
        let out = lan.flatlan_env(&[&var], &["--uplink", "eth0"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "step {n}: {t}");
        assert!(
            t.contains(&format!("step {n} (FLATLAN_TEST_BRIDGE_FAIL_AT)")),
            "{t}"
        );
        let undone = if n == 0 {
            "nothing was changed"
        } else {
            "rolled back: eth0 has its addresses, routes and MAC again and br0 is gone"
        };
        assert!(t.contains(undone), "step {n}: {t}");
        assert_eq!(snapshot(&lan.node), before, "step {n}: {t}");
    }
    ping(
        &lan.client,
        NODE_IP.parse().expect("ip"),
        2,
        Duration::from_secs(5),
    )
    .expect("reachable");
}

/// The rollback itself refused at each of its steps in turn (the
/// migration failing at its last step): either deleting the bridge did
/// the refused step too and the host is whole (exit 1), or the host is
/// half migrated (exit 3) and the `ip` commands printed, run as printed,
/// make it whole. Exit 3's message is only worth something if that holds.
#[test]
fn a_refused_undo_step_is_printed_as_a_command_that_finishes_the_rollback() {
    let lan = Lan::new();
    let before = snapshot(&lan.node);
    let last = lan.plan_steps() - 1;
    let (mut whole, mut by_hand) = (0, 0);
    for k in 0..last {
        let out = lan.flatlan_env(
            &[
                &format!("FLATLAN_TEST_BRIDGE_FAIL_AT={last}"),
                &format!("FLATLAN_TEST_BRIDGE_UNDO_FAIL_AT={k}"),
            ],
            &["--uplink", "eth0"],
        );
        let t = text(&out);
        assert!(
            t.contains(&format!("step {last} (FLATLAN_TEST_BRIDGE_FAIL_AT)")),
            "{t}"
        );
        match out.status.code() {
            Some(1) => {
                assert!(t.contains("rolled back: eth0 has"), "undo {k}: {t}");
                whole += 1;
            }
            Some(3) => {
                assert!(t.contains("ROLLBACK INCOMPLETE, finish it by hand"), "{t}");
                let stderr = String::from_utf8_lossy(&out.stderr);
                let todo: Vec<&str> = stderr
                    .lines()
                    .filter_map(|l| l.strip_prefix("  ip "))
                    .map(|l| l.split("   # ").next().unwrap_or(l))
                    .collect();
                assert!(!todo.is_empty(), "undo {k}: {t}");
                assert!(
                    t.contains(&format!("step {k} (FLATLAN_TEST_BRIDGE_UNDO_FAIL_AT)")),
                    "undo {k}: {t}"
                );
                for c in todo {
                    lan.node
                        .exec_ok(&["sh", "-c", &format!("ip {c}")])
                        .unwrap_or_else(|e| panic!("undo {k}: `ip {c}`: {e}\n{t}"));
                }
                by_hand += 1;
            }
            other => panic!("undo {k}: exit {other:?}\n{t}"),
        }
        assert_eq!(snapshot(&lan.node), before, "undo {k}: {t}");
    }
    // The plan has both kinds of step: bridge-side ones (its addresses,
    // routes, the port) and uplink-side ones (addresses and routes back).
    assert!(whole > 0 && by_hand > 0, "{whole} whole, {by_hand} by hand");
}

/// An SSH session dying mid-check sends SIGHUP; Ctrl-C SIGINT, a service
/// manager SIGTERM. flatlan holds them until the check ends, then rolls
/// back: the node is never left half migrated.
#[test]
fn a_signal_during_the_gateway_check_is_held_and_rolls_back() {
    let lan = Lan::new();
    let before = snapshot(&lan.node);
    for sig in [Signal::SIGHUP, Signal::SIGTERM] {
        // Nobody answers for .99: the check takes its whole 4.5 s.
        let mut p = lan.spawn_flatlan(&["--uplink", "eth0", "--gateway", "10.78.0.99"]);
        p.wait_for_log("do not interrupt", Duration::from_secs(30))
            .expect("the check starts");
        p.kill(sig).expect("signal");
        let status = p.wait_timeout(Duration::from_secs(30)).expect("exits");
        let t = p.log();
        assert_eq!(status.code(), Some(1), "{sig}: {status} {t}");
        assert!(
            t.contains(
                "checking the gateway 10.78.0.99 through br0 (at most 4.5 s; do not interrupt)"
            ),
            "{t}"
        );
        assert!(t.contains(&format!("interrupted by {sig}")), "{t}");
        assert!(t.contains("rolled back: eth0 has"), "{t}");
        assert_eq!(snapshot(&lan.node), before, "{sig}: {t}");
    }
}

/// The node as NetworkManager configures it: its address flagged
/// noprefixroute and NM's own prefix route (`proto kernel`, with the
/// address as its source), which the kernel flushes when the address goes.
fn network_manager_style(lan: &Lan) {
    lan.node
        .ip_batch(&format!(
            "route del ::/0 via fd78::1\n\
             addr flush dev eth0 scope global\n\
             addr add {NODE_IP}/24 dev eth0 noprefixroute\n\
             route add 10.78.0.0/24 dev eth0 proto kernel scope link src {NODE_IP} metric 100\n\
             route add default via {GATEWAY} dev eth0 proto dhcp metric 100\n"
        ))
        .expect("NetworkManager-style addressing");
}

#[test]
fn network_managers_prefix_route_moves_to_br0_and_comes_back_on_rollback() {
    let lan = Lan::new();
    network_manager_style(&lan);
    let out = lan.flatlan(&["--uplink", "eth0"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let v4 = routes(&lan.node, "-4");
    assert!(
        v4.iter()
            .any(|r| r["dst"] == "10.78.0.0/24" && r["dev"] == "br0" && r["protocol"] == "kernel"),
        "{v4:?}"
    );
    assert!(
        v4.iter()
            .any(|r| r["dst"] == "default" && r["dev"] == "br0"),
        "{v4:?}"
    );
    ping(
        &lan.node,
        GATEWAY.parse().expect("ip"),
        2,
        Duration::from_secs(5),
    )
    .expect("node reaches the gateway through br0");

    // And back, when nobody answers the check.
    let lan = Lan::new();
    network_manager_style(&lan);
    let before = snapshot(&lan.node);
    let out = lan.flatlan(&["--uplink", "eth0", "--gateway", "10.78.0.99"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("rolled back: eth0 has"), "{t}");
    assert_eq!(snapshot(&lan.node), before, "{t}");
}

/// A macvlan on the uplink (the shim a Pi-hole or Home Assistant container
/// uses to reach its host) makes the kernel refuse the NIC as a bridge
/// port (EBUSY): refused up front, naming it, nothing changed.
#[test]
fn an_uplink_with_a_macvlan_on_it_is_refused_naming_it() {
    let lan = Lan::new();
    lan.node
        .ip_batch("link add ha-shim link eth0 type macvlan mode bridge\n")
        .expect("macvlan");
    let before = snapshot(&lan.node);
    let out = lan.flatlan(&["--uplink", "eth0"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("eth0 carries ha-shim (a macvlan)"), "{t}");
    assert!(t.contains("nothing was changed"), "{t}");
    assert_eq!(snapshot(&lan.node), before, "{t}");
}
