//! The LoadBalancer allocator (issue 13 item 3): runs in every speaker
//! pod, acts in one. It elects itself with a Lease ([`lease`]), watches
//! Services, Namespaces, pools and advertisements ([`watch`]), decides
//! without I/O ([`plan`]: who gets which address, which Events, which pool
//! statuses) and writes the decisions ([`apply`]).
//!
//! - **One leader.** Only the Lease holder writes; it stops writing once
//!   its last renewal is older than `renew_deadline`, which is shorter than
//!   the `lease_duration` others wait (on their own monotonic clocks).
//! - **No double allocation on a handover.** A new leader lists every kind
//!   afresh (a consistent read) and rebuilds the allocator from every
//!   Service's `status.loadBalancer.ingress` before it assigns anything;
//!   status writes carry the resourceVersion they were decided on.
//! - **No reshuffle.** The same rebuild makes a restart keep every address.
//! - **API traffic is O(1) in the number of Services at steady state:** one
//!   watch per kind (re-established every ~5 min), one Lease request per
//!   retry period, and writes only when something changed.

pub mod apply;
pub mod lease;
pub mod plan;
pub mod pool_status;
pub mod watch;
pub mod world;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tracing::info;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use lease::{Elector, Timers};
use plan::Controller;
use world::World;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "flatlan-allocator";

/// How the allocator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The speaker's own namespace, where the Lease lives.
    pub namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// This instance's identity in the Lease: the pod name (unique per
    /// pod; a restarted pod with the same name takes its lease back at once).
    pub identity: String,
    /// Also serve LoadBalancer Services without a loadBalancerClass.
    pub default_class: bool,
    /// How long others wait for a silent leader (6 s): a dead leader is
    /// replaced within this plus one retry period ("within a few seconds",
    /// issue 13). Announcements do not wait on it; only new allocations
    /// do. The retry period, not this, sets the steady API traffic.
    pub lease_duration: Duration,
    /// The leader stops writing when its last successful renewal was sent
    /// this long ago (4 s): one failed renewal is survived, and 2 s remain
    /// before anyone may take over.
    pub renew_deadline: Duration,
    /// Renewal (leader) and poll (others) period (2 s).
    pub retry_period: Duration,
    /// Bound on each API request (3 s). A write starts only when it would
    /// land before the lease could be taken over: within
    /// `lease_duration - request_timeout` of the last renewal.
    pub request_timeout: Duration,
    /// How often a missing MetalLB CRD is looked for again (60 s).
    pub missing_crd_retry: Duration,
    pub metrics: Arc<Metrics>,
}

impl Options {
    /// The defaults above, for the Lease `flatlan-allocator` in `namespace`.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Options {
            namespace: namespace.into(),
            lease_name: "flatlan-allocator".into(),
            identity: identity.into(),
            default_class: false,
            lease_duration: Duration::from_secs(6),
            renew_deadline: Duration::from_secs(4),
            retry_period: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            missing_crd_retry: Duration::from_secs(60),
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::config("controller", m));
        if self.namespace.is_empty() || self.lease_name.is_empty() || self.identity.is_empty() {
            return bad("namespace, lease name and identity must not be empty");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad("the retry period must be shorter than the renew deadline");
        }
        if self.request_timeout.is_zero()
            || self.retry_period + self.request_timeout >= self.lease_duration
        {
            return bad("the retry period plus the request timeout must be shorter than the lease duration, or no write could start safely");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("the renew deadline must be shorter than the lease duration, or two leaders could overlap");
        }
        Ok(())
    }
}

/// Runs the allocator forever: waits for the Lease, allocates while it
/// holds it, and waits again when it loses it.
pub async fn run(client: Client, opts: Options) -> Result<()> {
    run_until(client, opts, std::future::pending()).await
}

