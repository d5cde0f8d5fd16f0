//! Freshness: a heartbeat is a sign of life only if it proves that it was
//! sent after we last spoke (issue 12).
//!
//! Every heartbeat carries a random *challenge* of its sender's, new with
//! every heartbeat sent, and *echoes* the latest challenges its sender
//! heard from its peers. A receiver counts a heartbeat as fresh when it
//! echoes one of the receiver's own challenges issued within the last
//! [`window`]; only fresh heartbeats feed membership. So:
//!
//! - a recorded stream replayed later echoes challenges that are no longer
//!   recent (or, after the receiver restarted, were never its own) and
//!   keeps nobody alive;
//! - nothing depends on wall clocks (challenges are random, their age is
//!   measured on the receiver's monotonic clock), so a node whose clock is
//!   an hour off, in either direction, is a member like any other;
//! - nothing is a high-water mark (the old design refused every heartbeat
//!   not newer than the newest (nonce, seq) seen, so one message with
//!   seq = 2^64-1 silenced its sender for good): what a single message
//!   changes, the sender's next fresh heartbeat changes back.
//!
//! Bootstrapping: a heartbeat that is not fresh still teaches us its
//! sender's challenge, which we echo from then on, so two speakers that
//! have just met prove freshness to each other within one round trip. We
//! keep, per sender, the challenge of its latest *fresh* heartbeat apart
//! from that of its latest other one: replayed recordings can only churn
//! the second, never push a live peer's real challenge out of what we echo.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read as _;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::Timers;
use crate::error::{Error, Result};
use crate::wire::{Heartbeat, MAX_ECHOES};

/// How many clean-link dead intervals a challenge stays acceptable, at
/// least. One dead interval is what a member may stay silent; the second
/// is room for the echo's own delay (the peer echoes our challenge in its
/// next heartbeat, up to two heartbeat intervals later) and for a busy
/// engine that reads late, so that freshness costs no false failovers.
const WINDOW_DEAD_INTERVALS: u32 = 2;

/// The most challenges remembered, whatever the timers (a 10 ms interval
/// with `deadAfter: 100` would otherwise keep 2,000).
const MAX_ISSUED: usize = 1024;

/// The most senders whose challenges we echo; two echoes each fill
/// [`MAX_ECHOES`].
pub const MAX_SENDERS: usize = MAX_ECHOES / 2;

/// How long our challenges stay acceptable, and how long we echo a
/// peer's: [`WINDOW_DEAD_INTERVALS`] clean-link dead intervals, and at
/// least the failure detector's bound (`maxDeadTime`), so that every echo
/// the detector would still count as a proof of life is fresh. A longer
/// window gives a replay nothing: membership takes a heartbeat's liveness
/// from the issue time of the challenge it echoes, never from its arrival
/// ([`crate::membership`]).
pub fn window(timers: &Timers) -> Duration {
    (timers.dead_interval() * WINDOW_DEAD_INTERVALS).max(timers.max_dead_time)
}

/// 32 random bytes from the kernel: the key of this run's challenges and
/// boot nonce.
pub fn random_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| Error::sys("read /dev/urandom", e))?;
    Ok(seed)
}

/// The first 8 bytes of SHA-256(`seed` || `label` || `n`).
fn derive(seed: &[u8; 32], label: &[u8], n: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(label);
    h.update(n.to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// This run's boot nonce: random, so a restart is told from a healed
/// partition without trusting any clock.
pub fn boot_nonce(seed: &[u8; 32]) -> u64 {
    derive(seed, b"boot", 0)
}

/// The challenges this node issued, with when.
#[derive(Debug, Clone)]
pub struct Challenges {
    seed: [u8; 32],
    counter: u64,
    issued: VecDeque<(u64, Instant)>,
    window: Duration,
}

impl Challenges {
    /// None issued yet. `window`: how long one stays acceptable.
    pub fn new(seed: [u8; 32], window: Duration) -> Self {
        Challenges {
            seed,
            counter: 0,
            issued: VecDeque::new(),
            window,
        }
    }

    /// A new challenge, to put in the heartbeat sent now. Unpredictable
    /// without the seed, so nobody can echo one before we sent it.
    pub fn issue(&mut self, now: Instant) -> u64 {
        self.counter += 1;
        let c = derive(&self.seed, b"challenge", self.counter);
        while self
            .issued
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) > self.window)
            || self.issued.len() >= MAX_ISSUED
        {
            self.issued.pop_front();
        }
        self.issued.push_back((c, now));
        c
    }

    /// True if `c` is one of ours, issued within the window before `now`.
    #[cfg(test)]
    pub fn is_recent(&self, c: u64, now: Instant) -> bool {
        self.issued
            .iter()
            .any(|(x, t)| *x == c && now.saturating_duration_since(*t) <= self.window)
    }

    /// True if `hb` echoes one of our recent challenges: it was sent after
    /// its sender heard one of our recent heartbeats.
    pub fn is_fresh(&self, hb: &Heartbeat, now: Instant) -> bool {
        self.newest_echoed(hb, now).is_some()
    }

    /// When the newest of our recent challenges that `hb` echoes was
    /// issued: its sender has heard what we sent from then on.
    pub fn newest_echoed(&self, hb: &Heartbeat, now: Instant) -> Option<Instant> {
        self.issued
            .iter()
            .filter(|(c, t)| {
                now.saturating_duration_since(*t) <= self.window && hb.echoes.contains(c)
            })
            .map(|(_, t)| *t)
            .max()
    }
}

