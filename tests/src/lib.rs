//! Shared helpers for flatlan's end-to-end tests: where the real binaries
//! are, and a lab with the flatlan plugin configured on every node.
//!
//! Each test builds its own lab (uniquely named namespaces, removed on drop
//! even when the test panics) and its own store directories, so tests run
//! in parallel and never touch the host namespace.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::{Lab, LabConfig, Netns};
use serde_json::{json, Value};
use tempfile::TempDir;

pub use netns_testkit::flatlan::{
    node_slice, node_slice6, plugin_conf, plugin_conf_dual, SERVICE_CIDR,
};

/// A binary built by `cargo build --workspace --bins` (for `flatlan`,
/// `FLATLAN_PLUGIN` wins: CI runs some suites against the static plugin
/// `scripts/build-release` ships).
pub fn bin(name: &str) -> PathBuf {
    netns_testkit::flatlan::sibling_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails loudly instead of skipping when not root.
pub fn require_root() {
    netns_testkit::require_root().expect("these tests need root: run them via scripts/test");
}

/// A single-plugin conflist around [`plugin_conf`].
pub fn network(state: &Path, node: usize, ranges: &[&str]) -> CniNetwork {
    netns_testkit::flatlan::network(state, node, ranges, &bin_dir()).expect("valid conflist")
}

/// The directory with `flatlan`, then Debian's reference plugins.
pub fn bin_dir() -> PathBuf {
    bin("flatlan")
        .parent()
        .map(Path::to_path_buf)
        .expect("binary directory")
}

pub fn reference_plugins() -> PathBuf {
    let p = PathBuf::from("/usr/lib/cni");
    assert!(
        p.join("bridge").exists(),
        "containernetworking-plugins is not installed: run scripts/setup-deps"
    );
    p
}

/// A lab plus per-node flatlan state directories with a fixed boot ID.
pub struct FlatLab {
    pub lab: Lab,
    pub state: TempDir,
}

impl FlatLab {
    pub fn new(config: LabConfig) -> FlatLab {
        require_root();
        let lab = config.build().expect("build lab");
        let state = tempfile::tempdir().expect("tempdir");
        netns_testkit::flatlan::init_state(state.path(), lab.nodes.len()).expect("state dirs");
        FlatLab { lab, state }
    }

    pub fn node_ns(&self, node: usize) -> &Netns {
        &self.lab.nodes[node - 1].ns
    }

    pub fn network(&self, node: usize) -> CniNetwork {
        network(self.state.path(), node, &[])
    }

    /// The node's network with the flatlan plugin config edited by `edit`.
    pub fn network_with(&self, node: usize, edit: impl FnOnce(&mut Value)) -> CniNetwork {
        let mut conf = plugin_conf(self.state.path(), node, &[]).expect("plugin config");
        edit(&mut conf);
        let list = json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
        CniNetwork::new(list, vec![bin_dir()]).expect("valid conflist")
    }

    /// The node's dual-stack network ([`plugin_conf_dual`]).
    pub fn network_dual(&self, node: usize) -> CniNetwork {
        let conf = plugin_conf_dual(self.state.path(), node).expect("plugin config");
        let list = json!({"cniVersion": "1.1.0", "name": "lan", "plugins": [conf]});
        CniNetwork::new(list, vec![bin_dir()]).expect("valid conflist")
    }

    pub fn data_dir(&self, node: usize) -> PathBuf {
        self.state.path().join(format!("node{node}")).join("data")
    }

    pub fn set_boot_id(&self, node: usize, id: &str) {
        let p = self
            .state
            .path()
            .join(format!("node{node}"))
            .join("boot_id");
        std::fs::write(p, format!("{id}\n")).expect("boot id");
    }

    /// Creates a pod namespace on `node` and ADDs it with flatlan.
    pub fn pod(&self, node: usize, name: &str) -> Pod {
        self.pod_on(&self.network(node), node, name)
    }

    /// Like [`FlatLab::pod`], through a given network (conflist).
    pub fn pod_on(&self, net: &CniNetwork, node: usize, name: &str) -> Pod {
        self.pod_as(net, node, name, name)
    }

    /// A pod whose namespace is labelled `ns_label` and whose Kubernetes
    /// name is `pod_name` (a restarted pod gets a new sandbox namespace).
    pub fn pod_as(&self, net: &CniNetwork, node: usize, ns_label: &str, pod_name: &str) -> Pod {
        let name = pod_name;
        let ns = self.lab.add_pod_netns(node, ns_label).expect("pod netns");
        let mut att = Attachment::new(&format!("ctr-{ns_label}"), &ns);
        att.args = vec![
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), name.into()),
        ];
        let result = net
            .add(self.node_ns(node), &att)
            .unwrap_or_else(|e| panic!("ADD {name} on node{node}: {e}"));
        let ip = pod_ipv4(&result);
        Pod {
            ns,
            att,
            result,
            ip,
            node,
        }
    }
}