/// [`run`] until `shutdown` completes; then, if it leads, it stops writing
/// and releases the Lease, so that another instance takes over at its next
/// poll (about `retry_period`) rather than after `lease_duration`: a
/// rolling update of the DaemonSet does not hold allocations up for long.
pub async fn run_until(
    client: Client,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    opts.check()?;
    let mut shutdown = std::pin::pin!(shutdown);
    let timers = Timers {
        lease_duration: opts.lease_duration,
        renew_deadline: opts.renew_deadline,
        retry_period: opts.retry_period,
        request_timeout: opts.request_timeout,
    };
    let api = Api::<Lease>::namespaced(client.clone(), &opts.namespace);
    let mut elector = Elector::new(api, &opts.lease_name, &opts.identity, timers);
    loop {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = &mut shutdown => return Ok(()),
        }
        info!(
            "{} holds lease {}/{}: allocating",
            opts.identity, opts.namespace, opts.lease_name
        );
        opts.metrics.allocator_leader.set(1);
        let stopping = tokio::select! {
            _ = lead(&client, &opts, &mut elector) => false,
            _ = &mut shutdown => true,
        };
        opts.metrics.allocator_leader.set(0);
        // Only the leader knows the pools' usage; a former one says nothing
        // rather than something stale.
        opts.metrics.set_pool_usage(&[]);
        if stopping {
            elector.release().await;
            return Ok(());
        }
        info!(
            "{} lost lease {}: no longer allocating",
            opts.identity, opts.lease_name
        );
        tokio::time::sleep(opts.retry_period).await;
    }
}

/// How long to wait before planning again after `failing` failed rounds
/// in a row: the retry period, doubled per failure, at most a minute.
fn retry_delay(retry_period: Duration, failing: u32) -> Duration {
    retry_period
        .saturating_mul(1 << failing.min(6))
        .min(Duration::from_secs(60).max(retry_period))
}

/// One leadership term: watch, plan, apply, renew; returns when the Lease
/// is lost. Watches and allocator state die with the term, so the next
/// term starts from a fresh consistent read.
async fn lead(client: &Client, opts: &Options, elector: &mut Elector) {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    watch::spawn_all(client, opts.missing_crd_retry, &tx, &mut tasks);
    drop(tx);
    let kinds = watch::kinds();
    let mut world = World::default();
    let mut ctl = Controller::new(opts.default_class);
    let mut next_renew = Instant::now() + opts.retry_period;
    let mut retry_at: Option<Instant> = None;
    // Rounds in a row with a failed write: the retry waits double each
    // time, up to a minute, so a write the API keeps refusing (a missing
    // RBAC rule, a CRD without its status subresource) costs a request a
    // minute, not one per retry period.
    let mut failing = 0u32;
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = sleep_until(next_renew) => {
                next_renew = Instant::now() + opts.retry_period;
                if !elector.try_acquire_or_renew().await {
                    break;
                }
            }
            Some(change) = rx.recv() => {
                world.apply(change);
                while let Ok(change) = rx.try_recv() {
                    world.apply(change);
                }
                dirty = true;
            }
            _ = sleep_until(retry_at.unwrap_or(next_renew)), if retry_at.is_some() => {
                retry_at = None;
                dirty = true;
            }
        }
        if !dirty || !world.synced(&kinds) || !elector.may_write(Instant::now()) {
            continue;
        }
        dirty = false;
        let plan = ctl.plan(&world, Time(Timestamp::now()));
        opts.metrics.allocations.add(plan.allocated);
        for reason in &plan.failed {
            opts.metrics.count_allocation_failure(reason);
        }
        opts.metrics.set_pool_usage(&plan.usage);
        if apply::apply(client, opts, plan.writes, &mut world, elector).await {
            retry_at = Some(Instant::now() + retry_delay(opts.retry_period, failing));
            failing = failing.saturating_add(1);
        } else {
            failing = 0;
        }
    }
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_write_is_retried_ever_more_slowly() {
        let p = Duration::from_secs(2);
        let d: Vec<u64> = (0..8).map(|n| retry_delay(p, n).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn options_that_could_overlap_two_leaders_are_refused() {
        let mut o = Options::new("flatlan", "pod-a");
        assert!(o.check().is_ok());
        o.renew_deadline = o.lease_duration;
        assert!(o.check().is_err());
        let mut o = Options::new("flatlan", "pod-a");
        o.request_timeout = Duration::from_secs(9);
        assert!(o.check().is_err());
        assert!(Options::new("flatlan", "").check().is_err());
    }
}
