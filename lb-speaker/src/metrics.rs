//! The speaker's metrics, exposed by [`crate::http`] in the OpenMetrics
//! text format (what Prometheus scrapes) through `prometheus-client`.
//!
//! The exposed names are stable: a counter registered as `garps_sent` is
//! `flatlan_speaker_garps_sent_total` (OpenMetrics adds `_total`), the
//! name the hand-written exposition used before; dashboards, tests and the
//! bench read them.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::registry::Registry;

/// The prefix of every metric name.
const PREFIX: &str = "flatlan_speaker";

/// A monotonically increasing counter (a handle: clones count together).
#[derive(Debug, Default, Clone)]
pub struct Counter(PromCounter);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// Failover latency buckets, in seconds: the interesting range is the
/// detector window (deadAfter × interval ≈ 0.3 s) up to the 1 s budget.
pub const FAILOVER_BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0];

/// A fixed-bucket histogram of seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: PromHistogram,
    /// prometheus-client reads its count only in tests; ours do too.
    count: std::sync::Arc<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            inner: PromHistogram::new(FAILOVER_BUCKETS),
            count: Default::default(),
        }
    }
}

impl Histogram {
    /// Records one observation (seconds).
    pub fn observe(&self, secs: f64) {
        self.inner.observe(secs.max(0.0));
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every metric the speaker exports.
#[derive(Debug)]
pub struct Metrics {
    /// Claims that started announcing.
    pub announcements: Counter,
    /// ARP requests received for owned VIPs.
    pub arp_requests_received: Counter,
    /// ARP replies sent.
    pub arp_replies_sent: Counter,
    /// Gratuitous ARP frames sent (each round sends two: request and reply).
    pub garps_sent: Counter,
    /// Neighbor solicitations received for owned VIPs.
    pub ns_received: Counter,
    /// Neighbor advertisements sent (solicited and unsolicited).
    pub na_sent: Counter,
    /// Probes sent before first claims.
    pub probes_sent: Counter,
    /// Takeovers of a VIP from another member.
    pub failovers_total: Counter,
    /// From the previous owner's last heartbeat to our first announcement.
    pub failover_seconds: Histogram,
    /// Heartbeats whose HMAC did not verify.
    pub heartbeat_auth_failures: Counter,
    /// Authenticated heartbeats not counted as a sign of life: they echo
    /// no recent challenge of ours (a replay, or a peer that has not heard
    /// us yet).
    pub heartbeat_replays: Counter,
    /// Heartbeats of another wire version (a mixed-version cluster).
    pub heartbeat_version_mismatches: Counter,
    /// Heartbeats that were not ours at all or malformed.
    pub heartbeat_malformed: Counter,
    /// Authenticated heartbeats with our node name from another process
    /// (a duplicate `node.name`, or our own recorded heartbeats replayed).
    pub heartbeat_own_name: Counter,
    /// Heartbeats sent.
    pub heartbeats_sent: Counter,
    /// Heartbeats accepted.
    pub heartbeats_received: Counter,
    /// VIPs refused because another device answered the probe.
    pub conflicts: Counter,
    /// Foreign claims seen for a VIP we announce.
    pub foreign_answers: Counter,
    /// Frames the kernel refused to send.
    pub frame_send_errors: Counter,
    /// Warnings held back by the log rate limit (each event is still
    /// counted by its own metric).
    pub log_suppressed: Counter,
    /// Claims released unannounced because the VIP could not be added to
    /// `lo`.
    pub assign_failures: Counter,
    /// Config reloads applied (SIGHUP).
    pub config_reloads: Counter,
    /// Config reloads refused: the file did not validate.
    pub config_reload_failures: Counter,
    /// VIPs this node announces.
    pub owned_vips: Gauge,
    /// Live peers (excluding this node).
    pub live_members: Gauge,
    /// The LoadBalancer allocator (issue 13): 1 while this instance holds
    /// the Lease and allocates.
    pub allocator_leader: Gauge,
    /// Services given new addresses.
    pub allocations: Counter,
    /// Allocation failures by reason (pool_exhausted, outside_pools,
    /// taken, sharing_conflict, no_pool, bad_request, other), counted
    /// once per new failure, not per retry.
    pub allocation_failures: Family<Vec<(String, String)>, PromCounter>,
    /// Addresses per pool, family (ipv4, ipv6) and state (used, free).
    pub pool_addresses: Family<Vec<(String, String)>, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.0.clone());
            c
        };
        let announcements = counter("announcements", "VIP claims that started announcing");
        let arp_requests_received = counter(
            "arp_requests_received",
            "ARP requests received for owned VIPs",
        );
        let arp_replies_sent = counter("arp_replies_sent", "ARP replies sent for owned VIPs");
        let garps_sent = counter(
            "garps_sent",
            "gratuitous ARP frames sent (request and reply forms)",
        );
        let ns_received = counter(
            "ns_received",
            "neighbor solicitations received for owned VIPs",
        );
        let na_sent = counter("na_sent", "neighbor advertisements sent");
        let probes_sent = counter("probes_sent", "conflict probes sent before a first claim");
        let failovers_total = counter("failovers", "VIPs taken over from another member");
        let heartbeat_auth_failures =
            counter("heartbeat_auth_failures", "heartbeats with a bad HMAC");
        let heartbeat_replays = counter(
            "heartbeat_replays",
            "authenticated heartbeats that echo no recent challenge of ours \
             (replayed, or from a peer that has not heard us yet)",
        );
        let heartbeat_version_mismatches = counter(
            "heartbeat_version_mismatches",
            "heartbeats of another wire version: a speaker of another release is on the LAN",
        );
        let heartbeat_malformed = counter(
            "heartbeat_malformed",
            "datagrams that are not valid heartbeats",
        );
        let heartbeat_own_name = counter(
            "heartbeat_own_name",
            "authenticated heartbeats with this node's name from another process",
        );
        let heartbeats_sent = counter("heartbeats_sent", "heartbeats sent");
        let heartbeats_received = counter("heartbeats_received", "heartbeats accepted");
        let conflicts = counter(
            "conflicts",
            "VIPs refused because another device answered the probe",
        );
        let foreign_answers = counter(
            "foreign_answers",
            "foreign claims seen for an announced VIP",
        );
        let frame_send_errors = counter("frame_send_errors", "frames the kernel refused to send");
        let log_suppressed = counter(
            "log_suppressed",
            "warnings held back by the log rate limit (the events are counted too)",
        );
        let assign_failures = counter(
            "assign_failures",
            "claims released unannounced: the VIP could not be added to lo",
        );
        let config_reloads = counter("config_reloads", "config reloads applied");
        let config_reload_failures = counter(
            "config_reload_failures",
            "config reloads refused because the file did not validate",
        );
        let failover_seconds = Histogram::default();
        registry.register(
            "failover_seconds",
            "previous owner's last heartbeat to our first announcement",
            failover_seconds.inner.clone(),
        );
        let owned_vips = Gauge::default();
        registry.register("owned_vips", "VIPs this node announces", owned_vips.clone());
        let live_members = Gauge::default();
        registry.register(
            "live_members",
            "live peers (excluding this node)",
            live_members.clone(),
        );
        let allocator_leader = Gauge::default();
        registry.register(
            "allocator_leader",
            "1 while this instance holds the allocator Lease",
            allocator_leader.clone(),
        );
        let allocations = Counter::default();
        registry.register(
            "lb_allocations",
            "LoadBalancer Services given new addresses",
            allocations.0.clone(),
        );
        let allocation_failures = Family::default();
        registry.register(
            "lb_allocation_failures",
            "LoadBalancer allocations that failed, by reason",
            allocation_failures.clone(),
        );
        let pool_addresses = Family::default();
        registry.register(
            "pool_addresses",
            "addresses per pool, family and state (used or free)",
            pool_addresses.clone(),
        );
        Metrics {
            announcements,
            arp_requests_received,
            arp_replies_sent,
            garps_sent,
            ns_received,
            na_sent,
            probes_sent,
            failovers_total,
            failover_seconds,
            heartbeat_auth_failures,
            heartbeat_replays,
            heartbeat_version_mismatches,
            heartbeat_malformed,
            heartbeat_own_name,
            heartbeats_sent,
            heartbeats_received,
            conflicts,
            foreign_answers,
            frame_send_errors,
            log_suppressed,
            assign_failures,
            config_reloads,
            config_reload_failures,
            owned_vips,
            live_members,
            allocator_leader,
            allocations,
            allocation_failures,
            pool_addresses,
            registry,
        }
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    /// Counts one announcement round's frames for `vip`.
    pub fn count_announce(&self, vip: IpAddr) {
        match vip {
            IpAddr::V4(_) => self.garps_sent.add(2),
            IpAddr::V6(_) => self.na_sent.inc(),
        }
    }

