//! Static-mode configuration: the YAML file `flatlan-speaker static
//! --config FILE` reads.
//!
//! ```yaml
//! node: { name: node-a, address: 192.168.1.11 }
//! listen: 0.0.0.0:7946          # heartbeat UDP socket
//! peers: [192.168.1.12:7946, 192.168.1.13:7946]
//! multicast: false               # or true: 239.255.70.76 on the LAN
//! secretFile: /etc/flatlan/speaker.key   # or `secret: "..."` (>= 16 bytes)
//! vips:
//!   - address: 192.168.1.240
//!   - address: fd00:1::240
//!     interface: eth0            # optional; default: by subnet
//! interfaces: [eth0, "enp*"]     # optional allow list (trailing * globs)
//! heartbeatInterval: 50ms
//! deadAfter: 5                   # missed heartbeats on a clean link
//! maxDeadTime: 800ms             # the bound on a lossy or busy one
//! garpCount: 3
//! garpInterval: 100ms
//! refreshInterval: 30s
//! assign: true                   # VIP on lo + arp_ignore/arp_announce
//! metricsAddr: 127.0.0.1:7472    # /metrics and /status
//! statusFile: /run/flatlan-speaker/status.json
//! stateDir: /run/flatlan-speaker  # sysctl originals, kept across a crash
//! sysctlRoot: /proc/sys          # where arp_ignore/arp_announce are written
//! ```
//!
//! SIGHUP re-reads the file; what a running speaker takes from it is in
//! [`crate::reload`].
//!
//! Parsing and validation are one pure step ([`Config::from_yaml`]) that
//! runs before the daemon touches the system (STYLE rule 2): a bad file is
//! rejected as a whole, with the offending field's path in the message
//! (`vips[2].address: ...`), and the daemon never starts half-configured.

mod secret;
mod timers;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::freshness::MAX_SENDERS;

pub use secret::{
    entropy_bits, read_secret_file, LOW_ENTROPY_BITS, MAX_SECRET_FILE, MIN_SECRET_LEN,
};
pub use timers::{parse_duration, Timers, DEFAULT_MAX_DEAD_TIME, MAX_REFRESH};
use timers::{RawDuration, RawTimers};

/// The default heartbeat port.
pub const DEFAULT_PORT: u16 = 7946;
/// The multicast group heartbeats use with `multicast: true`
/// (organisation-local scope, RFC 2365).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 70, 76);

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's name, unique among the peers; it is the input to
    /// rendezvous hashing, so it must be the same across restarts.
    pub node_name: String,
    /// This node's LAN address, if given (needed for multicast).
    pub node_address: Option<IpAddr>,
    /// Where heartbeats are received.
    pub listen: SocketAddr,
    /// Where heartbeats are sent (unicast).
    pub peers: Vec<SocketAddr>,
    /// Send and receive heartbeats on [`MULTICAST_GROUP`] too.
    pub multicast: bool,
    /// The HMAC key shared by all speakers.
    pub secret: Vec<u8>,
    /// The VIPs to announce.
    pub vips: Vec<VipConfig>,
    /// Interface allow list; empty means every non-excluded interface.
    pub interfaces: Vec<String>,
    /// Timers.
    pub timers: Timers,
    /// Put the owned VIPs on `lo` and set `arp_ignore`/`arp_announce`.
    pub assign: bool,
    /// The Prometheus `/metrics` and JSON `/status` endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the status JSON is rewritten atomically.
    pub status_file: Option<PathBuf>,
    /// Where the sysctl values the speaker replaced are kept, so that a
    /// run after a crash still restores the originals (a tmpfs: they are
    /// runtime values).
    pub state_dir: PathBuf,
    /// Where the ARP sysctls are written: `/proc/sys`, or in a container
    /// (whose `/proc/sys` is read-only) the host's `/proc/sys/net` mounted
    /// as `<sysctlRoot>/net` (deploy/daemonset.yaml).
    pub sysctl_root: PathBuf,
}

/// The default `sysctlRoot`.
pub const DEFAULT_SYSCTL_ROOT: &str = "/proc/sys";

/// The default `stateDir`.
pub const DEFAULT_STATE_DIR: &str = "/run/flatlan-speaker";

