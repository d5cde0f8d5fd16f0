//! The failure detector: when a silent peer counts as dead (issue 12, "fast
//! and calm on a poor LAN"). Pure: fed with instants, no I/O, no wall
//! clock.
//!
//! What it watches is a peer's *proof* of life: the issue time, on our
//! own monotonic clock, of the newest challenge of ours the peer echoed
//! ([`crate::freshness`]). A live peer's proof is at most about two
//! heartbeat intervals old when its next heartbeat arrives (it echoes our
//! latest challenge in its next heartbeat); each heartbeat lost in either
//! direction, and each scheduling delay on either node, makes it older.
//!
//! A fixed timeout cannot be both fast and calm: 300 ms with 100 ms
//! heartbeats failed over about once in 9 minutes at 5% loss, because
//! three consecutive losses are not rare at 6,000 heartbeats per direction
//! every 10 minutes. So the timeout adapts to how late proofs have been
//! arriving on this link, bounded on both sides:
//!
//! - Each proof that arrives tells how old the previous one had become,
//!   `A`. Its lateness beyond the two intervals a loss-free link needs and
//!   a [`SLACK`] for scheduling noise, `x = max(0, A - (2 + SLACK) I) / I`
//!   (in heartbeat intervals), is averaged (EWMA over [`EWMA_WEIGHT`]
//!   proofs).
//! - That average is read as a per-round chance `p` that a round brings no
//!   proof, as if rounds failed independently (a geometric tail: one loss
//!   adds an interval, two add two, with chance p, p², ...), and the
//!   timeout allows as many failed rounds in a row `m` as make the chance
//!   of a false suspicion per round `p^m <= SUSPICION_ODDS`.
//! - The timeout is `(2 + m) I`, never below `deadAfter` intervals (a
//!   clean LAN keeps today's fast failover) and never above `maxDeadTime`
//!   (a lossy or busy LAN still fails over within a bound).
//!
//! The average survives a member's restart and death (it describes the
//! link, not the process), and a proof that arrives after a death is not
//! averaged (the partition's length says nothing about the link).

use std::time::{Duration, Instant};

/// How many proofs the lateness average spans (EWMA weight 1/64: about
/// 3 s of heartbeats at 50 ms).
pub const EWMA_WEIGHT: f64 = 64.0;

/// Lateness below this fraction of an interval beyond the two a loss-free
/// link needs is scheduling noise, not a failed round: on a machine whose
/// load average is 8 per core, a few ms late is normal, and counting it
/// would lengthen every clean link's timeout.
pub const SLACK: f64 = 0.2;

/// The chance per heartbeat round that a live peer is suspected, which
/// the adaptive timeout aims below: at 20 rounds a second, about one
/// false suspicion in 14 hours per peer on a link that stays as poor as
/// the one measured, where the bound allows (a clean link sits at the
/// floor and never gets near it). 1e-9 was tried first: on a lab machine
/// busy with builds (a few late heartbeats a second, no loss) it
/// stretched a clean link's timeout from 300 to about 350 ms and cost
/// failover p95 100 ms; the simulation (`detector_sim`) shows no false
/// death at 1e-6 in 20 runs of 10 minutes at 5% loss with a busy node.
pub const SUSPICION_ODDS: f64 = 1e-6;

/// The detector's parameters, the same for every peer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    /// The heartbeat interval (every node uses the same timers).
    interval: Duration,
    /// The timeout on a clean link: `deadAfter` intervals.
    min: Duration,
    /// The timeout's bound on any link: `maxDeadTime`.
    max: Duration,
}

/// What the detector knows about one peer's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The newest proof of life.
    proof: Instant,
    /// The average lateness `x`, in intervals.
    lateness: f64,
}

impl Detector {
    /// A detector for `interval` heartbeats whose timeout stays within
    /// `min..=max` (`max` below `min` counts as `min`).
    pub fn new(interval: Duration, min: Duration, max: Duration) -> Self {
        Detector {
            interval: interval.max(Duration::from_micros(1)),
            min,
            max: max.max(min),
        }
    }

    /// The heartbeat interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The shortest timeout (a clean link).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The longest timeout (the failover bound).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long `link`'s peer may stay without a newer proof.
    pub fn timeout(&self, link: &Link) -> Duration {
        let p = round_failure_chance(link.lateness);
        if p <= 0.0 {
            return self.min;
        }
        if p >= 1.0 {
            return self.max;
        }
        let rounds = 2.0 + SUSPICION_ODDS.ln() / p.ln();
        let secs = self.interval.as_secs_f64() * rounds;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(secs).clamp(self.min, self.max)
    }

