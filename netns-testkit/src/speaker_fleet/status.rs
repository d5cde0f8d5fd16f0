//! The speaker's status file as the fleet reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::{Error, Result};

/// One VIP's line in a speaker's status file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipView {
    /// `announcing`, `probing`, `conflict`, `standby` or `releasing`.
    pub state: String,
    /// The owner in this speaker's view (`None`: nobody eligible).
    pub owner: Option<String>,
    /// The MAC this speaker announces it with, lower case (when it holds it).
    pub mac: Option<String>,
    /// The last GARP this speaker sent for it (Unix ms), when it holds it.
    pub last_garp_unix_ms: Option<u64>,
    /// Why it is refused, here or by its owner, if it is.
    pub conflict: Option<String>,
}

impl VipView {
    /// True if this speaker answers ARP for the VIP: it announces it, or
    /// still holds it while handing it over.
    pub fn held(&self) -> bool {
        self.state == "announcing" || self.state == "releasing"
    }
}

/// A speaker's status file (the schema of lb-speaker/src/status.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerStatus {
    /// The node name the speaker runs as.
    pub node: String,
    /// When the speaker wrote the file.
    pub updated_unix_ms: u64,
    /// The peers it considers live.
    pub members: BTreeSet<String>,
    /// It is shutting down.
    pub leaving: bool,
    /// Per VIP.
    pub vips: BTreeMap<IpAddr, VipView>,
}

impl SpeakerStatus {
    /// Parses a status document. Every field the soak relies on must be
    /// there with the right type: a renamed field must fail loudly, not
    /// read as "owns nothing".
    pub fn parse(json: &[u8]) -> Result<SpeakerStatus> {
        let what = "parse a flatlan-speaker status document";
        let raw: RawStatus = serde_json::from_slice(json).map_err(|source| Error::Json {
            what: what.to_owned(),
            source,
        })?;
        let mut vips = BTreeMap::new();
        for e in raw.vips {
            let view = VipView {
                state: e.state,
                owner: e.owner,
                mac: e.mac.map(|m| m.to_ascii_lowercase()),
                last_garp_unix_ms: e.last_garp_unix_ms,
                conflict: e.conflict,
            };
            if vips.insert(e.vip, view).is_some() {
                return Err(Error::Probe {
                    what: what.to_owned(),
                    detail: format!("{} is listed twice", e.vip),
                });
            }
        }
        Ok(SpeakerStatus {
            node: raw.node,
            updated_unix_ms: raw.updated_unix_ms,
            members: raw.members,
            leaving: raw.leaving,
            vips,
        })
    }

    /// The VIPs this speaker holds ([`VipView::held`]).
    pub fn held(&self) -> BTreeSet<IpAddr> {
        self.vips
            .iter()
            .filter(|(_, v)| v.held())
            .map(|(ip, _)| *ip)
            .collect()
    }
}

/// The status file as written; [`SpeakerStatus::parse`] checks it.
#[derive(serde::Deserialize)]
struct RawStatus {
    node: String,
    updated_unix_ms: u64,
    members: BTreeSet<String>,
    leaving: bool,
    vips: Vec<RawVip>,
}

#[derive(serde::Deserialize)]
struct RawVip {
    vip: IpAddr,
    state: String,
    owner: Option<String>,
    mac: Option<String>,
    last_garp_unix_ms: Option<u64>,
    conflict: Option<String>,
}