    /// Sets the gauges the engine supplies.
    pub fn set_gauges(&self, owned: usize, members: usize) {
        self.owned_vips.set(owned as i64);
        self.live_members.set(members as i64);
    }

    /// Counts a new allocation failure by its reason label.
    pub fn count_allocation_failure(&self, reason: &str) {
        self.allocation_failures
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// Sets the pool gauges to the allocator's usage; pools that are gone
    /// disappear from the output.
    pub fn set_pool_usage(&self, usage: &[flatlan_k8s::allocator::PoolUsage]) {
        self.pool_addresses.clear();
        let n = |v: u128| i64::try_from(v).unwrap_or(i64::MAX);
        for u in usage {
            for (family, used, free) in [
                ("ipv4", u.assigned_v4, u.available_v4),
                ("ipv6", u.assigned_v6, u.available_v6),
            ] {
                for (state, v) in [("used", used), ("free", free)] {
                    let labels = vec![
                        ("pool".to_string(), u.name.clone()),
                        ("family".to_string(), family.to_string()),
                        ("state".to_string(), state.to_string()),
                    ];
                    self.pool_addresses.get_or_create(&labels).set(n(v));
                }
            }
        }
    }

    /// Renders the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Reads one metric's value from rendered text (tests and the bench use it).
pub fn scrape(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names dashboards, tests and the bench read stay as they were.
    #[test]
    fn renders_and_scrapes_the_stable_names() {
        let m = Metrics::default();
        m.garps_sent.add(6);
        m.failovers_total.inc();
        m.failover_seconds.observe(0.35);
        m.failover_seconds.observe(0.45);
        m.set_gauges(2, 1);
        let t = m.render();
        assert_eq!(scrape(&t, "flatlan_speaker_garps_sent_total"), Some(6.0));
        assert_eq!(scrape(&t, "flatlan_speaker_failovers_total"), Some(1.0));
        assert_eq!(
            scrape(&t, "flatlan_speaker_failover_seconds_count"),
            Some(2.0)
        );
        assert!(t.contains("flatlan_speaker_failover_seconds_bucket{le=\"0.4\"} 1"));
        assert!(t.contains("flatlan_speaker_failover_seconds_bucket{le=\"0.5\"} 2"));
        assert!(t.contains("flatlan_speaker_failover_seconds_bucket{le=\"+Inf\"} 2"));
        assert_eq!(scrape(&t, "flatlan_speaker_owned_vips"), Some(2.0));
        assert_eq!(scrape(&t, "flatlan_speaker_live_members"), Some(1.0));
        for name in [
            "announcements",
            "heartbeat_auth_failures",
            "heartbeat_replays",
            "heartbeat_own_name",
            "foreign_answers",
            "log_suppressed",
            "config_reload_failures",
            "conflicts",
        ] {
            let n = format!("flatlan_speaker_{name}_total");
            assert_eq!(scrape(&t, &n), Some(0.0), "{n} in\n{t}");
        }
        assert!(t.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    }
}
