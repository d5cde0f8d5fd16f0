//! `flatlan doctor` on a lab node (issue 14, item 5): it passes on a node
//! set up right, and finds each misconfiguration seeded into a node of
//! its own, with the fix, in the report and in `--json` alike.
//!
//! Each test builds one namespace (the node: br0 with a veth uplink) and
//! a temp root (conflist, node slice, speaker config), and runs the real
//! binary inside the namespace with `ip netns exec`, so /proc/sys/net,
//! links and nft are that namespace's. Nothing touches the host's.

use std::path::Path;

use flatlan_e2e::{bin, require_root};
use netns_testkit::Netns;
use serde_json::{json, Value};
use tempfile::TempDir;

const SLICE: &str = "192.168.2.208/28";
const DHCP: &str = "192.168.2.100-192.168.2.199";
const POOL: &str = "192.168.2.241-192.168.2.250";

struct Node {
    ns: Netns,
    /// The LAN end of the uplink veth, so the node has only its own side.
    _lan: Netns,
    root: TempDir,
}

/// What a node needs to pass; `Seed` switches one thing off.
#[derive(Default)]
struct Seed {
    no_bridge: bool,
    not_enslaved: bool,
    forwarding_off: bool,
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

impl Node {
    fn new(seed: Seed) -> Node {
        require_root();
        let ns = Netns::new("doctor").expect("namespace");
        let lan = Netns::new("doctor-lan").expect("LAN namespace");
        let mut script = format!(
            "link add eth0 type veth peer name lan0 netns {}\nlink set eth0 up\n",
            lan.name()
        );
        if !seed.no_bridge {
            script +=
                "link add br0 type bridge\nlink set br0 up\naddr add 192.168.2.10/24 dev br0\n";
            if !seed.not_enslaved {
                script += "link set eth0 master br0\n";
            }
        }
        ns.ip_batch(&script).expect("links");
        lan.ip_batch("link set lan0 up\n").expect("LAN end up");
        let mut sysctls = vec![
            "net.bridge.bridge-nf-call-iptables=1",
            "net.bridge.bridge-nf-call-ip6tables=1",
            "net.ipv4.conf.all.rp_filter=2",
        ];
        if !seed.forwarding_off {
            sysctls.push("net.ipv4.ip_forward=1");
        }
        // A new namespace copies the host's IPv4 conf; netns-testkit resets
        // the ARP settings of all and default (so br0's) to the kernel's,
        // rp_filter is ours to pin: a host's strict default would make
        // every good node warn.
        if !seed.no_bridge {
            sysctls.push("net.ipv4.conf.br0.rp_filter=0");
        }
        for s in sysctls {
            ns.exec_ok(&["sysctl", "-qw", s])
                .expect("sysctl in the namespace");
        }
        let root = tempfile::tempdir().expect("root");
        let conflist = json!({
            "cniVersion": "1.0.0", "name": "lan",
            "plugins": [{
                "type": "flatlan", "bridge": "br0",
                "ipam": {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
                         "rangeFile": "/var/lib/flatlan/node-range.json"}
            }]
        });
        write(
            root.path(),
            "etc/cni/net.d/10-flatlan.conflist",
            &conflist.to_string(),
        );
        write(
            root.path(),
            "var/lib/flatlan/node-range.json",
            &json!({ "ranges": [SLICE] }).to_string(),
        );
        write(
            root.path(),
            "etc/flatlan-speaker/speaker.yaml",
            "listen: 0.0.0.0:7946\nvips:\n  - address: 192.168.2.240\n",
        );
        Node {
            ns,
            _lan: lan,
            root,
        }
    }

    fn sysctl(&self, s: &str) {
        self.ns
            .exec_ok(&["sysctl", "-qw", s])
            .expect("sysctl in the namespace");
    }

    /// An nft input chain in the node's namespace with `policy` and one
    /// `rule`.
    fn input_chain(&self, policy: &str, rule: &str) {
        let script = format!(
            "add table inet fw; add chain inet fw input {{ type filter hook input priority 0; policy {policy}; }}; add rule inet fw input {rule}"
        );
        self.ns
            .exec_ok(&["nft", &script])
            .expect("nft in the namespace");
    }

