//! Leader election with a `coordination.k8s.io/v1` Lease, the way
//! client-go's leaderelection does it, with one request per retry period:
//!
//! - Another holder's lease is expired when its record (holder, renewTime,
//!   transitions) has not changed for `leaseDurationSeconds` **on our own
//!   monotonic clock**, counted from when we first saw that record. The
//!   wall-clock renewTime is written for humans only, so a clock that jumps
//!   on either node never makes two leaders.
//! - The leader acts only while its last successful renewal was *sent* less
//!   than `renew_deadline` ago; `renew_deadline < lease_duration` leaves
//!   the margin by which it stops before anyone else may take over.
//! - Every write carries the resourceVersion it was decided on, so two
//!   candidates racing for an expired lease cannot both win (409).
//! - The leader renews by replacing the object it last wrote (no GET);
//!   followers GET once per retry period. Neither depends on the number
//!   of Services.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

/// What a candidate does with the lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// There is no lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: take it over.
    Takeover,
    /// Someone else holds it and renews.
    Wait,
}

/// The pure decision. `unchanged_for` is how long, on our monotonic
/// clock, the lease's record has stayed the same since we first saw it;
/// `default_duration` applies when the lease names none.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Action {
    let Some(spec) = lease else {
        return Action::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Action::Renew,
        None | Some("") => Action::Takeover,
        Some(_) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for >= duration {
                Action::Takeover
            } else {
                Action::Wait
            }
        }
    }
}

/// The lease timers (see [`super::Options`]).
#[derive(Debug, Clone)]
pub struct Timers {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    /// Bound on one API request, so a hung request cannot hold a term open.
    pub request_timeout: Duration,
}

/// The record whose change shows that its holder is alive.
type Record = (Option<String>, Option<String>, Option<i32>, Option<String>);

fn record(spec: Option<&LeaseSpec>) -> Record {
    let spec = spec.cloned().unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0.to_string()),
        spec.lease_transitions,
        spec.acquire_time.map(|t| t.0.to_string()),
    )
}

