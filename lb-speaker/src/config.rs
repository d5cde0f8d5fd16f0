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
//! heartbeatInterval: 100ms
//! deadAfter: 3                   # missed heartbeats
//! garpCount: 3
//! garpInterval: 100ms
//! refreshInterval: 30s
//! assign: true                   # VIP on lo + arp_ignore/arp_announce
//! metricsAddr: 127.0.0.1:7472    # /metrics and /status
//! statusFile: /run/flatlan-speaker/status.json
//! stateDir: /run/flatlan-speaker  # sysctl originals, kept across a crash
//! ```
//!
//! SIGHUP re-reads the file; what a running speaker takes from it is in
//! [`crate::reload`].
//!
//! Parsing and validation are one pure step ([`Config::from_yaml`]) that
//! runs before the daemon touches the system (STYLE rule 2): a bad file is
//! rejected as a whole, with the offending field's path in the message
//! (`vips[2].address: ...`), and the daemon never starts half-configured.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default heartbeat port.
pub const DEFAULT_PORT: u16 = 7946;
/// The multicast group heartbeats use with `multicast: true`
/// (organisation-local scope, RFC 2365).
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 70, 76);
/// The shortest secret accepted: HMAC-SHA256 keys shorter than 128 bits are
/// guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest `secretFile` read: a key is a few dozen bytes, and a path
/// such as `/dev/zero` must not exhaust memory.
pub const MAX_SECRET_FILE: u64 = 4096;
/// Below this estimated entropy (bits) a secret is warned about.
pub const LOW_ENTROPY_BITS: f64 = 64.0;
/// The longest `refreshInterval`: switches age a MAC out after 300 s
/// (metallb#2910, #259), and a refresh must come well before that.
pub const MAX_REFRESH: Duration = Duration::from_secs(150);

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
}

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

/// Timers, all validated to be non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// How often a heartbeat is sent.
    pub heartbeat_interval: Duration,
    /// A member is dead after this many intervals without a heartbeat.
    pub dead_after: u32,
    /// GARP (and unsolicited NA) rounds on claim. Several, because a single
    /// GARP is easily lost while switch ports and caches settle (MetalLB #123).
    pub garp_count: u32,
    /// Time between those rounds.
    pub garp_interval: Duration,
    /// Low-rate re-announcement while owning.
    pub refresh_interval: Duration,
    /// How long to listen for answers to the pre-claim probe.
    pub probe_timeout: Duration,
    /// How long a leaving speaker waits for its successors.
    pub handoff_timeout: Duration,
    /// How long a refused (conflicting) VIP waits before it is probed again.
    pub conflict_retry: Duration,
}

impl Timers {
    /// The time after which a silent member is dead.
    pub fn dead_interval(&self) -> Duration {
        self.heartbeat_interval * self.dead_after
    }
}

impl Default for Timers {
    fn default() -> Self {
        let hb = Duration::from_millis(100);
        Timers {
            heartbeat_interval: hb,
            dead_after: 3,
            garp_count: 3,
            garp_interval: Duration::from_millis(100),
            refresh_interval: Duration::from_secs(30),
            // The CNI plugin's probe window (2 probes, 60 ms of listening):
            // wired hosts answer an ARP probe within a few ms. A device
            // that answers later (Wi-Fi power save) is still caught while
            // we own the VIP, as a foreign claim.
            probe_timeout: Duration::from_millis(60),
            handoff_timeout: hb * 5,
            conflict_retry: Duration::from_secs(10),
        }
    }
}

/// A duration written as `100ms`, `1.5s`, `2m` or a bare number of
/// milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Millis(u64),
    Text(String),
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
}

/// Parses `100ms`, `1s`, `1.5s`, `2m`, or a bare number (milliseconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * unit_ms > 1e12 {
        return None;
    }
    Some(Duration::from_micros((v * unit_ms * 1000.0).round() as u64))
}

fn duration(
    path: &str,
    raw: Option<RawDuration>,
    default: Duration,
    min: Duration,
) -> Result<Duration> {
    let d = match raw {
        None => return Ok(default),
        Some(RawDuration::Millis(ms)) => Duration::from_millis(ms),
        Some(RawDuration::Text(t)) => parse_duration(&t).ok_or_else(|| {
            Error::config(path, format!("invalid duration {t:?} (use e.g. 100ms, 2s)"))
        })?,
    };
    if d < min {
        return Err(Error::config(
            path,
            format!("{d:?} is too short (minimum {min:?})"),
        ));
    }
    Ok(d)
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

/// Reads `secretFile`: a regular file that neither group nor others can
/// write (anyone who can write it can join the cluster or split it), of at
/// most [`MAX_SECRET_FILE`] bytes.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(bad(format!(
            "mode {:o}: group or others can write it; chmod go-w",
            mode & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(bad(format!("larger than {MAX_SECRET_FILE} bytes")));
    }
    Ok(bytes)
}