    /// Runs doctor twice (text, --json) with the default pools plus `extra`.
    fn doctor(&self, extra: &[&str]) -> Run {
        let flatlan = bin("flatlan");
        let root = self.root.path().to_str().expect("utf-8 root");
        let mut base = vec![
            flatlan.to_str().expect("utf-8 path"),
            "doctor",
            "--root",
            root,
            "--dhcp-pool",
            DHCP,
        ];
        if !extra.contains(&"--lb-pool") {
            base.extend(["--lb-pool", POOL]);
        }
        base.extend(extra);
        let text = self.ns.exec(&base).expect("doctor runs");
        base.push("--json");
        let js = self.ns.exec(&base).expect("doctor --json runs");
        let out = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
        let json: Value = serde_json::from_str(&out(&js))
            .unwrap_or_else(|e| panic!("--json is JSON ({e}): {}", out(&js)));
        Run {
            code: text.status.code(),
            json_code: js.status.code(),
            text: out(&text) + &String::from_utf8_lossy(&text.stderr),
            json,
        }
    }
}

struct Run {
    code: Option<i32>,
    json_code: Option<i32>,
    text: String,
    json: Value,
}

impl Run {
    /// The finding of `check` with `severity` whose what holds `what`,
    /// present in both outputs, with `fix` in its fix text.
    fn has(&self, check: &str, severity: &str, what: &str, fix: &str) {
        let found = self.json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| {
                f["check"] == check
                    && f["severity"] == severity
                    && f["what"].as_str().is_some_and(|w| w.contains(what))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no {severity} {check} finding with {what:?} in --json:\n{:#}\ntext:\n{}",
                    self.json, self.text
                )
            });
        let f = found["fix"].as_str().unwrap_or_default();
        assert!(f.contains(fix), "fix {f:?} lacks {fix:?}");
        let label = severity.to_uppercase();
        let line = format!("{label:<4} {check}: ");
        let at = self
            .text
            .lines()
            .position(|l| l.starts_with(&line) && l.contains(what))
            .unwrap_or_else(|| panic!("no {line}...{what} line in:\n{}", self.text));
        let after: String = self
            .text
            .lines()
            .skip(at + 1)
            .take(8)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            after.contains(fix.lines().next().unwrap_or(fix)),
            "the text report's fix for {check} lacks {fix:?}:\n{}",
            self.text
        );
        if severity == "fail" {
            assert_eq!(self.code, Some(1), "a FAIL exits 1:\n{}", self.text);
            assert_eq!(self.json_code, Some(1));
        }
    }
}

#[test]
fn a_good_node_passes_with_every_check_ok() {
    let n = Node::new(Seed::default());
    let r = n.doctor(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json_code, Some(0));
    let findings = r.json["findings"].as_array().expect("findings");
    for f in findings {
        assert_eq!(f["severity"], "ok", "not OK: {f:#}\n{}", r.text);
    }
    for check in [
        "conflist",
        "cni_config",
        "br_netfilter",
        "ip_forward",
        "bridge",
        "uplink",
        "rp_filter",
        "kube_proxy",
        "node_range",
        "overlap",
        "firewall",
    ] {
        assert!(
            findings.iter().any(|f| f["check"] == check),
            "no {check} finding:\n{}",
            r.text
        );
    }
    assert!(r.text.contains("0 FAIL, 0 WARN"), "{}", r.text);
    assert_eq!(r.json["ok"], true);
}

#[test]
fn bridge_nf_call_off_fails() {
    let n = Node::new(Seed::default());
    n.sysctl("net.bridge.bridge-nf-call-iptables=0");
    n.doctor(&[]).has(
        "br_netfilter",
        "fail",
        "net.bridge.bridge-nf-call-iptables is 0",
        "sysctl -w net.bridge.bridge-nf-call-iptables=1",
    );
}

#[test]
fn br_netfilter_absent_from_a_seeded_proc_fails_with_modprobe() {
    let n = Node::new(Seed::default());
    // The module cannot be unloaded on a shared host: a /proc without
    // sys/net/bridge is what a node without it looks like.
    let proc = tempfile::tempdir().expect("proc");
    write(proc.path(), "sys/net/ipv4/ip_forward", "1\n");
    let r = n.doctor(&["--proc", proc.path().to_str().expect("utf-8")]);
    r.has(
        "br_netfilter",
        "fail",
        "br_netfilter module is not loaded",
        "modprobe br_netfilter",
    );
    let fails: Vec<&Value> = r.json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "fail")
        .collect();
    assert_eq!(fails.len(), 1, "only br_netfilter fails: {}", r.text);
}

#[test]
fn ip_forward_off_fails() {
    let n = Node::new(Seed {
        forwarding_off: true,
        ..Seed::default()
    });
    n.doctor(&[]).has(
        "ip_forward",
        "fail",
        "net.ipv4.ip_forward is 0",
        "sysctl -w net.ipv4.ip_forward=1",
    );
}

#[test]
fn a_missing_bridge_fails() {
    let n = Node::new(Seed {
        no_bridge: true,
        ..Seed::default()
    });
    n.doctor(&[]).has(
        "bridge",
        "fail",
        "bridge br0 (the conflist's `bridge`) does not exist",
        "flatlan node bridge --uplink eth0",
    );
}

