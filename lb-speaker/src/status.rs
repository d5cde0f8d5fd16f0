//! The status document: what `flatlan-speaker status` prints. The daemon
//! serves it on `/status` and, if `statusFile` is set, rewrites that file
//! atomically (write to a temporary file, then rename) so a reader never
//! sees half a document.

use std::io::Write as _;
use std::path::Path;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::announcer::Phase;
use crate::error::{Error, Result};
use crate::iface;
use crate::snapshot::Snapshot;

pub mod cluster;

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn instant_to_unix_ms(t: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(t);
    unix_ms(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH))
}

/// One VIP's line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipStatus {
    /// The VIP.
    pub vip: String,
    /// Its owner in this node's view (`None`: nobody eligible).
    pub owner: Option<String>,
    /// This node's state: `announcing`, `probing`, `assigning` (waiting
    /// for `lo` to take it), `conflict`, `standby`, `releasing`.
    pub state: String,
    /// Announcing interface on this node.
    pub interface: Option<String>,
    /// MAC it is announced with (when this node owns it).
    pub mac: Option<String>,
    /// Last GARP/NA, milliseconds since the Unix epoch.
    pub last_garp_unix_ms: Option<u64>,
    /// Why it is refused, if it is.
    pub conflict: Option<String>,
    /// The last foreign claim seen while owning it.
    pub foreign: Option<String>,
    /// The MAC of the LAN host that answered this node's probe (state
    /// `conflict`), for the conflict Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_answered_by: Option<String>,
}

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub node: String,
    /// When it was written.
    pub updated_unix_ms: u64,
    /// Live peers.
    pub members: Vec<String>,
    /// Shutting down.
    pub leaving: bool,
    /// Per VIP.
    pub vips: Vec<VipStatus>,
}

impl Status {
    /// Writes the document to `path` atomically (rename). No fsync: the
    /// file is advisory, rewritten every second, and an fsync on the event
    /// loop showed up as millisecond tails in ARP reply latency.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        let err = |e| Error::File {
            path: path.display().to_string(),
            source: e,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(err)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&json).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Reads a status file.
    pub fn read(path: &Path) -> Result<Status> {
        let b = std::fs::read(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            source: e,
        })?;
        serde_json::from_slice(&b).map_err(|e| Error::Status(format!("{}: {e}", path.display())))
    }

    /// A human-readable table.
    pub fn render(&self, now_unix_ms: u64) -> String {
        let mut s = format!(
            "node {}{}  members: {}\n",
            self.node,
            if self.leaving { " (leaving)" } else { "" },
            if self.members.is_empty() {
                "-".to_owned()
            } else {
                self.members.join(", ")
            }
        );
        s.push_str(&format!(
            "{:<28} {:<12} {:<11} {:<10} {:<18} {:<10} {}\n",
            "VIP", "OWNER", "STATE", "IFACE", "MAC", "LAST-GARP", "NOTE"
        ));
        for v in &self.vips {
            let ago = v.last_garp_unix_ms.map_or("-".to_owned(), |t| {
                format!("{:.1}s ago", now_unix_ms.saturating_sub(t) as f64 / 1000.0)
            });
            let note = match (&v.conflict, &v.foreign) {
                (Some(c), _) => format!("conflict: {c}"),
                (None, Some(f)) => format!("ALARM foreign: {f}"),
                (None, None) => String::new(),
            };
            s.push_str(&format!(
                "{:<28} {:<12} {:<11} {:<10} {:<18} {:<10} {}\n",
                v.vip,
                v.owner.as_deref().unwrap_or("-"),
                v.state,
                v.interface.as_deref().unwrap_or("-"),
                v.mac.as_deref().unwrap_or("-"),
                ago,
                note
            ));
        }
        s
    }
}

