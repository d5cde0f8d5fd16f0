//! The network configuration on stdin, parsed and validated in full before
//! the first change to the system (STYLE.md rule 2).

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::env::Command;
use crate::error::{Error, Result};

mod ipam;
mod request;
pub use ipam::{
    IpamConf, ProbeConf, SubnetConf, DEFAULT_BOOT_ID, DEFAULT_DATA_DIR, MAX_VERIFIED_TTL_SECONDS,
};
use request::parse_mac;

/// Fuzz-style properties: no input, however mangled, panics the parser.
#[cfg(test)]
mod fuzz;

/// CNI versions this plugin speaks. 0.3.x is still what many older
/// conflists (k3s and flannel templates) say; it has no CHECK, and only
/// 1.1.0 has STATUS and GC ([`verb_allowed`]).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The oldest config version that has each verb, as the reference plugins'
/// skel enforces it: CHECK came with 0.4.0, STATUS and GC with 1.1.0.
pub fn verb_allowed(command: Command, version: &str) -> Result<()> {
    let (verb, need) = match command {
        Command::Check => ("CHECK", "0.4.0"),
        Command::Status => ("STATUS", "1.1.0"),
        Command::Gc => ("GC", "1.1.0"),
        _ => return Ok(()),
    };
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    if parse(version) < parse(need) {
        return Err(Error::VerbNotInVersion {
            verb,
            version: version.to_string(),
            need,
        });
    }
    Ok(())
}

/// The most stdin flatlan reads. A network config is a few kilobytes even
/// with a large prevResult; reading without a limit let 100 MB of input
/// cost 850 MB of memory.
pub const MAX_STDIN: usize = 1 << 20;

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// Pod MTU; defaults to the bridge's.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Service CIDRs (kube-proxy's ClusterIPs), routed via the node so that
    /// DNAT happens there.
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Vec<IpNet>,
    /// Enable bridge-nf-call-iptables/ip6tables so replies to DNATed traffic
    /// that is bridged (not routed) still meet conntrack.
    #[serde(default = "yes")]
    pub ensure_br_netfilter: bool,
    /// With Service CIDRs, turn on IPv4 (and, for IPv6 Service CIDRs, IPv6)
    /// forwarding in the node: kube-proxy's DNAT to a pod on another node
    /// is routed, and a pod's packets to a ClusterIP die without it.
    #[serde(default = "yes")]
    pub ensure_forwarding: bool,
    /// Hairpin mode on the host veth's bridge port, so a pod reaches its
    /// own Service: the DNATed frame must go back out the port it came in.
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    pub ipam: IpamConf,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// Absent is `None` (GC refuses it); `null` is an empty list: libcni
    /// sends it for a network with no attachments (CRI-O's ocicni does).
    #[serde(
        default,
        rename = "cni.dev/valid-attachments",
        deserialize_with = "null_is_empty"
    )]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The shorthand and the `subnets` list, merged once at parse time.
    #[serde(skip)]
    resolved_subnets: Vec<SubnetConf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// The `ips` capability: requested addresses, with or without a prefix.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `mac` capability (podman's `--mac-address`): the pod's MAC.
    #[serde(default)]
    pub mac: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_bridge() -> String {
    "br0".into()
}
fn yes() -> bool {
    true
}
fn null_is_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<ValidAttachment>>, D::Error> {
    Ok(Some(Option::deserialize(d)?.unwrap_or_default()))
}

