//! The heartbeats that come in: authenticated ([`crate::wire`]), checked
//! for freshness ([`crate::freshness`]), then fed to [`Membership`]. No
//! socket here: the engine hands over the bytes it read, so all of this is
//! tested without one.
//!
//! Every membership event bumps [`Inbox::version`]: the planner rehashes
//! ownership only when it moved, instead of comparing the whole view each
//! turn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Error;
use crate::freshness::{self, Challenges, Echoes};
use crate::log_limit::{EngineNoise, EVERY as LOG_EVERY};
use crate::membership::{Event, Membership};
use crate::metrics::Metrics;
use crate::wire;

/// How long departed members are remembered (takeover detection, MACs).
const DEPARTED_KEEP: Duration = Duration::from_secs(600);

/// The most queued datagrams read before a turn.
pub const QUEUED_HEARTBEATS_MAX: usize = 1024;

/// Our view of the peers, and what it takes to keep it honest.
pub struct Inbox {
    node: String,
    nonce: u64,
    secret: Vec<u8>,
    /// The heartbeat port, for the log.
    port: u16,
    dead: Duration,
    /// The freshness window ([`freshness::window`]).
    window: Duration,
    heartbeat_interval: Duration,
    metrics: Arc<Metrics>,
    membership: Membership,
    version: u64,
    /// Rate limits of the warnings packets from outside trigger.
    noise: EngineNoise,
    /// Our challenges (issued by the heartbeat thread as it sends): a
    /// heartbeat that echoes a recent one is fresh.
    challenges: Arc<Mutex<Challenges>>,
    /// The peers' challenges we echo.
    echoes: Echoes,
    /// When a peer that had not heard us lately last got a prompt
    /// heartbeat (at most one per half interval: replays cannot make us
    /// chatter).
    prompted: Option<Instant>,
    /// Set when our heartbeat should go out now; taken by the engine.
    prompt: bool,
    /// Per peer: when the newest of our challenges its fresh heartbeats
    /// echo was issued (it heard what we sent until then).
    heard_us: BTreeMap<String, Instant>,
    /// Non-members heard from without proof of freshness: since when, and
    /// when last.
    unanswered: BTreeMap<String, (Instant, Instant)>,
}

impl Inbox {
    /// An empty view for `cfg`'s node; `challenges` are shared with the
    /// heartbeat sender, which issues them.
    pub fn new(
        cfg: &Config,
        nonce: u64,
        challenges: Arc<Mutex<Challenges>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let dead = cfg.timers.dead_interval();
        Inbox {
            node: cfg.node_name.clone(),
            nonce,
            secret: cfg.secret.clone(),
            port: cfg.listen.port(),
            dead,
            window: freshness::window(&cfg.timers),
            heartbeat_interval: cfg.timers.heartbeat_interval,
            metrics,
            membership: Membership::new(cfg.node_name.clone(), cfg.timers.detector()),
            version: 0,
            noise: EngineNoise::default(),
            challenges,
            echoes: Echoes::new(freshness::window(&cfg.timers)),
            prompted: None,
            prompt: false,
            heard_us: BTreeMap::new(),
            unanswered: BTreeMap::new(),
        }
    }

    /// The live and departed peers.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Bumped on every membership event.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Our boot nonce.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Per peer: when the newest challenge of ours it echoed was issued.
    pub fn heard_us(&self) -> &BTreeMap<String, Instant> {
        &self.heard_us
    }

    /// The peers' challenges our next heartbeat echoes.
    pub fn echoes(&self, now: Instant) -> Vec<u64> {
        self.echoes.echoes(now)
    }

    /// The challenges we issue (shared with the heartbeat sender).
    pub fn challenges(&self) -> &Arc<Mutex<Challenges>> {
        &self.challenges
    }

    /// True (once) if a peer should hear our heartbeat now.
    pub fn take_prompt(&mut self) -> bool {
        std::mem::take(&mut self.prompt)
    }

