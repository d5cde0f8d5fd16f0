//! What the engine shows: its heartbeat ([`crate::outgoing`]) and its
//! status ([`Status::of`]), both built from a [`Snapshot`] of its parts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use super::Engine;
use crate::heartbeat::Outgoing;
use crate::iface::IfaceInfo;
use crate::snapshot::Snapshot;
use crate::status::Status;

impl Engine {
    pub(super) fn snapshot<'a>(
        &'a self,
        mine: &'a BTreeMap<IpAddr, IfaceInfo>,
        echoes: Vec<u64>,
    ) -> Snapshot<'a> {
        Snapshot {
            cfg: &self.cfg,
            nonce: self.inbox.nonce(),
            leaving: self.leaving.is_some(),
            mine,
            desired: &self.desired,
            ifaces: &self.ifaces,
            announcer: &self.announcer,
            membership: self.inbox.membership(),
            planner: &self.planner,
            echoes,
        }
    }

    /// What our heartbeat says now.
    pub(super) fn outgoing(&self, now: Instant) -> Outgoing {
        let mine = self.my_eligible(now);
        crate::outgoing::build(&self.snapshot(&mine, self.inbox.echoes(now)))
    }

    pub(super) fn status(&self) -> Status {
        let mine = self.my_eligible(Instant::now());
        Status::of(&self.snapshot(&mine, Vec::new()))
    }

    pub(super) fn publish(&self) {
        let st = self.status();
        if let Ok(json) = serde_json::to_string_pretty(&st) {
            if let Ok(mut s) = self.shared.status_json.lock() {
                *s = json;
            }
        }
        self.metrics
            .set_gauges(self.last_owned.len(), self.inbox.membership().live().len());
        if let Some(p) = &self.cfg.status_file {
            if let Err(e) = st.write_atomic(p) {
                tracing::warn!("status file: {e}");
            }
        }
        self.shared
            .status
            .send_replace(Some(std::sync::Arc::new(st)));
    }
}
