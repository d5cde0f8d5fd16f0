//! Rate limits for the warnings a packet from outside can trigger.
//!
//! A LAN host (or any pod on the bridge) can send thousands of packets a
//! second: forged heartbeats or ones of another wire version, datagrams that claim our node
//! name, ARP replies claiming a VIP we announce. Logged one line per
//! packet, such a flood wrote 68–84 MB of log in 10 s (issue 12, finding
//! 4). So each kind of warning is logged at most once per [`EVERY`], with
//! how many were held back since; every event is still counted by its own
//! metric, and the held-back lines by `flatlan_speaker_log_suppressed_total`.

use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How often one kind of warning is logged at most.
pub const EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated warning through at most once per `every`, and counts
/// what it held back meanwhile.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        LogLimit::new(EVERY)
    }
}

impl LogLimit {
    /// A limit of one warning per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimit {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(n)` if the warning is to be logged now, `n` being how many
    /// were held back since the last one; `None` to hold this one back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// [`Self::allow`], counting a held-back warning in `metrics`.
    pub fn pass(&mut self, now: Instant, metrics: &Metrics) -> Option<u64> {
        let r = self.allow(now);
        if r.is_none() {
            metrics.log_suppressed.inc();
        }
        r
    }
}

/// The engine's limits, one per kind of warning a datagram or a failed
/// send can trigger.
#[derive(Debug, Default)]
pub struct EngineNoise {
    /// Heartbeats with a bad HMAC.
    pub bad_mac: LogLimit,
    /// Heartbeats of another wire version (a mixed-version cluster).
    pub version: LogLimit,
    /// Authenticated heartbeats with our name from another process.
    pub own_name: LogLimit,
    /// A node heard for a while whose heartbeats never echo ours.
    pub unanswered: LogLimit,
    /// Frames the kernel refused to send (an ARP storm answered into a
    /// full queue).
    pub send: LogLimit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_period_with_what_was_held() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = LogLimit::new(10 * s);
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + s), None);
        assert_eq!(l.allow(t0 + 9 * s), None);
        assert_eq!(l.allow(t0 + 10 * s), Some(2));
        assert_eq!(l.allow(t0 + 11 * s), None);
        assert_eq!(l.allow(t0 + 30 * s), Some(1));
        let m = Metrics::default();
        let mut l = LogLimit::default();
        assert!(l.pass(t0, &m).is_some());
        assert!(l.pass(t0 + s, &m).is_none());
        assert_eq!(m.log_suppressed.get(), 1);
    }
}