    /// When `link`'s peer is dead unless a newer proof arrives.
    pub fn deadline(&self, link: &Link) -> Instant {
        link.proof + self.timeout(link)
    }

    /// True if `proof` no longer keeps anyone alive at `now`: older than
    /// the timeout `link` has (or than the shortest, for a new link).
    pub fn too_old(&self, link: Option<&Link>, proof: Instant, now: Instant) -> bool {
        let timeout = link.map_or(self.min, |l| self.timeout(l));
        now.saturating_duration_since(proof) > timeout
    }

    /// Notes a proof that arrived at `now`. `averaged`: the peer was live
    /// until now, so how late this proof came describes the link (false
    /// after a death or for a first contact). A proof not newer than the
    /// one we have changes nothing.
    pub fn advance(&self, link: &mut Link, now: Instant, proof: Instant, averaged: bool) {
        if proof <= link.proof {
            return;
        }
        if averaged {
            let age = now.saturating_duration_since(link.proof).as_secs_f64();
            let i = self.interval.as_secs_f64();
            // One sample counts for at most the bound: a single long stall
            // raises the timeout for a while, but not for minutes.
            let cap = self.max.as_secs_f64() / i;
            let x = ((age - (2.0 + SLACK) * i) / i).clamp(0.0, cap);
            link.lateness += (x - link.lateness) / EWMA_WEIGHT;
        }
        link.proof = proof;
    }
}

impl Link {
    /// A link first proven at `proof`, with no lateness seen.
    pub fn new(proof: Instant) -> Self {
        Link {
            proof,
            lateness: 0.0,
        }
    }

    /// The newest proof of life.
    pub fn proof(&self) -> Instant {
        self.proof
    }

    /// The average lateness, in heartbeat intervals.
    pub fn lateness(&self) -> f64 {
        self.lateness
    }
}

/// The mean lateness `x` (in intervals) that a per-round failure chance
/// `p` gives: rounds fail independently, so a proof is k rounds late with
/// chance `(1-p) p^k`, and then `k - 1 + U` intervals late beyond the two
/// (U uniform in 0..1), of which what exceeds [`SLACK`] counts.
pub fn mean_lateness(p: f64) -> f64 {
    let s = SLACK;
    let p = p.clamp(0.0, 1.0 - 1e-12);
    // K = 1: E[max(0, U - s)] = (1 - s)^2 / 2. K = k >= 2: k - 1/2 - s.
    // Summed over the geometric law: E[K] - P(K = 1) - (1/2 + s) P(K >= 2)
    // for the K >= 2 part.
    (1.0 - p) * p * (1.0 - s) * (1.0 - s) / 2.0 + p / (1.0 - p) - (1.0 - p) * p - (0.5 + s) * p * p
}