pub struct Pod {
    pub ns: Netns,
    pub att: Attachment,
    pub result: Value,
    pub ip: Ipv4Addr,
    pub node: usize,
}

/// The pod's IPv4 address from a CNI result.
pub fn pod_ipv4(result: &Value) -> Ipv4Addr {
    netns_testkit::flatlan::ipv4_of(result)
        .unwrap_or_else(|| panic!("no IPv4 address in result {result}"))
}

/// The pod's IPv6 address from a CNI result.
pub fn pod_ipv6(result: &Value) -> Ipv6Addr {
    netns_testkit::flatlan::ipv6_of(result)
        .unwrap_or_else(|| panic!("no IPv6 address in result {result}"))
}

/// Link names in a namespace (from `ip -j link`).
pub fn links(ns: &Netns) -> Vec<String> {
    let out = ns.exec_ok(&["ip", "-j", "link", "show"]).expect("ip link");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// flatlan's host veths on a node.
pub fn pod_veths(ns: &Netns) -> Vec<String> {
    links(ns)
        .into_iter()
        .filter(|l| l.starts_with("fl") && l.len() == 14)
        .collect()
}

/// The store as JSON, read under its shared lock, so a commit in flight is
/// waited out rather than raced. No store yet is an empty store; any error
/// panics, so it cannot read as "nothing leaked".
pub fn store_state(data_dir: &Path) -> Value {
    let state = flatlan_ipam::Store::new(data_dir, "lan")
        .and_then(|s| s.peek())
        .unwrap_or_else(|e| panic!("reading the store in {}: {e}", data_dir.display()));
    serde_json::to_value(state).expect("the store serializes")
}

pub fn allocation_count(data_dir: &Path) -> usize {
    store_state(data_dir)["allocations"]
        .as_array()
        .map_or(0, Vec::len)
}

/// What a raw plugin run printed, for inputs a well-formed invocation
/// cannot express (malformed JSON, missing variables).
pub struct RawRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl RawRun {
    /// The CNI error JSON's `code`.
    pub fn cni_code(&self) -> Option<u64> {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v["code"].as_u64())
    }
}

/// Runs `flatlan` inside `node` with exactly `env` and `stdin`.
pub fn run_raw(node: &Netns, env: &[(&str, &str)], stdin: &[u8]) -> RawRun {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name()])
        .arg(bin("flatlan"))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flatlan");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin);
    }
    // A hung plugin must fail the test, not hang CI.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.expect("wait flatlan"),
        Err(_) => {
            // Still unreaped, so this PID is the child we started.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("flatlan did not finish within 30 s");
        }
    };
    RawRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CNI error code of a failed conflist operation.
pub fn error_code(e: &netns_testkit::Error) -> Option<u32> {
    e.cni_code()
}

/// Waits (bounded) for background probe-aheads started by ADD to finish, so
/// a leak check does not race a store commit in flight.
pub fn settle_store(data_dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        // A marker older than the plugin's 5 s lease belongs to an ADD that
        // died before starting the probe; the plugin ignores it, and so do we.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let started = store_state(data_dir)["ahead_started"].as_u64();
        if started.is_none_or(|t| now.saturating_sub(t) >= 6) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("background probe-ahead did not finish within 10 s");
}