impl Status {
    /// The document for `s`. It tells the truth: a standby row shows no
    /// MAC or last GARP from when it was ours, and a VIP its owner refuses
    /// (a foreign device answered that owner's probe) has no owner.
    pub fn of(s: &Snapshot) -> Status {
        let vips = s
            .planner
            .vips()
            .iter()
            .map(|vip| vip_status(s, *vip))
            .collect();
        Status {
            node: s.cfg.node_name.clone(),
            updated_unix_ms: unix_ms(SystemTime::now()),
            members: s.membership.live().keys().cloned().collect(),
            leaving: s.leaving,
            vips,
        }
    }
}

fn vip_status(s: &Snapshot, vip: std::net::IpAddr) -> VipStatus {
    let st = s.announcer.vips().get(&vip);
    let desired = s.planner.owners().get(&vip);
    let state = match st.map(|st| &st.phase) {
        Some(Phase::Owned { .. }) if s.planner.handing_over(vip) => "releasing",
        Some(Phase::Owned { .. }) => "announcing",
        Some(Phase::Probing { .. }) => "probing",
        Some(Phase::Assigning) => "assigning",
        Some(Phase::Conflict { .. }) => "conflict",
        Some(Phase::Idle) | None => "standby",
    };
    let held = matches!(state, "announcing" | "releasing");
    // A refused VIP has no owner, here or in any peer's view (its
    // heartbeat says it refuses it): nobody answers for it but the device
    // that answered the probe.
    let refused_by = s
        .membership
        .refused_by(vip)
        .filter(|(n, _)| desired.is_some_and(|d| d == n));
    let owner = if held {
        Some(s.cfg.node_name.clone())
    } else if state == "conflict" || refused_by.is_some() {
        None
    } else {
        desired.cloned()
    };
    let interface = st.map(|st| st.link.iface.clone()).or_else(|| {
        s.desired
            .iter()
            .find(|d| d.vip.address == vip)
            .and_then(|d| iface::choose(s.cfg, &d.vip, s.ifaces))
            .map(|i| i.name.clone())
    });
    let answered = st.and_then(|st| {
        matches!(st.phase, Phase::Conflict { .. })
            .then_some(st.conflict)
            .flatten()
            .map(|(mac, _)| mac.to_string())
    });
    let ours = answered
        .as_ref()
        .map(|mac| format!("{mac} answered our probe; not announcing"));
    let theirs =
        refused_by.map(|(n, mac)| format!("{mac} answered {n}'s probe; {n} does not announce it"));
    VipStatus {
        vip: vip.to_string(),
        owner,
        state: state.to_owned(),
        interface,
        // What a standby node once announced with, and when, is history,
        // not state.
        mac: st
            .filter(|_| state != "standby" && state != "conflict")
            .map(|st| st.link.mac.to_string()),
        last_garp_unix_ms: st
            .filter(|_| held)
            .and_then(|st| st.last_announce)
            .map(instant_to_unix_ms),
        conflict: ours.or(theirs),
        foreign: st
            .and_then(|st| st.foreign)
            .map(|(mac, t)| format!("{mac} claimed it at {}", instant_to_unix_ms(t))),
        probe_answered_by: answered,
    }
}

/// Fetches `/status` from a running daemon's metrics endpoint.
pub fn fetch(addr: std::net::SocketAddr) -> Result<Status> {
    let body = crate::http::get(addr, "/status")?;
    serde_json::from_str(&body).map_err(|e| Error::Status(format!("{addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_render() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/status.json");
        let st = Status {
            node: "a".into(),
            updated_unix_ms: 1000,
            members: vec!["b".into()],
            leaving: false,
            vips: vec![VipStatus {
                vip: "10.0.0.1".into(),
                owner: Some("a".into()),
                state: "announcing".into(),
                interface: Some("eth0".into()),
                mac: Some("02:00:00:00:00:01".into()),
                last_garp_unix_ms: Some(500),
                conflict: None,
                foreign: None,
                probe_answered_by: None,
            }],
        };
        st.write_atomic(&p).unwrap();
        assert_eq!(Status::read(&p).unwrap(), st);
        let t = st.render(1000);
        assert!(t.contains("10.0.0.1"));
        assert!(t.contains("0.5s ago"));
    }
}