/// One VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    /// The address.
    pub address: IpAddr,
    /// The announcing interface, or `None` to pick by subnet.
    pub interface: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawVip {
    address: Option<String>,
    interface: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    node: Option<RawNode>,
    listen: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    multicast: bool,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    vips: Vec<RawVip>,
    #[serde(default)]
    interfaces: Vec<String>,
    heartbeat_interval: Option<RawDuration>,
    dead_after: Option<u32>,
    max_dead_time: Option<RawDuration>,
    garp_count: Option<u32>,
    garp_interval: Option<RawDuration>,
    refresh_interval: Option<RawDuration>,
    probe_timeout: Option<RawDuration>,
    handoff_timeout: Option<RawDuration>,
    conflict_retry: Option<RawDuration>,
    assign: Option<bool>,
    metrics_addr: Option<String>,
    status_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    sysctl_root: Option<PathBuf>,
}

fn socket_addr(path: &str, s: &str, default_port: Option<u16>) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let (Some(port), Ok(ip)) = (default_port, s.parse::<IpAddr>()) {
        return Ok(SocketAddr::new(ip, port));
    }
    Err(Error::config(
        path,
        format!("invalid address {s:?} (expected ip:port, [v6]:port)"),
    ))
}

/// True if `name` must never announce: container and kube-proxy plumbing
/// (DESIGN §4: veths, CNI bridges and `kube-ipvs0` are ignored; `fl*` are
/// flatlan's own pod veths), and loopback, which holds assigned VIPs.
pub fn is_excluded_interface(name: &str) -> bool {
    name == "lo"
        || name == "kube-ipvs0"
        || name.starts_with("veth")
        || name.starts_with("cni")
        || name.starts_with("fl")
}

/// Matches an interface name against an allow-list pattern (`eth0`,
/// `enp*`).
pub fn interface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

fn valid_ifname(name: &str) -> bool {
    // IFNAMSIZ is 16 including the NUL.
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@*".contains(&b))
}