#[test]
fn an_uplink_outside_the_bridge_fails() {
    let n = Node::new(Seed {
        not_enslaved: true,
        ..Seed::default()
    });
    n.doctor(&[]).has(
        "uplink",
        "fail",
        "br0 has no uplink",
        "flatlan node bridge --uplink eth0",
    );
    n.doctor(&["--uplink", "eth0"]).has(
        "uplink",
        "fail",
        "uplink eth0 is not enslaved to br0",
        "ip link set eth0 master br0",
    );
}

#[test]
fn a_slice_overlapping_a_pool_fails() {
    let n = Node::new(Seed::default());
    n.doctor(&["--lb-pool", "192.168.2.220-192.168.2.230"]).has(
        "overlap",
        "fail",
        "overlaps LB pool 192.168.2.220-192.168.2.230",
        "to 192.168.2.224-192.168.2.230",
    );
}

#[test]
fn a_pool_overlapping_the_dhcp_pool_fails() {
    let n = Node::new(Seed::default());
    n.doctor(&["--lb-pool", "192.168.2.190-192.168.2.205"]).has(
        "overlap",
        "fail",
        "DHCP pool 192.168.2.100-192.168.2.199 (--dhcp-pool): 192.168.2.190-192.168.2.199",
        "to 192.168.2.200-192.168.2.205",
    );
}

#[test]
fn the_gateway_in_a_pool_fails() {
    let n = Node::new(Seed::default());
    n.doctor(&["--lb-pool", "192.168.2.0/29"]).has(
        "overlap",
        "fail",
        "gateway 192.168.2.1 (conflist ipam.gateway)",
        "192.168.2.0 and 192.168.2.2-192.168.2.7",
    );
}

#[test]
fn kube_ipvs0_without_strict_arp_fails_and_with_it_passes() {
    let n = Node::new(Seed::default());
    // kube-proxy makes a dummy link; this kernel has no dummy driver, and
    // doctor goes by the name.
    n.ns.ip_batch("link add kube-ipvs0 type bridge\n")
        .expect("kube-ipvs0");
    n.doctor(&[]).has(
        "kube_proxy",
        "fail",
        "IPVS mode (the kube-ipvs0 link exists) without strictARP",
        "strictARP: true",
    );
    n.sysctl("net.ipv4.conf.all.arp_ignore=1");
    n.sysctl("net.ipv4.conf.all.arp_announce=2");
    let r = n.doctor(&[]);
    assert_eq!(r.code, Some(0), "{}", r.text);
    r.has("kube_proxy", "ok", "with strict ARP", "");
}

#[test]
fn strict_rp_filter_warns() {
    let n = Node::new(Seed::default());
    n.sysctl("net.ipv4.conf.all.rp_filter=1");
    let r = n.doctor(&[]);
    r.has(
        "rp_filter",
        "warn",
        "net.ipv4.conf.all.rp_filter = 1",
        "sysctl -w net.ipv4.conf.all.rp_filter=2",
    );
    assert_eq!(r.code, Some(0), "a WARN alone exits 0:\n{}", r.text);
}

#[test]
fn a_competing_conflist_that_sorts_first_is_named() {
    let n = Node::new(Seed::default());
    write(
        n.root.path(),
        "etc/cni/net.d/05-cilium.conflist",
        r#"{"cniVersion": "0.3.1", "name": "cilium", "plugins": [{"type": "cilium-cni"}]}"#,
    );
    n.doctor(&[]).has(
        "cni_config",
        "fail",
        "05-cilium.conflist wins",
        "--name 00-flatlan.conflist",
    );
}

#[test]
fn a_firewall_dropping_the_heartbeat_port_fails() {
    let n = Node::new(Seed::default());
    n.input_chain("accept", "udp dport 7946 counter drop");
    n.doctor(&[]).has(
        "firewall",
        "fail",
        "UDP port 7946 (heartbeats) is dropped",
        "udp dport 7946 accept",
    );
    // The port comes from the speaker config: another port is not blocked.
    write(
        n.root.path(),
        "etc/flatlan-speaker/speaker.yaml",
        "listen: 0.0.0.0:7000\n",
    );
    let r = n.doctor(&[]);
    r.has("firewall", "ok", "UDP port 7000", "");
}

