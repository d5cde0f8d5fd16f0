//! The `ipam` section: the LAN subnets and this node's ranges, where the
//! store lives, and the conflict probe's knobs.

use std::net::IpAddr;
use std::path::PathBuf;

use flatlan_ipam::IpRange;
use ipnet::IpNet;
use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flatlan";
pub const DEFAULT_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    /// `subnet`, `gateway`, `ranges` and `exclude` at this level are
    /// shorthand for a single `subnets` entry.
    #[serde(default)]
    pub subnet: Option<IpNet>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub ranges: Vec<IpRange>,
    #[serde(default)]
    pub exclude: Vec<IpRange>,
    #[serde(default)]
    pub subnets: Vec<SubnetConf>,
    /// The node agent's node-range file (this node's slice from podCIDRs).
    #[serde(default)]
    pub range_file: Option<PathBuf>,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_boot_id")]
    pub boot_id_path: PathBuf,
    #[serde(default)]
    pub probe: ProbeConf,
}

/// The LAN conflict probe (RFC 5227 ARP probe, DAD-style NS for IPv6).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProbeConf {
    pub enabled: bool,
    /// Probes per address, `intervalMs` apart, then `waitMs` of listening.
    pub probes: u8,
    pub interval_ms: u64,
    pub wait_ms: u64,
    /// How many upcoming candidates a background probe verifies after ADD.
    pub ahead: usize,
    /// How long a "nobody answered" verdict stays good (at most
    /// [`MAX_VERIFIED_TTL_SECONDS`]).
    pub verified_ttl_seconds: u64,
    /// How long an address a LAN host answered for is skipped.
    pub quarantine_seconds: u64,
}

impl Default for ProbeConf {
    fn default() -> Self {
        // 2 probes 20 ms apart and 60 ms of listening catch any wired host
        // (they answer in well under a millisecond) and survive one lost
        // frame; the background probe-ahead uses 5x the listening time.
        ProbeConf {
            enabled: true,
            probes: 2,
            interval_ms: 20,
            wait_ms: 60,
            // A DEL no longer leaves a verified address behind, so these
            // verdicts are what keeps ADD from probing: a round starts when
            // fewer than half are left, and 8 left outlast the ~0.4 s a
            // round takes even at a dozen ADDs a second.
            ahead: 16,
            // A LAN host may take an address at any moment, silently
            // (`ip addr add` sends nothing); only a fresh verdict says much.
            verified_ttl_seconds: 30,
            quarantine_seconds: 3600,
        }
    }
}

/// A "nobody answered" verdict older than this says little about the LAN
/// now (issue 10: a 600 s verdict handed out an address a host had taken).
pub const MAX_VERIFIED_TTL_SECONDS: u64 = 120;

impl ProbeConf {
    pub fn sync_config(&self) -> flatlan_ipam::probe::ProbeConfig {
        flatlan_ipam::probe::ProbeConfig {
            probes: self.probes,
            interval: std::time::Duration::from_millis(self.interval_ms),
            wait: std::time::Duration::from_millis(self.wait_ms),
        }
    }

    /// Upper bounds, so a typo cannot stall every ADD (the synchronous probe
    /// runs up to 9 rounds when LAN hosts answer) or keep verdicts forever.
    pub(super) fn check_bounds(&self) -> Result<()> {
        // verifiedTtlSeconds has its own, tighter rule in `validate`.
        let limits: [(&str, u64, u64, u64); 5] = [
            ("probes", self.probes.into(), 1, 5),
            ("intervalMs", self.interval_ms, 0, 500),
            ("waitMs", self.wait_ms, 1, 1000),
            ("ahead", self.ahead as u64, 0, 64),
            ("quarantineSeconds", self.quarantine_seconds, 0, 7 * 86400),
        ];
        for (key, v, min, max) in limits {
            if !(min..=max).contains(&v) {
                return Err(Error::InvalidConfig(format!(
                    "ipam.probe.{key} {v} is out of range {min}-{max}"
                )));
            }
        }
        Ok(())
    }

    /// Off the ADD path, so it can listen as long as RFC 5227's spirit asks.
    pub fn ahead_config(&self) -> flatlan_ipam::probe::ProbeConfig {
        flatlan_ipam::probe::ProbeConfig {
            probes: self.probes.max(3),
            interval: std::time::Duration::from_millis(self.interval_ms.max(50)),
            wait: std::time::Duration::from_millis(self.wait_ms.saturating_mul(5)),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetConf {
    pub subnet: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub ranges: Vec<IpRange>,
    #[serde(default)]
    pub exclude: Vec<IpRange>,
}

pub(super) fn default_data_dir() -> PathBuf {
    DEFAULT_DATA_DIR.into()
}
pub(super) fn default_boot_id() -> PathBuf {
    DEFAULT_BOOT_ID.into()
}
