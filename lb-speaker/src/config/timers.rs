//! The speaker's timers: their defaults, the duration syntax, and their
//! validation.

use std::time::Duration;

use serde::Deserialize;

use crate::detector::Detector;
use crate::error::{Error, Result};

/// The longest `refreshInterval`: switches age a MAC out after 300 s
/// (metallb#2910, #259), and a refresh must come well before that.
pub const MAX_REFRESH: Duration = Duration::from_secs(150);

/// The default `maxDeadTime`: the failure detector's bound on a lossy or
/// busy LAN, so that a hard kill still fails over within 1 s (the claim
/// itself takes a few ms).
pub const DEFAULT_MAX_DEAD_TIME: Duration = Duration::from_millis(800);

/// The longest `maxDeadTime` accepted.
const MAX_MAX_DEAD_TIME: Duration = Duration::from_secs(60);

/// Timers, all validated to be non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// How often a heartbeat is sent.
    pub heartbeat_interval: Duration,
    /// On a clean link, a member is dead after this many intervals without
    /// a newer proof of life: the failure detector's shortest timeout.
    pub dead_after: u32,
    /// The failure detector's longest timeout, reached on a lossy or busy
    /// link ([`crate::detector`]): what bounds failover there.
    pub max_dead_time: Duration,
    /// GARP (and unsolicited NA) rounds on claim. Several, because a single
    /// GARP is easily lost while switch ports and caches settle (MetalLB #123).
    pub garp_count: u32,
    /// Time between those rounds.
    pub garp_interval: Duration,
    /// Low-rate re-announcement while owning.
    pub refresh_interval: Duration,
    /// How long to listen for answers to the pre-claim probe.
    pub probe_timeout: Duration,
    /// How long a leaving speaker waits for its successors.
    pub handoff_timeout: Duration,
    /// How long a refused (conflicting) VIP waits before it is probed again.
    pub conflict_retry: Duration,
}

impl Timers {
    /// The time after which a silent member is dead on a clean link.
    pub fn dead_interval(&self) -> Duration {
        self.heartbeat_interval * self.dead_after
    }

    /// The failure detector these timers give.
    pub fn detector(&self) -> Detector {
        Detector::new(
            self.heartbeat_interval,
            self.dead_interval(),
            self.max_dead_time,
        )
    }
}

/// The default `handoffTimeout` for a heartbeat interval.
fn default_handoff(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * 5).max(Duration::from_millis(500))
}

impl Default for Timers {
    fn default() -> Self {
        // 50 ms heartbeats, dead after 5 on a clean link (250 ms). The
        // detector counts from the peer's proof of life (the issue time of
        // our challenge it echoed), which is up to one interval old when
        // it arrives; with 100 ms x 3 that age was up to 100 ms and the
        // silence tolerated after the last heartbeat 200-300 ms. 50 ms x 5
        // tolerates 200-250 ms: a hard kill fails over no later than
        // before, and a lossy link has twice the rounds in which its proof
        // can catch up before maxDeadTime (issue 12). 50 ms x 4 had false
        // deaths in the simulation before the detector learned the loss.
        let hb = Duration::from_millis(50);
        Timers {
            heartbeat_interval: hb,
            dead_after: 5,
            max_dead_time: DEFAULT_MAX_DEAD_TIME,
            garp_count: 3,
            garp_interval: Duration::from_millis(100),
            refresh_interval: Duration::from_secs(30),
            // The CNI plugin's probe window (2 probes, 60 ms of listening):
            // wired hosts answer an ARP probe within a few ms. A device
            // that answers later (Wi-Fi power save) is still caught while
            // we own the VIP, as a foreign claim.
            probe_timeout: Duration::from_millis(60),
            handoff_timeout: default_handoff(hb),
            conflict_retry: Duration::from_secs(10),
        }
    }
}

/// A duration written as `100ms`, `1.5s`, `2m` or a bare number of
/// milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawDuration {
    Millis(u64),
    Text(String),
}

/// The timer fields of the YAML file, as written.
#[derive(Debug, Default)]
pub(super) struct RawTimers {
    pub heartbeat_interval: Option<RawDuration>,
    pub dead_after: Option<u32>,
    pub max_dead_time: Option<RawDuration>,
    pub garp_count: Option<u32>,
    pub garp_interval: Option<RawDuration>,
    pub refresh_interval: Option<RawDuration>,
    pub probe_timeout: Option<RawDuration>,
    pub handoff_timeout: Option<RawDuration>,
    pub conflict_retry: Option<RawDuration>,
}

/// Parses `100ms`, `1s`, `1.5s`, `2m`, or a bare number (milliseconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * unit_ms > 1e12 {
        return None;
    }
    Some(Duration::from_micros((v * unit_ms * 1000.0).round() as u64))
}

fn duration(
    path: &str,
    raw: Option<RawDuration>,
    default: Duration,
    min: Duration,
) -> Result<Duration> {
    let d = match raw {
        None => return Ok(default),
        Some(RawDuration::Millis(ms)) => Duration::from_millis(ms),
        Some(RawDuration::Text(t)) => parse_duration(&t).ok_or_else(|| {
            Error::config(path, format!("invalid duration {t:?} (use e.g. 100ms, 2s)"))
        })?,
    };
    if d < min {
        return Err(Error::config(
            path,
            format!("{d:?} is too short (minimum {min:?})"),
        ));
    }
    Ok(d)
}