/// Reads just the version, for VERSION and for error replies to a config
/// that fails to parse further.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        v: String,
    }
    serde_json::from_slice::<V>(stdin).ok().map(|v| v.v)
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        // Syntax first (code 6), then shape, with the offending key's path
        // in the message (code 7): "ipam.ranges[1]: ..." is actionable,
        // "line 1 column 263" is not.
        let value: Value =
            serde_json::from_slice(stdin).map_err(|e| Error::Decode(e.to_string()))?;
        let mut conf: NetConf = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                Error::InvalidConfig(inner.to_string())
            } else {
                Error::InvalidConfig(format!("{path}: {inner}"))
            }
        })?;
        conf.resolved_subnets = conf.merge_subnets();
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<()> {
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(Error::IncompatibleVersion {
                version: self.cni_version.clone(),
                supported: SUPPORTED_VERSIONS.join(", "),
            });
        }
        if self.name.is_empty() {
            return Err(Error::InvalidConfig("`name` must not be empty".into()));
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(Error::InvalidConfig(format!(
                "`bridge` {:?} is not a valid interface name",
                self.bridge
            )));
        }
        if let Some(mtu) = self.mtu {
            if !(576..=65535).contains(&mtu) {
                return Err(Error::InvalidConfig(format!(
                    "`mtu` {mtu} is out of range 576-65535"
                )));
            }
        }
        if let Some(mtu) = self.mtu.filter(|m| *m < 1280) {
            // The kernel turns IPv6 off on a link below the IPv6 minimum
            // MTU (RFC 8200 §5); the address add would then fail obscurely.
            if let Some(s) = self.subnets().iter().find(|s| s.subnet.addr().is_ipv6()) {
                return Err(Error::InvalidConfig(format!(
                    "`mtu` {mtu} is below 1280, the IPv6 minimum, but subnet {} is IPv6",
                    s.subnet
                )));
            }
        }
        let i = &self.ipam;
        if i.subnet.is_none()
            && (i.gateway.is_some() || !i.ranges.is_empty() || !i.exclude.is_empty())
        {
            return Err(Error::InvalidConfig(
                "`ipam.gateway`/`ipam.ranges`/`ipam.exclude` given without `ipam.subnet`".into(),
            ));
        }
        if self.subnets().is_empty() {
            return Err(Error::InvalidConfig(
                "`ipam.subnet` (or `ipam.subnets`) is required: the LAN subnet, e.g. 192.168.2.0/24".into(),
            ));
        }
        let mut seen_v4 = false;
        let mut seen_v6 = false;
        for s in self.subnets() {
            let fam = if s.subnet.addr().is_ipv4() {
                &mut seen_v4
            } else {
                &mut seen_v6
            };
            if *fam {
                return Err(Error::InvalidConfig(format!(
                    "more than one subnet of the family of {}; give one LAN subnet per family",
                    s.subnet
                )));
            }
            *fam = true;
            if let Some(gw) = s.gateway {
                if !s.subnet.contains(&gw) {
                    return Err(Error::InvalidConfig(format!(
                        "gateway {gw} is outside subnet {}",
                        s.subnet
                    )));
                }
            }
            if s.ranges.is_empty() && self.ipam.range_file.is_none() {
                return Err(Error::InvalidConfig(format!(
                    "subnet {} has no `ranges` and no `ipam.rangeFile` is set; flatlan needs this node's slice of the LAN",
                    s.subnet
                )));
            }
            // Builds the pool now so a bad range fails before any change.
            if !s.ranges.is_empty() {
                flatlan_ipam::Pool::new(s.subnet, &s.ranges, &s.exclude)?;
            }
        }
        self.ipam.probe.check_bounds()?;
        self.check_paths()?;
        if let Some(m) = &self.runtime_config.mac {
            parse_mac(m)
                .map_err(|why| Error::InvalidConfig(format!("runtimeConfig.mac: {why}")))?;
        }
        if self.ipam.probe.enabled {
            self.ipam
                .probe
                .sync_config()
                .validate()
                .map_err(|e| Error::InvalidConfig(format!("ipam.probe: {e}")))?;
        }
        if self.ipam.probe.verified_ttl_seconds > MAX_VERIFIED_TTL_SECONDS {
            return Err(Error::InvalidConfig(format!(
                "ipam.probe.verifiedTtlSeconds: {} is above the maximum of {MAX_VERIFIED_TTL_SECONDS}; a LAN host may have taken the address since",
                self.ipam.probe.verified_ttl_seconds
            )));
        }
        for c in &self.service_cidrs {
            if !self
                .subnets()
                .iter()
                .any(|s| s.subnet.addr().is_ipv4() == c.addr().is_ipv4())
            {
                return Err(Error::InvalidConfig(format!(
                    "service CIDR {c} has no LAN subnet of its family to route it through"
                )));
            }
        }
        Ok(())
    }

    /// Paths are the node's: a relative one would be resolved against
    /// whatever directory the runtime happened to start the plugin in.
    fn check_paths(&self) -> Result<()> {
        let i = &self.ipam;
        let paths = [
            ("ipam.dataDir", Some(&i.data_dir)),
            ("ipam.bootIdPath", Some(&i.boot_id_path)),
            ("ipam.rangeFile", i.range_file.as_ref()),
        ];
        for (key, p) in paths {
            if let Some(p) = p.filter(|p| !p.is_absolute()) {
                return Err(Error::InvalidConfig(format!(
                    "{key} {:?} must be an absolute path",
                    p.display().to_string()
                )));
            }
        }
        Ok(())
    }

    /// One LAN subnet per configured family, shorthand included.
    pub fn subnets(&self) -> &[SubnetConf] {
        &self.resolved_subnets
    }

    fn merge_subnets(&self) -> Vec<SubnetConf> {
        let i = &self.ipam;
        let single = i.subnet.map(|subnet| SubnetConf {
            subnet,
            gateway: i.gateway,
            ranges: i.ranges.clone(),
            exclude: i.exclude.clone(),
        });
        single
            .into_iter()
            .chain(i.subnets.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    pub(crate) fn parse(v: serde_json::Value) -> Result<NetConf> {
        NetConf::parse(v.to_string().as_bytes())
    }

    pub(crate) fn base() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.1.0", "name": "lan", "type": "flatlan",
            "ipam": {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
                     "ranges": ["192.168.2.210-192.168.2.219"]}
        })
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = parse(base()).unwrap();
        assert_eq!(c.bridge, "br0");
        assert!(c.ensure_br_netfilter);
        assert_eq!(c.subnets().len(), 1);
        assert_eq!(c.ipam.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_input_gets_the_documented_code() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code(), 6);
        let mut v = base();
        v["cniVersion"] = "0.2.0".into();
        assert_eq!(parse(v).unwrap_err().code(), 1);
        let mut v = base();
        v["ipam"]["ranges"] = serde_json::json!(["192.168.3.1-192.168.3.9"]);
        assert_eq!(parse(v).unwrap_err().code(), 7);
        let mut v = base();
        v["ipam"]["gateway"] = "10.0.0.1".into();
        assert_eq!(parse(v).unwrap_err().code(), 7);
        let mut v = base();
        v["mtu"] = "big".into();
        assert_eq!(parse(v).unwrap_err().code(), 7);
        let mut v = base();
        v.as_object_mut().unwrap().remove("ipam");
        assert_eq!(parse(v).unwrap_err().code(), 7);
    }

    #[test]
    fn valid_attachments_null_is_empty_and_absent_is_none() {
        assert!(parse(base()).unwrap().valid_attachments.is_none());
        let mut v = base();
        v["cni.dev/valid-attachments"] = serde_json::Value::Null;
        assert_eq!(
            parse(v).unwrap().valid_attachments.map(|a| a.len()),
            Some(0)
        );
        let mut v = base();
        v["cni.dev/valid-attachments"] =
            serde_json::json!([{"containerID": "c", "ifname": "eth0"}]);
        assert_eq!(
            parse(v).unwrap().valid_attachments.map(|a| a.len()),
            Some(1)
        );
    }

    #[test]
    fn a_verdict_lifetime_is_short_and_bounded() {
        assert_eq!(parse(base()).unwrap().ipam.probe.verified_ttl_seconds, 30);
        let ttl = |t: u64| {
            let mut v = base();
            v["ipam"]["probe"] = serde_json::json!({ "verifiedTtlSeconds": t });
            parse(v).map(|_| ()).map_err(|e| (e.code(), e.to_string()))
        };
        assert!(ttl(MAX_VERIFIED_TTL_SECONDS).is_ok());
        let (code, msg) = ttl(600).unwrap_err();
        assert_eq!(code, 7);
        assert!(
            msg.contains("verifiedTtlSeconds") && msg.contains("120"),
            "{msg}"
        );
    }

    #[test]
    fn dual_stack_subnets_parse_one_per_family() {
        let mut v = base();
        v["ipam"] = serde_json::json!({"subnets": [
            {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
             "ranges": ["192.168.2.208/28"], "exclude": ["192.168.2.100-192.168.2.199"]},
            {"subnet": "fd00:2::/64", "gateway": "fd00:2::1", "ranges": ["fd00:2::1:0/112"]}
        ]});
        let c = parse(v.clone()).unwrap();
        let fams: Vec<bool> = c
            .subnets()
            .iter()
            .map(|s| s.subnet.addr().is_ipv4())
            .collect();
        assert_eq!(fams, [true, false]);
        v["mtu"] = 1000.into();
        let e = parse(v.clone()).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("1280"), "{e}");
        // Two subnets of one family are refused.
        v["mtu"] = 1500.into();
        v["ipam"]["subnets"][1] = v["ipam"]["subnets"][0].clone();
        assert_eq!(parse(v).unwrap_err().code(), 7);
    }

    #[test]
    fn cni_0_3_x_parses_and_has_no_check_status_or_gc() {
        for v in ["0.3.0", "0.3.1"] {
            let mut c = base();
            c["cniVersion"] = v.into();
            parse(c).unwrap_or_else(|e| panic!("{v}: {e}"));
            for cmd in [Command::Check, Command::Status, Command::Gc] {
                let e = verb_allowed(cmd, v).unwrap_err();
                assert_eq!(e.code(), 1, "{e}");
            }
            verb_allowed(Command::Add, v).expect("ADD");
            verb_allowed(Command::Del, v).expect("DEL");
        }
        verb_allowed(Command::Check, "0.4.0").expect("CHECK since 0.4.0");
        let e = verb_allowed(Command::Status, "1.0.0").unwrap_err();
        assert!(e.to_string().contains("1.1.0"), "{e}");
        verb_allowed(Command::Gc, "1.1.0").expect("GC in 1.1.0");
    }

    #[test]
    fn probe_knobs_have_upper_bounds() {
        for (key, bad) in [
            ("waitMs", 600_000u64),
            ("probes", 200),
            ("intervalMs", 10_000),
            ("ahead", 100_000),
            ("quarantineSeconds", 99_999_999),
        ] {
            let mut v = base();
            v["ipam"]["probe"] = serde_json::json!({ key: bad });
            let e = parse(v).unwrap_err();
            assert_eq!(e.code(), 7, "{key}: {e}");
            assert!(e.to_string().contains(key), "{e}");
        }
        let mut v = base();
        v["ipam"]["probe"] = serde_json::json!({"waitMs": 1000, "probes": 5});
        parse(v).expect("the bounds themselves are fine");
    }

    #[test]
    fn relative_paths_are_refused() {
        for key in ["dataDir", "bootIdPath", "rangeFile"] {
            let mut v = base();
            v["ipam"][key] = "var/lib/flatlan".into();
            let e = parse(v).unwrap_err();
            assert_eq!(e.code(), 7, "{key}: {e}");
            assert!(e.to_string().contains(key), "{e}");
            assert!(e.to_string().contains("absolute"), "{e}");
        }
    }
}
