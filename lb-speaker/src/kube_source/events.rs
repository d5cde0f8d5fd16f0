//! The speaker's Events on Services (issue 13): `nodeAssigned` when this
//! node starts announcing a Service's VIP, and `AddressConflict` (Warning)
//! when this node's probe found a LAN host already holding it.
//!
//! They are written with `events.k8s.io/v1` through kube's
//! [`Recorder`]: the current Events API (core/v1 Events are its legacy
//! view), with `reportingController`/`reportingInstance` naming the
//! speaker and the node, and a repeat within minutes becomes a series
//! (one PATCH) instead of a new object.
//!
//! Nothing here is on the failover path: a task of its own diffs the
//! engine's published status ([`crate::source::StatusRx`], a watch the
//! engine replaces without waiting), queues what changed on a bounded
//! channel (full: dropped and logged), and writes at most a few per
//! second, each with a timeout and never retried: an Event that cannot be
//! written during an API outage is lost, which is what kubelet does too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::{mpsc, watch};

use super::desired::{Index, ServiceRef};
use crate::source::StatusRx;
use crate::status::Status;

/// `reportingController` of every Event the speaker writes.
pub const CONTROLLER: &str = "flatlan.dev/speaker";
/// The reason when this node starts announcing a Service's VIP
/// (MetalLB's spelling, so existing alerts keep matching).
pub const NODE_ASSIGNED: &str = "nodeAssigned";
/// The reason when a LAN host answered this node's probe for a VIP.
pub const CONFLICT: &str = "AddressConflict";

/// Queued Events beyond this are dropped (and logged).
const QUEUE: usize = 256;
/// One write may take this long; then it is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same Event on the same Service is written at most this often.
const SAME_EVENT_EVERY: Duration = Duration::from_secs(60);
/// At most this many writes in a burst, refilled at one per `REFILL`.
const BURST: u32 = 10;
const REFILL: Duration = Duration::from_millis(500);

/// An Event to write on one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub service: ServiceRef,
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// What the last status showed, to see what changed (pure).
#[derive(Debug, Default)]
pub struct Differ {
    announcing: BTreeSet<IpAddr>,
    conflicts: BTreeMap<IpAddr, String>,
}

impl Differ {
    /// The Events `st` calls for, given the addresses' Services.
    pub fn diff(&mut self, st: &Status, index: &Index) -> Vec<Pending> {
        let mut out = Vec::new();
        let mut announcing = BTreeSet::new();
        let mut conflicts = BTreeMap::new();
        for v in &st.vips {
            let Ok(ip) = v.vip.parse::<IpAddr>() else {
                continue;
            };
            let info = index.get(&ip);
            let services = info.map(|i| i.services.as_slice()).unwrap_or_default();
            if v.state == "announcing" {
                announcing.insert(ip);
                if !self.announcing.contains(&ip) {
                    let iface = v.interface.as_deref().unwrap_or("?");
                    for s in services {
                        out.push(Pending {
                            service: s.clone(),
                            warning: false,
                            reason: NODE_ASSIGNED,
                            action: "Announce",
                            note: format!(
                                "announcing {ip} from node {} interface {iface}",
                                st.node
                            ),
                        });
                    }
                }
            }
            if let Some(mac) = &v.probe_answered_by {
                conflicts.insert(ip, mac.clone());
                if self.conflicts.get(&ip) != Some(mac) {
                    let pool = info.map_or("its pool", |i| i.pool.as_str());
                    for s in services {
                        out.push(Pending {
                            service: s.clone(),
                            warning: true,
                            reason: CONFLICT,
                            action: "Probe",
                            note: format!(
                                "node {} does not announce {ip}: the LAN host with MAC {mac} \
                                 answered its probe for it. Free the address on that host, or \
                                 remove {ip} from pool {pool} so that the Service gets another",
                                st.node
                            ),
                        });
                    }
                }
            }
        }
        self.announcing = announcing;
        self.conflicts = conflicts;
        out
    }
}

/// The reference an Event's `regarding` holds.
fn reference(s: &ServiceRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(s.key.namespace.clone()),
        name: Some(s.key.name.clone()),
        uid: s.uid.clone(),
        ..Default::default()
    }
}