/// A rough estimate of a secret's entropy in bits: its length times the
/// Shannon entropy of its byte distribution. It catches what people type
/// ("aaaaaaaaaaaaaaaa", "1212121212121212"), not every weak key.
pub fn entropy_bits(secret: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in secret {
        counts[usize::from(*b)] += 1;
    }
    let n = secret.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
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
        Self::validate(raw, read_file)
    }

    fn validate(
        raw: RawConfig,
        read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
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
        if raw.multicast && !matches!(node_address, Some(IpAddr::V4(_))) {
            return Err(Error::config(
                "multicast",
                "needs node.address (an IPv4 address on the LAN interface)",
            ));
        }

        let secret = match (raw.secret, raw.secret_file) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "secret",
                    "set secret or secretFile, not both",
                ))
            }
            (None, None) => {
                return Err(Error::config(
                    "secret",
                    "missing: heartbeats must be authenticated (secret or secretFile)",
                ))
            }
            (Some(s), None) => s.into_bytes(),
            (None, Some(p)) => {
                let mut bytes = read_file(&p)
                    .map_err(|e| Error::config("secretFile", format!("{}: {e}", p.display())))?;
                while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                    bytes.pop();
                }
                bytes
            }
        };
        let bits = entropy_bits(&secret);
        if bits < LOW_ENTROPY_BITS {
            tracing::warn!(
                estimated_bits = bits as u64,
                "the heartbeat secret looks guessable (repeated or few distinct characters); \
                 use e.g. `head -c 32 /dev/urandom | base64`"
            );
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::config(
                "secret",
                format!(
                    "too short ({} bytes, need at least {MIN_SECRET_LEN})",
                    secret.len()
                ),
            ));
        }

        if raw.vips.is_empty() {
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

        let d = Timers::default();
        let ms = Duration::from_millis;
        let heartbeat_interval = duration(
            "heartbeatInterval",
            raw.heartbeat_interval,
            d.heartbeat_interval,
            ms(10),
        )?;
        let dead_after = raw.dead_after.unwrap_or(d.dead_after);
        if !(2..=100).contains(&dead_after) {
            return Err(Error::config(
                "deadAfter",
                format!("{dead_after} missed heartbeats: must be between 2 and 100"),
            ));
        }
        let garp_count = raw.garp_count.unwrap_or(d.garp_count);
        if !(1..=20).contains(&garp_count) {
            return Err(Error::config(
                "garpCount",
                format!("{garp_count}: must be between 1 and 20"),
            ));
        }
        let refresh_interval = duration(
            "refreshInterval",
            raw.refresh_interval,
            d.refresh_interval,
            ms(100),
        )?;
        if refresh_interval > MAX_REFRESH {
            return Err(Error::config(
                "refreshInterval",
                format!(
                    "{refresh_interval:?}: at most {MAX_REFRESH:?}, well inside the 300 s \
                     after which switches forget a MAC"
                ),
            ));
        }
        let timers = Timers {
            heartbeat_interval,
            dead_after,
            garp_count,
            garp_interval: duration("garpInterval", raw.garp_interval, d.garp_interval, ms(1))?,
            refresh_interval,
            probe_timeout: duration("probeTimeout", raw.probe_timeout, d.probe_timeout, ms(0))?,
            handoff_timeout: duration(
                "handoffTimeout",
                raw.handoff_timeout,
                heartbeat_interval * 5,
                ms(0),
            )?,
            conflict_retry: duration(
                "conflictRetry",
                raw.conflict_retry,
                d.conflict_retry,
                ms(100),
            )?,
        };

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

    /// `secretFile` must not be writable by group or others, must be a
    /// regular file, and is read only up to a bound (`/dev/zero`).
    #[test]
    fn secret_file_rules() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        for (mode, ok) in [(0o600, true), (0o644, true), (0o620, false), (0o606, false)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_secret_file(&p);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if !ok {
                assert!(r.unwrap_err().to_string().contains("chmod go-w"));
            }
        }
        let e = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, vec![b'k'; 5000]).unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(e.to_string().contains("larger than 4096"), "{e}");
        // Through the config: the path and the reason.
        let y = GOOD.replace(
            "secret: \"0123456789abcdef0123\"",
            &format!("secretFile: {}", p.display()),
        );
        let e = Config::from_yaml(&y, &read_secret_file).unwrap_err();
        assert!(e.to_string().starts_with("secretFile:"), "{e}");
    }

    #[test]
    fn low_entropy_secrets_are_estimated_low() {
        assert!(entropy_bits(b"aaaaaaaaaaaaaaaaaaaa") < LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"1212121212121212") < LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"flatlan-lab-fleet-secret-0123456789") >= LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"q8Zp2LxV0rT7mWc4YbN1sKd9") >= LOW_ENTROPY_BITS);
    }

    #[test]
    fn refresh_stays_well_inside_switch_mac_aging() {
        let y = format!("{GOOD}refreshInterval: 5m\n");
        assert!(err(&y).starts_with("refreshInterval:"), "{}", err(&y));
        let y = format!("{GOOD}refreshInterval: 2m\n");
        assert!(parse(&y).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("NaNs"), None);
        assert_eq!(parse_duration(""), None);
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
}