/// `flatlan ipam ls ARGS` for a node's store, run inside the node, with
/// the lab node's boot ID file (next to its data directory): its stdout.
pub fn ipam_ls_with(node: &Netns, data_dir: &Path, args: &[&str]) -> String {
    let dir = data_dir.display().to_string();
    let boot_id = data_dir.with_file_name("boot_id").display().to_string();
    let flatlan = bin("flatlan").display().to_string();
    let mut argv = vec![
        flatlan.as_str(),
        "ipam",
        "ls",
        "--data-dir",
        &dir,
        "--boot-id-path",
        &boot_id,
    ];
    argv.extend_from_slice(args);
    let out = node.exec_ok(&argv).expect("flatlan ipam ls");
    String::from_utf8(out.stdout).expect("ipam ls prints UTF-8")
}

/// `flatlan ipam ls --json` for a node's store (see [`ipam_ls_with`]).
pub fn ipam_ls(node: &Netns, data_dir: &Path) -> Vec<Value> {
    serde_json::from_str::<Value>(&ipam_ls_with(node, data_dir, &["--json"]))
        .expect("ipam ls --json")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Asserts that `ipam ls` on the node lists `ip` as quarantined, with the
/// MAC of the device that answered the probe.
pub fn assert_quarantined(node: &Netns, data_dir: &Path, ip: IpAddr, mac: &str) {
    let rows = ipam_ls(node, data_dir);
    let q = rows
        .iter()
        .find(|r| r["ip"] == ip.to_string())
        .unwrap_or_else(|| panic!("{ip} not listed: {rows:?}"));
    assert!(
        q["state"].as_str().unwrap_or("").starts_with("quarantined"),
        "{q}"
    );
    assert_eq!(q["mac"], mac, "{q}");
}

/// What a store directory holds after two or more commits: the lock, the
/// state, and the state before the last commit, which the next commit
/// reuses (ipam/src/store.rs). Anything else is a leak.
pub const STORE_FILES: [&str; 3] = ["lock", "state.json", "state.json.prev"];

/// The files in a node's store directory, sorted; compare with [`STORE_FILES`].
pub fn store_files(data_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data_dir.join("lan"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The pod interface's MAC from a CNI result; panics if absent, so two
/// missing fields can never compare equal.
pub fn pod_mac(result: &Value) -> String {
    netns_testkit::flatlan::mac_of(result).unwrap_or_else(|| panic!("no pod interface in {result}"))
}

/// Starts capturing on `client`'s eth0 and returns once the socket is open:
/// the thread yields the instant of the first gratuitous ARP for `vip`
/// from a MAC other than `old` (a new owner's takeover), or `None` after
/// `window`. Start it before the owner is killed.
pub fn garp_from_another_mac(
    client: &Netns,
    vip: Ipv4Addr,
    old: flatlan_l2::mac::MacAddr,
    window: std::time::Duration,
) -> std::thread::JoinHandle<Option<std::time::Instant>> {
    use flatlan_l2::frame::ArpPacket;
    use flatlan_l2::socket::{FrameSocket, PacketSocket};
    use std::time::Instant;
    let client = client.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cap = std::thread::spawn(move || {
        client
            .run(move || {
                let sock = PacketSocket::open("eth0").expect("AF_PACKET on the client");
                ready_tx.send(()).expect("the caller waits");
                let end = Instant::now() + window;
                let mut buf = [0u8; 2048];
                while let Some(left) = end.checked_duration_since(Instant::now()) {
                    let Some(n) = sock.recv_timeout(&mut buf, left).expect("capture") else {
                        continue;
                    };
                    let Ok((_, arp)) = ArpPacket::parse_frame(&buf[..n]) else {
                        continue;
                    };
                    if arp.spa == vip && arp.is_gratuitous() && arp.sha != old {
                        return Some(Instant::now());
                    }
                }
                None
            })
            .expect("enter the client's namespace")
    });
    ready_rx.recv().expect("capture ready");
    cap
}

/// Serves one flatlan pool, `lan` (10.77.0.200-10.77.0.210), and one
/// L2Advertisement for every node and interface from the lab's fake API.
pub fn serve_lan_pool(api: &netns_testkit::fake_api::FakeApi) {
    api.set(
        "/apis/flatlan.dev/v1alpha1/ipaddresspools",
        vec![
            json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "lan", "resourceVersion": "1"},
            "spec": {"addresses": ["10.77.0.200-10.77.0.210"]}}),
        ],
    );
    api.set(
        "/apis/flatlan.dev/v1alpha1/l2advertisements",
        vec![
            json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "all", "resourceVersion": "1"}, "spec": {}}),
        ],
    );
}
