//! Prometheus metrics, rendered by hand in the text exposition format
//! (version 0.0.4): a handful of counters and one histogram do not justify
//! a metrics crate in a daemon that must stay small.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Failover latency buckets, in seconds: the interesting range is the
/// detector window (deadAfter × interval ≈ 0.3 s) up to the 1 s budget.
pub const FAILOVER_BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; FAILOVER_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it fits an atomic integer.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation (seconds).
    pub fn observe(&self, secs: f64) {
        for (i, b) in FAILOVER_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every metric the speaker exports.
#[derive(Debug, Default)]
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
    /// Authenticated heartbeats refused as replayed or stale.
    pub heartbeat_replays: Counter,
    /// Heartbeats that were not ours at all or malformed.
    pub heartbeat_malformed: Counter,
    /// Heartbeats sent.
    pub heartbeats_sent: Counter,
    /// Heartbeats accepted.
    pub heartbeats_received: Counter,
    /// VIPs refused because another device answered the probe.
    pub conflicts: Counter,
    /// Foreign claims seen for a VIP we announce.
    pub foreign_answers: Counter,
    /// Claims released unannounced because the VIP could not be added to
    /// `lo`.
    pub assign_failures: Counter,
    /// Config reloads applied (SIGHUP).
    pub config_reloads: Counter,
    /// Config reloads refused: the file did not validate.
    pub config_reload_failures: Counter,
}

impl Metrics {
    /// Counts one announcement round's frames for `vip`.
    pub fn count_announce(&self, vip: IpAddr) {
        match vip {
            IpAddr::V4(_) => self.garps_sent.add(2),
            IpAddr::V6(_) => self.na_sent.inc(),
        }
    }

    /// Renders the text exposition format. `owned` and `members` are
    /// gauges the engine supplies.
    pub fn render(&self, owned: usize, members: usize) -> String {
        let mut s = String::with_capacity(2048);
        let counters: [(&str, &str, &Counter); 18] = [
            (
                "announcements",
                "VIP claims that started announcing",
                &self.announcements,
            ),
            (
                "arp_requests_received",
                "ARP requests received for owned VIPs",
                &self.arp_requests_received,
            ),
            (
                "arp_replies_sent",
                "ARP replies sent for owned VIPs",
                &self.arp_replies_sent,
            ),
            (
                "garps_sent",
                "gratuitous ARP frames sent (request and reply forms)",
                &self.garps_sent,
            ),
            (
                "ns_received",
                "neighbor solicitations received for owned VIPs",
                &self.ns_received,
            ),
            ("na_sent", "neighbor advertisements sent", &self.na_sent),
            (
                "probes_sent",
                "conflict probes sent before a first claim",
                &self.probes_sent,
            ),
            (
                "failovers",
                "VIPs taken over from another member",
                &self.failovers_total,
            ),
            (
                "heartbeat_auth_failures",
                "heartbeats with a bad HMAC",
                &self.heartbeat_auth_failures,
            ),
            (
                "heartbeat_replays",
                "authenticated heartbeats refused as stale or replayed",
                &self.heartbeat_replays,
            ),
            (
                "heartbeat_malformed",
                "datagrams that are not valid heartbeats",
                &self.heartbeat_malformed,
            ),
            ("heartbeats_sent", "heartbeats sent", &self.heartbeats_sent),
            (
                "heartbeats_received",
                "heartbeats accepted",
                &self.heartbeats_received,
            ),
            (
                "conflicts",
                "VIPs refused because another device answered the probe",
                &self.conflicts,
            ),
            (
                "foreign_answers",
                "foreign claims seen for an announced VIP",
                &self.foreign_answers,
            ),
            (
                "assign_failures",
                "claims released unannounced: the VIP could not be added to lo",
                &self.assign_failures,
            ),
            (
                "config_reloads",
                "config reloads applied",
                &self.config_reloads,
            ),
            (
                "config_reload_failures",
                "config reloads refused because the file did not validate",
                &self.config_reload_failures,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(s, "# HELP flatlan_speaker_{name}_total {help}");
            let _ = writeln!(s, "# TYPE flatlan_speaker_{name}_total counter");
            let _ = writeln!(s, "flatlan_speaker_{name}_total {}", c.get());
        }
        let h = &self.failover_seconds;
        let _ = writeln!(s, "# HELP flatlan_speaker_failover_seconds previous owner's last heartbeat to our first announcement");
        let _ = writeln!(s, "# TYPE flatlan_speaker_failover_seconds histogram");
        for (i, b) in FAILOVER_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "flatlan_speaker_failover_seconds_bucket{{le=\"{b}\"}} {}",
                h.buckets[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "flatlan_speaker_failover_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count()
        );
        let _ = writeln!(
            s,
            "flatlan_speaker_failover_seconds_sum {}",
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "flatlan_speaker_failover_seconds_count {}", h.count());
        let _ = writeln!(
            s,
            "# HELP flatlan_speaker_owned_vips VIPs this node announces"
        );
        let _ = writeln!(s, "# TYPE flatlan_speaker_owned_vips gauge");
        let _ = writeln!(s, "flatlan_speaker_owned_vips {owned}");
        let _ = writeln!(
            s,
            "# HELP flatlan_speaker_live_members live peers (excluding this node)"
        );
        let _ = writeln!(s, "# TYPE flatlan_speaker_live_members gauge");
        let _ = writeln!(s, "flatlan_speaker_live_members {members}");
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

    #[test]
    fn renders_and_scrapes() {
        let m = Metrics::default();
        m.garps_sent.add(6);
        m.failover_seconds.observe(0.35);
        m.failover_seconds.observe(0.45);
        let t = m.render(2, 1);
        assert_eq!(scrape(&t, "flatlan_speaker_garps_sent_total"), Some(6.0));
        assert_eq!(
            scrape(&t, "flatlan_speaker_failover_seconds_count"),
            Some(2.0)
        );
        assert!(t.contains("flatlan_speaker_failover_seconds_bucket{le=\"0.4\"} 1"));
        assert!(t.contains("flatlan_speaker_failover_seconds_bucket{le=\"0.5\"} 2"));
        assert_eq!(scrape(&t, "flatlan_speaker_owned_vips"), Some(2.0));
    }
}