impl Config {
    /// Reads and validates a config file. `secretFile` is resolved relative
    /// to the working directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, &read_secret_file)
    }

    /// Parses and validates YAML. `read_file` reads `secretFile`, so tests
    /// need no filesystem.
    pub fn from_yaml(
        text: &str,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Config> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
            // serde_yaml puts the field path first ("vips[1]: unknown field").
            let msg = e.to_string();
            match msg.split_once(": ") {
                Some((p, rest)) if !p.contains(' ') => Error::config(p, rest),
                _ => Error::config("(file)", msg),
            }
        })?;
        Self::validate(raw, read_file, false)
    }

    /// Reads the Kubernetes mode's file (`flatlan-speaker kubernetes
    /// --config FILE`): the static file's fields without `vips`, which
    /// come from the cluster's Services, and without `node`, which is the
    /// `--node` (spec.nodeName) and `--node-address` (status.hostIP) of
    /// each DaemonSet pod, so one ConfigMap serves every node. `secret`
    /// is the heartbeat secret from the cluster's Secret, when the file
    /// names neither `secret` nor `secretFile`.
    pub fn load_kubernetes(
        path: &Path,
        node: &str,
        address: Option<IpAddr>,
        secret: Option<String>,
    ) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml_kubernetes(&text, node, address, secret, &read_secret_file)
    }

    /// [`Config::load_kubernetes`] on a text.
    pub fn from_yaml_kubernetes(
        text: &str,
        node: &str,
        address: Option<IpAddr>,
        secret: Option<String>,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<Config> {
        // An empty file is a config of defaults (a secret is still needed).
        let text = if text.trim().is_empty() { "{}" } else { text };
        let mut raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            match msg.split_once(": ") {
                Some((p, rest)) if !p.contains(' ') => Error::config(p, rest),
                _ => Error::config("(file)", msg),
            }
        })?;
        if !raw.vips.is_empty() {
            return Err(Error::config(
                "vips",
                "not in kubernetes mode: the VIPs are the LoadBalancer Services' addresses \
                 from the pools; remove `vips` (or run `flatlan-speaker static`)",
            ));
        }
        if raw.node.is_some() {
            return Err(Error::config(
                "node",
                "not in kubernetes mode: the node is --node (spec.nodeName) and \
                 --node-address (status.hostIP); remove `node`",
            ));
        }
        if raw.secret.is_none() && raw.secret_file.is_none() {
            raw.secret = secret;
        }
        raw.node = Some(RawNode {
            name: Some(node.to_string()),
            address: address.map(|a| a.to_string()),
        });
        Self::validate(raw, read_file, true)
    }

    fn validate(
        raw: RawConfig,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
        vips_from_cluster: bool,
    ) -> Result<Config> {
        let node = raw
            .node
            .ok_or_else(|| Error::config("node", "missing (need node.name)"))?;
        let node_name = node
            .name
            .ok_or_else(|| Error::config("node.name", "missing"))?;
        if node_name.is_empty()
            || node_name.len() > crate::wire::MAX_NAME
            || !node_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::config(
                "node.name",
                format!(
                    "{node_name:?} must be 1-{} characters of [A-Za-z0-9._-]",
                    crate::wire::MAX_NAME
                ),
            ));
        }
        let node_address = match node.address {
            None => None,
            Some(a) => Some(
                a.parse::<IpAddr>()
                    .map_err(|_| Error::config("node.address", format!("invalid IP {a:?}")))?,
            ),
        };

        let listen = match raw.listen {
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            Some(s) => socket_addr("listen", &s, Some(DEFAULT_PORT))?,
        };
        let mut peers = Vec::new();
        for (i, p) in raw.peers.iter().enumerate() {
            peers.push(socket_addr(&format!("peers[{i}]"), p, Some(listen.port()))?);
        }
        if peers.len() >= MAX_SENDERS {
            // One heartbeat echoes the challenges of at most MAX_SENDERS
            // speakers (the wire's MAX_ECHOES, two each): a larger cluster
            // would drop some peers' echoes and see them die and rejoin.
            return Err(Error::config(
                "peers",
                format!(
                    "{} peers: a cluster has at most {MAX_SENDERS} speakers, so at most {} \
                     peers",
                    peers.len(),
                    MAX_SENDERS - 1
                ),
            ));
        }
        if raw.multicast && !matches!(node_address, Some(IpAddr::V4(_))) {
            return Err(Error::config(
                "multicast",
                "needs node.address (an IPv4 address on the LAN interface)",
            ));
        }

        let secret = secret::resolve(raw.secret, raw.secret_file, read_file)?;

        if raw.vips.is_empty() && !vips_from_cluster {
            return Err(Error::config("vips", "no VIPs to announce"));
        }
        let mut seen = BTreeSet::new();
        let mut vips = Vec::with_capacity(raw.vips.len());
        for (i, v) in raw.vips.into_iter().enumerate() {
            let path = format!("vips[{i}].address");
            let text = v.address.ok_or_else(|| Error::config(&path, "missing"))?;
            let address: IpAddr = text
                .parse()
                .map_err(|_| Error::config(&path, format!("invalid IP address {text:?}")))?;
            let bad = match address {
                IpAddr::V4(a) => {
                    a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
                }
                IpAddr::V6(a) => {
                    a.is_unspecified()
                        || a.is_loopback()
                        || a.is_multicast()
                        || (a.segments()[0] & 0xffc0) == 0xfe80
                }
            };
            if bad {
                return Err(Error::config(
                    &path,
                    format!("{address} cannot be a VIP (unspecified, loopback, multicast, broadcast or link-local)"),
                ));
            }
            if !seen.insert(address) {
                return Err(Error::config(&path, format!("{address} is listed twice")));
            }
            if let Some(ifname) = &v.interface {
                if !valid_ifname(ifname) || ifname.contains('*') {
                    return Err(Error::config(
                        format!("vips[{i}].interface"),
                        format!("invalid interface name {ifname:?}"),
                    ));
                }
            }
            vips.push(VipConfig {
                address,
                interface: v.interface,
            });
        }
        for (i, name) in raw.interfaces.iter().enumerate() {
            if !valid_ifname(name) {
                return Err(Error::config(
                    format!("interfaces[{i}]"),
                    format!("invalid interface name or pattern {name:?}"),
                ));
            }
        }

        let timers = RawTimers {
            heartbeat_interval: raw.heartbeat_interval,
            dead_after: raw.dead_after,
            max_dead_time: raw.max_dead_time,
            garp_count: raw.garp_count,
            garp_interval: raw.garp_interval,
            refresh_interval: raw.refresh_interval,
            probe_timeout: raw.probe_timeout,
            handoff_timeout: raw.handoff_timeout,
            conflict_retry: raw.conflict_retry,
        }
        .validate()?;

        let metrics_addr = match raw.metrics_addr.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 7472))),
            Some("" | "off" | "none") => None,
            Some(s) => Some(socket_addr("metricsAddr", s, None)?),
        };

        Ok(Config {
            node_name,
            node_address,
            listen,
            peers,
            multicast: raw.multicast,
            secret,
            vips,
            interfaces: raw.interfaces,
            timers,
            assign: raw.assign.unwrap_or(true),
            metrics_addr,
            status_file: raw.status_file,
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            sysctl_root: raw
                .sysctl_root
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSCTL_ROOT)),
        })
    }

    /// True if `name` may announce under this config: not excluded, and on
    /// the allow list if there is one.
    pub fn interface_allowed(&self, name: &str) -> bool {
        !is_excluded_interface(name)
            && (self.interfaces.is_empty()
                || self.interfaces.iter().any(|p| interface_matches(p, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn no_files(_: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::from(std::io::ErrorKind::NotFound))
    }

    fn parse(y: &str) -> Result<Config> {
        Config::from_yaml(y, &no_files)
    }

    const GOOD: &str = r#"
node: { name: node-a, address: 10.0.0.2 }
peers: [10.0.0.3, "10.0.0.4:8000"]
secret: "0123456789abcdef0123"
vips:
  - address: 10.0.0.100
  - address: fd00::100
    interface: eth0
heartbeatInterval: 50ms
deadAfter: 4
garpInterval: 0.2s
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.listen, "0.0.0.0:7946".parse().unwrap());
        assert_eq!(
            c.peers,
            vec![
                "10.0.0.3:7946".parse().unwrap(),
                "10.0.0.4:8000".parse().unwrap()
            ]
        );
        assert_eq!(c.vips.len(), 2);
        assert_eq!(c.vips[1].interface.as_deref(), Some("eth0"));
        assert_eq!(c.timers.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.timers.dead_after, 4);
        assert_eq!(c.timers.dead_interval(), Duration::from_millis(200));
        assert_eq!(c.timers.garp_interval, Duration::from_millis(200));
        assert_eq!(c.timers.garp_count, 3);
        assert!(c.assign);
        assert_eq!(c.metrics_addr, Some("127.0.0.1:7472".parse().unwrap()));
    }

    fn err(y: &str) -> String {
        parse(y).unwrap_err().to_string()
    }

    #[test]
    fn bad_vip_names_its_index() {
        let y = GOOD.replace("address: fd00::100", "address: 10.0.0.999");
        assert!(
            err(&y).starts_with("vips[1].address: invalid IP"),
            "{}",
            err(&y)
        );
        let y = GOOD.replace("address: fd00::100", "address: 224.0.0.1");
        assert!(err(&y).starts_with("vips[1].address:"), "{}", err(&y));
        let y = GOOD.replace("address: fd00::100", "address: 10.0.0.100");
        assert!(err(&y).contains("listed twice"), "{}", err(&y));
    }

    #[test]
    fn unknown_field_and_type_errors_carry_the_path() {
        let y = GOOD.replace("interface: eth0", "iface: eth0");
        let e = err(&y);
        assert!(e.starts_with("vips[1]"), "{e}");
        assert!(e.contains("iface"), "{e}");
        let y = GOOD.replace("deadAfter: 4", "deadAfter: many");
        assert!(err(&y).starts_with("deadAfter"), "{}", err(&y));
    }

    #[test]
    fn secrets_and_timers_are_validated() {
        let y = GOOD.replace("\"0123456789abcdef0123\"", "short");
        assert!(err(&y).starts_with("secret: too short"));
        let y = GOOD.replace("secret: \"0123456789abcdef0123\"\n", "");
        assert!(err(&y).starts_with("secret: missing"));
        let y = GOOD.replace("50ms", "fast");
        assert!(err(&y).starts_with("heartbeatInterval: invalid duration"));
        let y = GOOD.replace("deadAfter: 4", "deadAfter: 1");
        assert!(err(&y).starts_with("deadAfter:"));
        let y = GOOD.replace("peers: [10.0.0.3", "peers: [nowhere");
        assert!(err(&y).starts_with("peers[0]:"), "{}", err(&y));
        let y = GOOD.replace("name: node-a", "name: \"bad name\"");
        assert!(err(&y).starts_with("node.name:"));
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let y = GOOD.replace("secret: \"0123456789abcdef0123\"", "secretFile: /etc/key");
        let c = Config::from_yaml(&y, &|_| Ok(b"abcdefghijklmnopq\n".to_vec())).unwrap();
        assert_eq!(c.secret, b"abcdefghijklmnopq");
        assert!(parse(&y)
            .unwrap_err()
            .to_string()
            .starts_with("secretFile:"));
    }

    #[test]
    fn interface_rules() {
        for n in ["lo", "veth1234", "cni0", "kube-ipvs0", "fl3a9c"] {
            assert!(is_excluded_interface(n), "{n}");
        }
        for n in ["eth0", "enp3s0", "br0", "bond0.10"] {
            assert!(!is_excluded_interface(n), "{n}");
        }
        let mut c = parse(GOOD).unwrap();
        assert!(c.interface_allowed("eth0"));
        c.interfaces = vec!["enp*".into()];
        assert!(!c.interface_allowed("eth0"));
        assert!(c.interface_allowed("enp3s0"));
    }

    /// A heartbeat echoes at most MAX_SENDERS speakers' challenges: a
    /// larger unicast cluster is refused, not silently capped.
    #[test]
    fn the_cluster_size_is_refused_beyond_what_a_heartbeat_can_echo() {
        let peers = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"10.0.1.{i}\"")).collect();
            GOOD.replace(
                "peers: [10.0.0.3, \"10.0.0.4:8000\"]",
                &format!("peers: [{}]", list.join(", ")),
            )
        };
        assert_eq!(parse(&peers(MAX_SENDERS - 1)).unwrap().peers.len(), 31);
        let e = err(&peers(MAX_SENDERS));
        assert!(
            e.starts_with("peers: 32 peers: a cluster has at most 32 speakers"),
            "{e}"
        );
    }

    /// Kubernetes mode: one file for every node, without VIPs (they come
    /// from the Services) and without `node` (it comes from the pod).
    #[test]
    fn kubernetes_mode_takes_no_vips_and_the_node_from_the_pod() {
        let k = |y: &str| {
            Config::from_yaml_kubernetes(
                y,
                "vm",
                Some("10.0.0.2".parse().unwrap()),
                None,
                &no_files,
            )
        };
        let c =
            k("secret: \"0123456789abcdef0123\"\nmulticast: true\nsysctlRoot: /host/proc/sys\n")
                .unwrap();
        assert!(c.vips.is_empty());
        assert_eq!(c.node_name, "vm");
        assert_eq!(c.node_address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(c.sysctl_root, Path::new("/host/proc/sys"));
        let e = k(GOOD
            .replace("node: { name: node-a, address: 10.0.0.2 }\n", "")
            .as_str())
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("vips: not in kubernetes mode"), "{e}");
        let e = k("node: { name: x }\nsecret: \"0123456789abcdef0123\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("node: not in kubernetes mode"), "{e}");
        assert!(k("").unwrap_err().to_string().starts_with("secret"));
        // The cluster's Secret, unless the file names its own.
        let c = Config::from_yaml_kubernetes("", "vm", None, Some("s".repeat(32)), &no_files);
        assert_eq!(c.unwrap().secret, "s".repeat(32).into_bytes());
        // Static mode still refuses a file without VIPs.
        assert_eq!(parse(GOOD).unwrap().sysctl_root, Path::new("/proc/sys"));
        let e = parse("node: { name: a }\nsecret: \"0123456789abcdef0123\"\n").unwrap_err();
        assert!(e.to_string().starts_with("vips: no VIPs"), "{e}");
    }
}