/// What we heard from one sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Heard {
    /// The challenge of its latest fresh heartbeat, and when.
    fresh: Option<(u64, Instant)>,
    /// The challenge of its latest other heartbeat, and when.
    other: Option<(u64, Instant)>,
}

impl Heard {
    fn last(&self) -> Option<Instant> {
        [self.fresh, self.other]
            .into_iter()
            .flatten()
            .map(|(_, t)| t)
            .max()
    }
}

/// The peers' challenges we echo.
#[derive(Debug, Clone)]
pub struct Echoes {
    window: Duration,
    heard: BTreeMap<String, Heard>,
}

impl Echoes {
    /// Nothing heard yet. `window`: how long a peer's challenge is worth
    /// echoing (the peer's own acceptance window, as all use the same
    /// timers).
    pub fn new(window: Duration) -> Self {
        Echoes {
            window,
            heard: BTreeMap::new(),
        }
    }

    /// Notes the challenge of an authenticated heartbeat from `node`, which
    /// was `fresh` or not. Returns true if it is a challenge we did not
    /// echo yet from a heartbeat that was not fresh: a peer that has not
    /// heard us lately (it just started, or we did), which a prompt
    /// heartbeat of ours lets prove itself at once.
    pub fn heard(&mut self, now: Instant, node: &str, challenge: u64, fresh: bool) -> bool {
        self.prune(now);
        if !self.heard.contains_key(node) && self.heard.len() >= MAX_SENDERS {
            // Only key holders get here; keep the senders heard last.
            let oldest = self
                .heard
                .iter()
                .min_by_key(|(_, h)| h.last())
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.heard.remove(&n);
            }
        }
        let h = self.heard.entry(node.to_owned()).or_default();
        if fresh {
            h.fresh = Some((challenge, now));
            return false;
        }
        let new = h.other.is_none_or(|(c, _)| c != challenge)
            && h.fresh.is_none_or(|(c, _)| c != challenge);
        h.other = Some((challenge, now));
        new
    }

    /// What our next heartbeat echoes: every challenge heard within the
    /// window, at most [`MAX_ECHOES`].
    pub fn echoes(&self, now: Instant) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .heard
            .values()
            .flat_map(|h| [h.fresh, h.other])
            .flatten()
            .filter(|(_, t)| now.saturating_duration_since(*t) <= self.window)
            .map(|(c, _)| c)
            .collect();
        out.sort_unstable();
        out.dedup();
        out.truncate(MAX_ECHOES);
        out
    }

    /// Forgets what is too old to be worth echoing.
    pub fn prune(&mut self, now: Instant) {
        let window = self.window;
        let young = |x: &Option<(u64, Instant)>| {
            x.filter(|(_, t)| now.saturating_duration_since(*t) <= window)
        };
        self.heard.retain(|_, h| {
            h.fresh = young(&h.fresh);
            h.other = young(&h.other);
            h.fresh.is_some() || h.other.is_some()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn hb(echoes: Vec<u64>) -> Heartbeat {
        Heartbeat {
            node: "b".into(),
            nonce: 7,
            seq: u64::MAX,
            challenge: 99,
            echoes,
            leaving: false,
            macs: Vec::new(),
            vips: Vec::new(),
        }
    }

    #[test]
    fn only_an_echo_of_a_recent_challenge_of_ours_is_fresh() {
        let t0 = Instant::now();
        let mut t = Timers {
            heartbeat_interval: 100 * MS,
            dead_after: 3,
            max_dead_time: 300 * MS,
            ..Timers::default()
        };
        let w = window(&t);
        assert_eq!(w, 600 * MS);
        t.max_dead_time = 800 * MS;
        assert_eq!(window(&t), 800 * MS);
        assert_eq!(window(&Timers::default()), 800 * MS);
        let mut ours = Challenges::new([1; 32], w);
        let c1 = ours.issue(t0);
        let c2 = ours.issue(t0 + 100 * MS);
        assert_ne!(c1, c2);
        assert!(!ours.is_fresh(&hb(vec![]), t0), "no echo: not fresh");
        assert!(!ours.is_fresh(&hb(vec![c1 ^ 1]), t0), "not ours");
        assert!(ours.is_fresh(&hb(vec![5, c1]), t0 + 600 * MS));
        assert_eq!(
            ours.newest_echoed(&hb(vec![c2, c1]), t0 + 200 * MS),
            Some(t0 + 100 * MS)
        );
        // A recording replayed later: its echoes are too old.
        assert!(!ours.is_fresh(&hb(vec![c1]), t0 + 601 * MS));
        assert!(ours.is_fresh(&hb(vec![c2]), t0 + 601 * MS));
        // Issuing prunes what is too old to ever be accepted again.
        ours.issue(t0 + 2000 * MS);
        assert!(!ours.is_recent(c2, t0 + 100 * MS));
    }

    /// A restarted receiver draws a new seed: nothing recorded before the
    /// restart echoes one of its challenges.
    #[test]
    fn a_restart_invalidates_every_recording() {
        let t0 = Instant::now();
        let mut before = Challenges::new([1; 32], 600 * MS);
        let old: Vec<u64> = (0..10).map(|i| before.issue(t0 + i * 100 * MS)).collect();
        let mut after = Challenges::new([2; 32], 600 * MS);
        after.issue(t0 + 1000 * MS);
        assert!(!after.is_fresh(&hb(old), t0 + 1000 * MS));
        assert_ne!(boot_nonce(&[1; 32]), boot_nonce(&[2; 32]));
    }

    #[test]
    fn the_kernel_gives_different_seeds() {
        assert_ne!(random_seed().unwrap(), random_seed().unwrap());
    }

    #[test]
    fn echoes_the_latest_fresh_and_other_challenge_of_each_sender() {
        let t0 = Instant::now();
        let mut e = Echoes::new(600 * MS);
        assert!(e.heard(t0, "b", 1, false), "new: answer promptly");
        assert!(!e.heard(t0, "b", 1, false), "not new");
        assert_eq!(e.echoes(t0), vec![1]);
        assert!(!e.heard(t0 + 100 * MS, "b", 2, true));
        assert_eq!(e.echoes(t0 + 100 * MS), vec![1, 2]);
        // Replays churn the other slot only: b's fresh challenge stays.
        for c in 100..200 {
            e.heard(t0 + 200 * MS, "b", c, false);
        }
        assert_eq!(e.echoes(t0 + 200 * MS), vec![2, 199]);
        assert!(e.heard(t0 + 200 * MS, "c", 3, false));
        assert_eq!(e.echoes(t0 + 200 * MS), vec![2, 3, 199]);
        // Too old to be accepted by its sender: not echoed any more.
        assert_eq!(e.echoes(t0 + 701 * MS), vec![3, 199]);
        e.prune(t0 + 801 * MS);
        assert!(e.heard.is_empty());
    }

    #[test]
    fn many_senders_are_bounded_and_the_last_heard_kept() {
        let t0 = Instant::now();
        let mut e = Echoes::new(600 * MS);
        for i in 0..(MAX_SENDERS as u64 + 10) {
            e.heard(t0 + MS * i as u32, &format!("n{i}"), i, i % 2 == 0);
        }
        assert_eq!(e.heard.len(), MAX_SENDERS);
        let now = t0 + 100 * MS;
        let echoed = e.echoes(now);
        assert_eq!(echoed.len(), MAX_SENDERS);
        assert!(echoed.contains(&(MAX_SENDERS as u64 + 9)));
        assert!(!echoed.contains(&0));
    }
}