impl RawTimers {
    /// Validates the timers; a missing one takes its default.
    pub(super) fn validate(self) -> Result<Timers> {
        let d = Timers::default();
        let ms = Duration::from_millis;
        let heartbeat_interval = duration(
            "heartbeatInterval",
            self.heartbeat_interval,
            d.heartbeat_interval,
            ms(10),
        )?;
        let dead_after = self.dead_after.unwrap_or(d.dead_after);
        if !(2..=100).contains(&dead_after) {
            return Err(Error::config(
                "deadAfter",
                format!("{dead_after} missed heartbeats: must be between 2 and 100"),
            ));
        }
        let dead_interval = heartbeat_interval * dead_after;
        let max_dead_time = duration(
            "maxDeadTime",
            self.max_dead_time,
            d.max_dead_time.max(dead_interval),
            dead_interval,
        )
        .map_err(|_| {
            Error::config(
                "maxDeadTime",
                format!(
                    "must be at least heartbeatInterval x deadAfter ({dead_interval:?}): \
                     it bounds how far a lossy link raises that timeout"
                ),
            )
        })?;
        if max_dead_time > MAX_MAX_DEAD_TIME {
            return Err(Error::config(
                "maxDeadTime",
                format!("{max_dead_time:?}: at most {MAX_MAX_DEAD_TIME:?}"),
            ));
        }
        let garp_count = self.garp_count.unwrap_or(d.garp_count);
        if !(1..=20).contains(&garp_count) {
            return Err(Error::config(
                "garpCount",
                format!("{garp_count}: must be between 1 and 20"),
            ));
        }
        let refresh_interval = duration(
            "refreshInterval",
            self.refresh_interval,
            d.refresh_interval,
            ms(100),
        )?;
        if refresh_interval > MAX_REFRESH {
            return Err(Error::config(
                "refreshInterval",
                format!(
                    "{refresh_interval:?}: at most {MAX_REFRESH:?}, well inside the 300 s \
                     after which switches forget a MAC"
                ),
            ));
        }
        Ok(Timers {
            heartbeat_interval,
            dead_after,
            max_dead_time,
            garp_count,
            garp_interval: duration("garpInterval", self.garp_interval, d.garp_interval, ms(1))?,
            refresh_interval,
            probe_timeout: duration("probeTimeout", self.probe_timeout, d.probe_timeout, ms(0))?,
            handoff_timeout: duration(
                "handoffTimeout",
                self.handoff_timeout,
                default_handoff(heartbeat_interval),
                ms(0),
            )?,
            conflict_retry: duration(
                "conflictRetry",
                self.conflict_retry,
                d.conflict_retry,
                ms(100),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("NaNs"), None);
        assert_eq!(parse_duration(""), None);
    }

    /// The defaults: 250 ms on a clean link, bounded at 800 ms on a lossy
    /// one; a leaving node still waits 500 ms for successors.
    #[test]
    fn default_timers_detect_in_250_ms_and_at_most_800() {
        let t = RawTimers::default().validate().unwrap();
        assert_eq!(t, Timers::default());
        assert_eq!(t.heartbeat_interval, 50 * MS);
        assert_eq!(t.dead_interval(), 250 * MS);
        assert_eq!(t.max_dead_time, 800 * MS);
        assert_eq!(t.handoff_timeout, 500 * MS);
        assert_eq!(t.detector().min(), 250 * MS);
        assert_eq!(t.detector().max(), 800 * MS);
    }

    #[test]
    fn max_dead_time_follows_and_bounds_the_dead_interval() {
        let raw = |hb: u64, dead: u32, max: Option<&str>| RawTimers {
            heartbeat_interval: Some(RawDuration::Millis(hb)),
            dead_after: Some(dead),
            max_dead_time: max.map(|m| RawDuration::Text(m.into())),
            ..RawTimers::default()
        };
        // Slow heartbeats: no room to adapt unless asked for.
        let t = raw(500, 6, None).validate().unwrap();
        assert_eq!(t.max_dead_time, 3000 * MS);
        assert_eq!(t.handoff_timeout, 2500 * MS);
        let t = raw(100, 3, None).validate().unwrap();
        assert_eq!(t.max_dead_time, 800 * MS);
        let t = raw(100, 3, Some("1s")).validate().unwrap();
        assert_eq!(t.max_dead_time, 1000 * MS);
        let e = raw(100, 3, Some("200ms"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("maxDeadTime: must be at least"), "{e}");
        let e = raw(100, 3, Some("2m")).validate().unwrap_err().to_string();
        assert!(e.starts_with("maxDeadTime:"), "{e}");
    }

    #[test]
    fn refresh_stays_well_inside_switch_mac_aging() {
        let raw = |s: &str| RawTimers {
            refresh_interval: Some(RawDuration::Text(s.into())),
            ..RawTimers::default()
        };
        let e = raw("5m").validate().unwrap_err().to_string();
        assert!(e.starts_with("refreshInterval:"), "{e}");
        assert!(raw("2m").validate().is_ok());
    }
}