/// One candidate's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timers: Timers,
    /// The record last read and when it was first seen (monotonic).
    observed: Option<(Record, Instant)>,
    /// The lease as we last wrote it while holding it.
    mine: Option<Lease>,
    /// When the last successful renewal was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timers: Timers) -> Self {
        Elector {
            api,
            name: name.into(),
            identity: identity.into(),
            timers,
            observed: None,
            mine: None,
            renewed_at: None,
        }
    }

    /// Whether this instance may act now: its last renewal was sent less
    /// than `renew_deadline` ago.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|t| now < t + self.timers.renew_deadline)
    }

    /// Whether a write that may take up to `request_timeout` can start
    /// now: it lands before anyone else may take the lease over, which is
    /// `lease_duration` after they saw our last renewal (itself after we
    /// sent it).
    pub fn may_write(&self, now: Instant) -> bool {
        self.is_leader(now)
            && self
                .renewed_at
                .is_some_and(|t| now + self.timers.request_timeout < t + self.timers.lease_duration)
    }

    /// Gives the lease up (a pod shutting down), as client-go's
    /// ReleaseOnCancel does: no holder, a 1 s duration, so a follower
    /// takes over at its next poll instead of after `lease_duration`. The
    /// caller has stopped writing. Returns whether the release was written.
    pub async fn release(&mut self) -> bool {
        let Some(mut lease) = self.mine.take() else {
            return false;
        };
        if !self.is_leader(Instant::now()) {
            return false;
        }
        self.renewed_at = None;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let ok = self.write(&lease, false).await.is_ok();
        if ok {
            info!("released lease {}", self.name);
        }
        ok
    }

    /// Waits until this instance holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            if self.try_acquire_or_renew().await {
                return;
            }
            tokio::time::sleep(self.timers.retry_period).await;
        }
    }

    /// One round: renew, create or take over the lease if that is due.
    /// Returns whether this instance may act.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        let now = Instant::now();
        if let Some(mut lease) = self.mine.take() {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self.write(&lease, false).await {
                Ok(l) => {
                    self.held(l, now);
                    return true;
                }
                Err(Some(409)) => debug!("lease {} changed under us; reading it", self.name),
                Err(_) => {
                    // Keep trying with the same object until the deadline.
                    self.mine = Some(lease);
                    return self.is_leader(Instant::now());
                }
            }
        }
        let got = match timeout(self.timers.request_timeout, self.api.get_opt(&self.name)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                warn!("reading lease {}: {e}", self.name);
                return false;
            }
            Err(_) => {
                warn!("reading lease {}: timed out", self.name);
                return false;
            }
        };
        let rec = record(got.as_ref().and_then(|l| l.spec.as_ref()));
        let seen_at = match &self.observed {
            Some((r, at)) if *r == rec => *at,
            _ => now,
        };
        self.observed = Some((rec, seen_at));
        let spec = got.as_ref().and_then(|l| l.spec.as_ref());
        let action = decide(
            spec,
            &self.identity,
            now.saturating_duration_since(seen_at),
            self.timers.lease_duration,
        );
        let wall = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.timers.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let lease = match (action, got) {
            (Action::Wait, _) => return false,
            (Action::Create, _) => Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(wall.clone()),
                    renew_time: Some(wall),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            },
            (_, None) => return false,
            (Action::Renew, Some(mut l)) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(wall);
                spec.lease_duration_seconds = Some(secs);
                l
            }
            (Action::Takeover, Some(mut l)) => {
                let spec = l.spec.get_or_insert_with(Default::default);
                info!(
                    "taking over lease {} from {:?}",
                    self.name, spec.holder_identity
                );
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(secs);
                spec.acquire_time = Some(wall.clone());
                spec.renew_time = Some(wall);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                l
            }
        };
        match self.write(&lease, action == Action::Create).await {
            Ok(l) => {
                self.held(l, now);
                true
            }
            Err(_) => false,
        }
    }

    fn held(&mut self, lease: Lease, sent: Instant) {
        self.renewed_at = Some(sent);
        self.observed = Some((record(lease.spec.as_ref()), sent));
        self.mine = Some(lease);
    }

    /// Creates or replaces (conditional on its resourceVersion) the lease;
    /// the error is the HTTP status when there is one.
    async fn write(&self, lease: &Lease, create: bool) -> Result<Lease, Option<u16>> {
        let pp = PostParams {
            field_manager: Some(super::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let req = async {
            if create {
                self.api.create(&pp, lease).await
            } else {
                self.api.replace(&self.name, &pp, lease).await
            }
        };
        match timeout(self.timers.request_timeout, req).await {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(kube::Error::Api(s))) => {
                if s.code != 409 {
                    warn!("writing lease {}: {}", self.name, s.message);
                }
                Err(Some(s.code))
            }
            Ok(Err(e)) => {
                warn!("writing lease {}: {e}", self.name);
                Err(None)
            }
            Err(_) => {
                warn!("writing lease {}: timed out", self.name);
                Err(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(h: &str, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(h.into()),
            lease_duration_seconds: secs,
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let d = Duration::from_secs(10);
        assert_eq!(decide(None, "a", Duration::ZERO, d), Action::Create);
        let mine = held_by("a", Some(10));
        assert_eq!(decide(Some(&mine), "a", Duration::ZERO, d), Action::Renew);
        let other = held_by("b", Some(10));
        assert_eq!(
            decide(Some(&other), "a", Duration::from_secs(9), d),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&other), "a", Duration::from_secs(10), d),
            Action::Takeover
        );
        // The holder's own duration wins over ours.
        let long = held_by("b", Some(60));
        assert_eq!(
            decide(Some(&long), "a", Duration::from_secs(30), d),
            Action::Wait
        );
        let released = LeaseSpec::default();
        assert_eq!(
            decide(Some(&released), "a", Duration::ZERO, d),
            Action::Takeover
        );
    }
}