/// A heartbeat accept with a rate limit under a drop policy: heartbeats
/// above the rate are dropped (20 a second from each peer), so it is a
/// warning naming the rule, not "passes".
#[test]
fn a_rate_limited_heartbeat_accept_is_a_warning() {
    let n = Node::new(Seed::default());
    n.input_chain("drop", "udp dport 7946 limit rate 10/second accept");
    n.doctor(&[]).has(
        "firewall",
        "warn",
        "limit rate 10/second (heartbeats are 20 a second from each peer) accept",
        "udp dport 7946 accept",
    );
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let n = Node::new(Seed::default());
    let flatlan = bin("flatlan");
    let flatlan = flatlan.to_str().expect("utf-8 path");
    for args in [
        vec!["--lb-pool", "nonsense"],
        vec!["--dhcp-pool"],
        vec!["--frobnicate"],
    ] {
        let mut argv = vec![flatlan, "doctor", "--json"];
        argv.extend(args.iter().copied());
        let o = n.ns.exec(&argv).expect("doctor runs");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(args[0]) && !err.contains("panicked"), "{err}");
    }
    write(
        n.root.path(),
        "etc/cni/net.d/10-flatlan.conflist",
        "{\"plugins\": [{\"type\": \"flatlan\"",
    );
    write(
        n.root.path(),
        "etc/flatlan-speaker/speaker.yaml",
        "listen: [\n",
    );
    let r = n.doctor(&[]);
    assert_eq!(r.code, Some(1), "{}", r.text);
    assert!(!r.text.contains("panicked"), "{}", r.text);
    r.has("speaker_config", "fail", "speaker.yaml", "fix the field");
}

#[test]
fn kube_proxy_saying_ipvs_on_loopback_without_strict_arp_fails() {
    use std::io::{Read, Write};
    let n = Node::new(Seed::default());
    // kube-proxy's metrics port, in the node's namespace only.
    let listener =
        n.ns.run(|| std::net::TcpListener::bind("127.0.0.1:10249"))
            .expect("namespace")
            .expect("bind 127.0.0.1:10249 in the namespace");
    let server = std::thread::spawn(move || {
        // One connection per doctor run (text, then --json).
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut req = [0u8; 512];
            let n = s.read(&mut req).unwrap_or(0);
            let asked = String::from_utf8_lossy(&req[..n]).starts_with("GET /proxyMode ");
            let body = if asked { "ipvs" } else { "" };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    n.doctor(&[]).has(
        "kube_proxy",
        "fail",
        "IPVS mode (127.0.0.1:10249/proxyMode says ipvs) without strictARP",
        "--kube-proxy-arg=ipvs-strict-arp=true",
    );
    server.join().expect("server thread");
}

#[test]
fn iptables_rules_blocking_the_heartbeat_port_fail_too() {
    // iptables-nft: seen through nft's JSON.
    let n = Node::new(Seed::default());
    n.ns.exec_ok(&[
        "iptables", "-A", "INPUT", "-p", "udp", "--dport", "7946", "-j", "REJECT",
    ])
    .expect("iptables in the namespace");
    n.doctor(&[]).has(
        "firewall",
        "fail",
        "UDP port 7946 (heartbeats) is dropped",
        "iptables -I INPUT -p udp --dport 7946 -j ACCEPT",
    );
    // Legacy iptables, invisible to nft: a drop policy with only ssh open.
    let n = Node::new(Seed::default());
    for rule in [
        &["-P", "INPUT", "DROP"][..],
        &[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ],
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ] {
        let mut argv = vec!["iptables-legacy"];
        argv.extend(rule);
        n.ns.exec_ok(&argv)
            .expect("iptables-legacy in the namespace");
    }
    n.doctor(&[]).has(
        "firewall",
        "fail",
        "iptables-legacy chain INPUT: policy drop, and no rule accepts UDP port 7946",
        "udp dport 7946 accept",
    );
}

#[test]
fn on_k3s_the_flannel_config_left_behind_is_named() {
    let n = Node::new(Seed::default());
    let root = n.root.path();
    // A k3s node: flatlan's conflist in k3s's conf dir, and flannel's
    // from before --flannel-backend=none still there, sorting first.
    let k3s = "var/lib/rancher/k3s/agent/etc/cni/net.d";
    let ours =
        std::fs::read_to_string(root.join("etc/cni/net.d/10-flatlan.conflist")).expect("conflist");
    std::fs::remove_dir_all(root.join("etc/cni")).expect("rm generic conf dir");
    write(root, &format!("{k3s}/10-flatlan.conflist"), &ours);
    write(
        root,
        &format!("{k3s}/10-flannel.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "flannel"}]}"#,
    );
    let r = n.doctor(&[]);
    r.has(
        "cni_config",
        "fail",
        "10-flannel.conflist wins: it sorts before 10-flatlan.conflist in /var/lib/rancher/k3s/agent/etc/cni/net.d",
        "--flannel-backend=none",
    );
    assert!(
        r.text
            .contains("note: CNI conf dir /var/lib/rancher/k3s/agent/etc/cni/net.d (k3s"),
        "{}",
        r.text
    );
}

#[test]
fn a_node_address_in_a_pool_fails() {
    let n = Node::new(Seed::default());
    n.doctor(&["--lb-pool", "192.168.2.8-192.168.2.12"]).has(
        "overlap",
        "fail",
        "node address 192.168.2.10 (br0) overlaps LB pool 192.168.2.8-192.168.2.12",
        "192.168.2.8-192.168.2.9 and 192.168.2.11-192.168.2.12",
    );
}