/// The per-round failure chance `p` whose [`mean_lateness`] is `e`
/// (bisection: the mean grows with p).
pub fn round_failure_chance(e: f64) -> f64 {
    if e.is_nan() || e <= 0.0 {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    if !e.is_finite() || mean_lateness(1.0 - 1e-9) <= e {
        return 1.0;
    }
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if mean_lateness(mid) < e {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

#[cfg(test)]
#[path = "detector_sim.rs"]
mod sim;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn det() -> Detector {
        Detector::new(50 * MS, 300 * MS, 800 * MS)
    }

    #[test]
    fn the_lateness_model_inverts() {
        for p in [0.001, 0.05, 0.0975, 0.2, 0.5] {
            let e = mean_lateness(p);
            assert!((round_failure_chance(e) - p).abs() < 1e-9, "{p}");
        }
        // Monotonic, and 0 at 0.
        assert_eq!(mean_lateness(0.0), 0.0);
        let mut last = 0.0;
        for k in 1..1000 {
            let e = mean_lateness(f64::from(k) / 1000.0);
            assert!(e > last, "{k}");
            last = e;
        }
        // Without the slack it would be p/(1-p) - p/2; the slack takes a
        // little off every late proof.
        let p = 0.1;
        assert!(mean_lateness(p) < p / (1.0 - p) - p / 2.0);
        assert_eq!(round_failure_chance(0.0), 0.0);
        assert_eq!(round_failure_chance(-1.0), 0.0);
        assert_eq!(round_failure_chance(f64::NAN), 0.0);
        assert_eq!(round_failure_chance(f64::INFINITY), 1.0);
        assert!(round_failure_chance(1e9) <= 1.0);
    }

    #[test]
    fn a_clean_link_keeps_the_shortest_timeout() {
        let d = det();
        let t0 = Instant::now();
        let mut l = Link::new(t0);
        for i in 1..1000u32 {
            // Proofs arrive up to 59 ms old, so the previous one was up to
            // 109 ms old: inside the two intervals and the slack.
            let proof = t0 + 50 * MS * i;
            d.advance(&mut l, proof + (i % 60) * MS, proof, true);
        }
        assert_eq!(l.lateness(), 0.0);
        assert_eq!(d.timeout(&l), 300 * MS);
        assert_eq!(d.deadline(&l), l.proof() + 300 * MS);
    }

    #[test]
    fn lateness_raises_the_timeout_within_the_bound() {
        let d = det();
        let e = mean_lateness;
        let t0 = Instant::now();
        let l = |lateness| Link {
            proof: t0,
            lateness,
        };
        let close = |a: Duration, b: Duration| a.abs_diff(b) < MS;
        // 10% of rounds failing: 6 rounds in a row tolerated, + 2.
        assert!(close(d.timeout(&l(e(0.1))), 400 * MS));
        // 20%: 8.6 rounds, + 2.
        assert!(close(d.timeout(&l(e(0.2))), 529 * MS));
        // 1%: 3 rounds + 2, under the floor.
        assert_eq!(d.timeout(&l(e(0.01))), 300 * MS);
        assert_eq!(d.timeout(&l(e(0.0001))), 300 * MS);
        assert_eq!(d.timeout(&l(e(0.4))), 800 * MS);
        assert_eq!(d.timeout(&l(f64::INFINITY)), 800 * MS);
        // Monotonic in the lateness.
        let mut last = Duration::ZERO;
        for k in 0..200 {
            let t = d.timeout(&l(f64::from(k) / 100.0));
            assert!(t >= last && (300 * MS..=800 * MS).contains(&t));
            last = t;
        }
    }

    #[test]
    fn one_stall_is_capped_and_fades() {
        let d = det();
        let t0 = Instant::now();
        let mut l = Link::new(t0);
        // Proved again after an hour (not a death: averaged): capped.
        d.advance(&mut l, t0 + 3_600_000 * MS, t0 + 3_600_000 * MS, true);
        assert!(l.lateness() <= 16.0 / EWMA_WEIGHT + 1e-12);
        assert!(l.lateness() > 15.0 / EWMA_WEIGHT);
        // Read as about 32% of rounds failing: 12 in a row tolerated.
        let stretched = d.timeout(&l);
        assert!((650 * MS..800 * MS).contains(&stretched), "{stretched:?}");
        let mut t = t0 + 3_600_000 * MS;
        for _ in 0..1000 {
            t += 50 * MS;
            d.advance(&mut l, t + 50 * MS, t, true);
        }
        assert_eq!(d.timeout(&l), 300 * MS, "{}", l.lateness());
    }

    #[test]
    fn older_proofs_change_nothing_and_unaveraged_ones_only_move_the_proof() {
        let d = det();
        let t0 = Instant::now();
        let mut l = Link::new(t0 + 100 * MS);
        let before = l;
        d.advance(&mut l, t0 + 5000 * MS, t0, true);
        d.advance(&mut l, t0 + 5000 * MS, t0 + 100 * MS, true);
        assert_eq!(l, before);
        d.advance(&mut l, t0 + 5000 * MS, t0 + 4990 * MS, false);
        assert_eq!(l.lateness(), 0.0);
        assert_eq!(l.proof(), t0 + 4990 * MS);
        assert!(d.too_old(Some(&l), t0 + 4990 * MS, t0 + 5291 * MS));
        assert!(!d.too_old(None, t0, t0 + 300 * MS));
    }

    #[test]
    fn max_below_min_is_min() {
        let d = Detector::new(100 * MS, 300 * MS, 100 * MS);
        assert_eq!(d.max(), 300 * MS);
        assert_eq!(d.timeout(&Link::new(Instant::now())), 300 * MS);
    }
}