    /// Reads what `socket` holds without waiting: heartbeats that arrived
    /// while the loop was busy (a long turn, a burst of frames, a CPU
    /// shared with other work) are read before anyone is judged, since a
    /// member whose heartbeats sit unread in our socket is alive, and
    /// declaring it dead would take its VIPs over only to hand them back a
    /// moment later.
    pub fn read_queued(&mut self, socket: &std::net::UdpSocket, buf: &mut [u8]) -> Vec<Event> {
        // The tokio socket would only read when its reactor has seen the
        // socket readable, which it has not while this loop was busy; the
        // plain one asks the kernel. Bounded, so a flood of datagrams
        // cannot keep the loop here: a full receive buffer holds far fewer.
        let mut events = Vec::new();
        for _ in 0..QUEUED_HEARTBEATS_MAX {
            match socket.recv_from(buf) {
                Ok((n, from)) => events.extend(self.on_datagram(Instant::now(), &buf[..n], from)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::debug!("heartbeat socket: {e}");
                    }
                    break;
                }
            }
        }
        events
    }

    /// Declares members dead that missed their heartbeats, and forgets
    /// what is no longer needed.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let events = self.membership.expire(now);
        self.membership.prune(now, DEPARTED_KEEP);
        let live = self.membership.live();
        self.heard_us.retain(|m, _| live.contains_key(m));
        self.note(now, events)
    }

    /// One datagram from `from`.
    pub fn on_datagram(&mut self, now: Instant, bytes: &[u8], from: SocketAddr) -> Vec<Event> {
        let hb = match wire::decode(bytes, &self.secret) {
            Ok(hb) => hb,
            Err(Error::BadMac) => {
                self.metrics.heartbeat_auth_failures.inc();
                if let Some(held) = self.noise.bad_mac.pass(now, &self.metrics) {
                    tracing::warn!(%from, more_since_last = held,
                        "heartbeat with a bad HMAC dropped (wrong secret or forged); \
                         logged at most every {LOG_EVERY:?}, all counted in \
                         flatlan_speaker_heartbeat_auth_failures_total");
                }
                return Vec::new();
            }
            Err(Error::BadVersion(v)) => {
                // A mixed-version cluster must fail loudly: its nodes do
                // not see each other and each announces on its own.
                self.metrics.heartbeat_version_mismatches.inc();
                if let Some(held) = self.noise.version.pass(now, &self.metrics) {
                    tracing::error!(%from, version = v, ours = wire::VERSION, more_since_last = held,
                        "heartbeat of another wire version dropped: a speaker of another \
                         release cannot be a member, and both will announce the VIPs; run \
                         one release on every node. Logged at most every \
                         {LOG_EVERY:?}, all counted in \
                         flatlan_speaker_heartbeat_version_mismatches_total");
                }
                return Vec::new();
            }
            Err(e) => {
                self.metrics.heartbeat_malformed.inc();
                tracing::debug!(%from, "datagram dropped: {e}");
                return Vec::new();
            }
        };
        if hb.node == self.node {
            if hb.nonce != self.nonce {
                self.metrics.heartbeat_own_name.inc();
                if let Some(held) = self.noise.own_name.pass(now, &self.metrics) {
                    tracing::warn!(%from, more_since_last = held,
                        "heartbeat with our own node name from another speaker: duplicate \
                         node.name, or our old heartbeats replayed; logged at most every \
                         {LOG_EVERY:?}, all counted in flatlan_speaker_heartbeat_own_name_total");
                }
            }
            return Vec::new();
        }
        // One look at our challenges: the newest of ours it echoes, if any,
        // is both the proof of freshness and when it last heard us.
        let newest = self
            .challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .newest_echoed(&hb, now);
        let fresh = newest.is_some();
        if self.echoes.heard(now, &hb.node, hb.challenge, fresh) {
            // It has not heard us lately (it just started, or we did):
            // our next heartbeat echoes its challenge, and sent now, lets
            // its next one prove itself within a round trip.
            self.prompt(now);
        }
        if let Some(t) = newest {
            let e = self.heard_us.entry(hb.node.clone()).or_insert(t);
            *e = (*e).max(t);
        }
        if !fresh {
            // A replay, or a peer that has not heard us yet: no sign of
            // life either way.
            self.metrics.heartbeat_replays.inc();
            tracing::debug!(%from, node = %hb.node, "heartbeat echoes no recent challenge of ours: not counted");
            self.note_unanswered(now, &hb.node, from);
            return Vec::new();
        }
        self.unanswered.remove(&hb.node);
        self.metrics.heartbeats_received.inc();
        let events = newest.map(|proof| self.membership.observe(now, proof, &hb));
        self.note(now, events.unwrap_or_default())
    }

    /// Logs `events`, bumps the version, and answers a changed member at
    /// once (its answer tells it we heard the change: a peer holding a VIP
    /// a reload added waits for it).
    fn note(&mut self, now: Instant, events: Vec<Event>) -> Vec<Event> {
        for ev in &events {
            self.version += 1;
            match ev {
                Event::Joined(n) => tracing::info!(member = %n, "member joined"),
                Event::Changed(n) => {
                    self.prompt(now);
                    tracing::debug!(member = %n, "member changed");
                }
                Event::Left(n) => tracing::info!(member = %n, "member is leaving"),
                Event::Died(n) => {
                    // The timeout in force says whether the detector had
                    // stretched it (a lossy or late link) when it fired.
                    let timeout_ms = self.membership.timeout(n).map(|t| t.as_millis() as u64);
                    tracing::warn!(member = %n, ?timeout_ms, "member missed its heartbeats: dead")
                }
                Event::Rejoined(n) => {
                    tracing::info!(member = %n, "member is back (partition healed): re-announcing")
                }
            }
        }
        events
    }

    /// A node we keep hearing whose heartbeats never echo ours is no
    /// member: it does not hear us (a one-sided `peers` list, a firewall)
    /// or it is a recording. Said (at most every 10 s) once that has gone
    /// on for a dead interval past the window, so a peer that is just
    /// starting is not reported.
    fn note_unanswered(&mut self, now: Instant, node: &str, from: SocketAddr) {
        let window = self.window;
        self.unanswered
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= window);
        if self.membership.live().contains_key(node)
            || (self.unanswered.len() >= freshness::MAX_SENDERS
                && !self.unanswered.contains_key(node))
        {
            return;
        }
        let (since, last) = self.unanswered.entry(node.to_owned()).or_insert((now, now));
        *last = now;
        if now.saturating_duration_since(*since) < window + self.dead {
            return;
        }
        if let Some(held) = self.noise.unanswered.pass(now, &self.metrics) {
            tracing::warn!(%from, %node, more_since_last = held,
                "heartbeats from this node never echo ours, so it is no member and both \
                 may announce the same VIPs: it does not hear us (is this node in its \
                 peers, is UDP {} open both ways?), or they are replayed; counted in \
                 flatlan_speaker_heartbeat_replays_total", self.port);
        }
    }

    /// Sends our heartbeat now rather than at the next interval, at most
    /// once per half interval (replays or a churning peer cannot make us
    /// chatter).
    fn prompt(&mut self, now: Instant) {
        let half = self.heartbeat_interval / 2;
        if self
            .prompted
            .is_none_or(|t| now.saturating_duration_since(t) >= half)
        {
            self.prompted = Some(now);
            self.prompt = true;
        }
    }

    /// Whether `node` is in the list of non-members heard from.
    #[cfg(test)]
    pub fn is_unanswered(&self, node: &str) -> bool {
        self.unanswered.contains_key(node)
    }

    /// Feeds a heartbeat as if it had arrived fresh (tests of what the
    /// engine does with a peer's view).
    #[cfg(test)]
    pub fn observe(&mut self, now: Instant, hb: &wire::Heartbeat) -> Vec<Event> {
        let events = self.membership.observe(now, now, hb);
        self.note(now, events)
    }
}
