//! The gather step: what a heartbeat's events, a frame, a source update,
//! a signal or an interface poll change before the turn is planned.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use super::Engine;
use crate::announcer::Phase;
use crate::config::Config;
use crate::iface::{self, IfaceInfo};
use crate::membership::Event;
use crate::plan::Intent;
use crate::reload;
use crate::source::{self, DesiredVip, Update};

impl Engine {
    pub(super) fn on_events(&mut self, events: Vec<Event>) {
        for ev in events {
            // A healed partition: both sides may have announced; make the
            // LAN's caches point at whoever owns now.
            if let Event::Rejoined(_) = ev {
                self.intents.push(Intent::Reannounce(None));
            }
        }
    }

    pub(super) fn on_frame(&mut self, now: Instant, ifname: &str, frame: &[u8]) {
        let membership = self.inbox.membership();
        let is_member = |m| membership.is_member_mac(m);
        let acts = self.announcer.on_frame(now, ifname, frame, &is_member);
        self.actions.extend(acts);
    }

    pub(super) fn on_update(&mut self, now: Instant, update: Update) {
        match update {
            Update::Config(new) => self.apply_config(now, &new),
            Update::Vips(vips) => self.set_desired(now, vips),
            Update::Refused(e) => {
                self.metrics.config_reload_failures.inc();
                tracing::error!("reload refused, the running config stays: {e}");
            }
        }
    }

    /// Applies what of `new` a running speaker can take (see
    /// [`crate::reload`]): its VIPs, peers and interface allow list.
    pub fn apply_config(&mut self, now: Instant, new: &Config) {
        let plan = reload::plan(&self.cfg, new);
        for field in &plan.needs_restart {
            tracing::warn!(
                field,
                "changed in the config file: takes effect after a restart"
            );
        }
        self.cfg = reload::apply(&self.cfg, new);
        self.metrics.config_reloads.inc();
        tracing::info!(
            added = plan.added.len(),
            removed = plan.removed.len(),
            "config reloaded"
        );
        self.set_desired(now, source::from_config(&self.cfg));
    }

    /// Takes the source's desired set: new VIPs are claimed once peers
    /// heard of them, dropped ones held until their successor announces
    /// them (released at once if no peer has them).
    pub fn set_desired(&mut self, now: Instant, vips: Vec<DesiredVip>) {
        let list: Vec<IpAddr> = vips.iter().map(DesiredVip::address).collect();
        self.desired = vips;
        let added = self.planner.set_vips(now, &list);
        // Peers learn our new eligible set at once rather than within an
        // interval: that is what lets the VIP's owner be agreed on quickly.
        self.heartbeat_now = true;
        if added {
            self.outbox = Some((self.outgoing(now), true));
            self.tells_added = true;
        }
        self.next_status = now;
    }

    pub(super) fn begin_leaving(&mut self, now: Instant, why: &str) {
        if self.leaving.is_none() {
            tracing::info!(why, "leaving: handing VIPs over before stopping");
            self.leaving = Some(now);
            self.planner.leave(now);
            self.heartbeat_now = true;
        }
    }

    /// The VIPs this node may own, with their interfaces. A VIP the host
    /// refused is left out while it backs off, so that the next node by
    /// hash owns it rather than nobody.
    pub(super) fn my_eligible(&self, now: Instant) -> BTreeMap<IpAddr, IfaceInfo> {
        let mut out = BTreeMap::new();
        if self.leaving.is_some() {
            return out;
        }
        for d in self.desired.iter().filter(|d| d.eligible) {
            let v = d.address();
            if self.announcer.backing_off(v, now) {
                continue;
            }
            if let Some(i) = iface::choose(&self.cfg, &d.vip, &self.ifaces) {
                if i.running && !i.mac.is_zero() {
                    out.insert(v, i.clone());
                }
            }
        }
        out
    }

    /// Acts on a new interface table (after an rtnetlink link or address
    /// event, [`crate::link_events`]).
    pub(super) fn on_ifaces(&mut self, now: Instant, fresh: BTreeMap<String, IfaceInfo>) {
        let mut came_back = false;
        let mut recreated = Vec::new();
        for (name, i) in &fresh {
            let was = self.ifaces.get(name);
            if was.is_some_and(|w| w.index != i.index || w.mac != i.mac) {
                // A new device starts with default sysctls: prepare it
                // again. A new MAC on the same device keeps ours, and
                // preparing again would save them as the originals.
                if was.is_some_and(|w| w.index != i.index) {
                    self.exec.recreated(name);
                }
                recreated.push(name.clone());
                continue;
            }
            if i.running && was.is_some_and(|w| !w.running) {
                tracing::info!(iface = %name, "link is back: re-announcing, listening for peers");
                self.intents.push(Intent::Reannounce(Some(name.clone())));
                came_back = true;
            }
            if !i.running && was.is_some_and(|w| w.running) {
                tracing::warn!(iface = %name, "link is down");
            }
        }
        if came_back {
            self.planner.listen(now);
            self.heartbeat_now = true;
        }
        // Interfaces that vanished or were recreated lose their sockets
        // before anything is released on them: nothing to leave there.
        self.ifaces = fresh;
        self.exec.sync_sockets(&self.announcer, &self.ifaces);
        // An owned VIP someone took off `lo` (the address event brought
        // us here) goes back at once: the kernel drops its traffic.
        self.exec
            .reassign_lost(now, &self.announcer, self.ifaces.get("lo"));
        // A VIP claimed on a recreated interface (or one whose MAC changed)
        // would stay "owned" with no socket and a stale MAC: deaf to ARP/NS
        // while peers think it is served. Release it; the turn that follows
        // claims it again, which opens fresh sockets, sets the sysctls of a
        // new device and announces the new MAC.
        for name in recreated {
            tracing::warn!(iface = %name, "interface recreated or its MAC changed: claiming its VIPs again");
            for (vip, s) in self.announcer.vips() {
                if s.link.iface == name && !matches!(s.phase, Phase::Idle) {
                    self.intents.push(Intent::Release(*vip));
                }
            }
        }
    }
}