/// Starts the differ and the writer (on the current runtime).
pub fn spawn(
    client: Client,
    node: String,
    mut status: StatusRx,
    index: watch::Receiver<Arc<Index>>,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(write(client, node, rx));
    tokio::spawn(async move {
        let mut differ = Differ::default();
        let mut dropped = 0u64;
        while status.changed().await.is_ok() {
            let Some(st) = status.borrow_and_update().clone() else {
                continue;
            };
            let idx = index.borrow().clone();
            for p in differ.diff(&st, &idx) {
                if tx.try_send(p).is_err() {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(dropped, "Event queue full; Events dropped");
                    }
                }
            }
        }
    });
}

/// A token bucket and a per-Event memory: what may be written now.
#[derive(Debug)]
pub struct Limiter {
    tokens: u32,
    refilled: Instant,
    recent: BTreeMap<(String, String, &'static str, String), Instant>,
}

impl Limiter {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Limiter {
            tokens: BURST,
            refilled: now,
            recent: BTreeMap::new(),
        }
    }

    /// Whether `p` may be written at `now` (and counts it if so).
    pub fn admit(&mut self, now: Instant, p: &Pending) -> bool {
        let gained = now.saturating_duration_since(self.refilled).as_millis() / REFILL.as_millis();
        if gained > 0 {
            self.tokens = (self.tokens + u32::try_from(gained).unwrap_or(BURST)).min(BURST);
            self.refilled = now;
        }
        self.recent
            .retain(|_, t| now.saturating_duration_since(*t) < SAME_EVENT_EVERY);
        let key = (
            p.service.key.namespace.clone(),
            p.service.key.name.clone(),
            p.reason,
            p.note.clone(),
        );
        if self.tokens == 0 || self.recent.contains_key(&key) {
            return false;
        }
        self.tokens -= 1;
        self.recent.insert(key, now);
        true
    }
}

async fn write(client: Client, node: String, mut rx: mpsc::Receiver<Pending>) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: CONTROLLER.into(),
            instance: Some(node),
        },
    );
    let mut limiter = Limiter::new(Instant::now());
    let mut failed = 0u64;
    while let Some(p) = rx.recv().await {
        if !limiter.admit(Instant::now(), &p) {
            tracing::debug!(service = %p.service.key, reason = p.reason, "Event rate-limited");
            continue;
        }
        let ev = Event {
            type_: if p.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: p.reason.into(),
            note: Some(p.note.clone()),
            action: p.action.into(),
            secondary: None,
        };
        let r = tokio::time::timeout(WRITE_TIMEOUT, recorder.publish(&ev, &reference(&p.service)))
            .await;
        let err = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {WRITE_TIMEOUT:?}"),
        };
        failed += 1;
        if failed.is_power_of_two() {
            tracing::warn!(service = %p.service.key, reason = p.reason, failed, "Event not written ({err}); not retried");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flatlan_k8s::model::ServiceKey;

    fn pending(name: &str, note: &str) -> Pending {
        Pending {
            service: ServiceRef {
                key: ServiceKey {
                    namespace: "ns".into(),
                    name: name.into(),
                },
                uid: None,
            },
            warning: false,
            reason: NODE_ASSIGNED,
            action: "Announce",
            note: note.into(),
        }
    }

    #[test]
    fn the_limiter_bounds_bursts_and_repeats() {
        let t0 = Instant::now();
        let mut l = Limiter::new(t0);
        // The same Event on the same Service: once a minute.
        assert!(l.admit(t0, &pending("a", "x")));
        assert!(!l.admit(t0, &pending("a", "x")));
        // A burst of distinct ones: BURST in all, then one per REFILL.
        let admitted = (0..50)
            .filter(|i| l.admit(t0, &pending(&format!("s{i}"), "x")))
            .count();
        assert_eq!(admitted, BURST as usize - 1);
        assert!(l.admit(t0 + REFILL, &pending("late", "x")));
        assert!(!l.admit(t0 + REFILL, &pending("later", "x")));
        // With tokens to spare, a repeat still waits out the minute.
        assert!(!l.admit(t0 + Duration::from_secs(59), &pending("a", "x")));
        assert!(l.admit(t0 + SAME_EVENT_EVERY, &pending("a", "x")));
    }
}
