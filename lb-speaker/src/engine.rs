//! The engine: a tokio event loop that feeds the pure parts (membership,
//! ownership, announcer) with time, heartbeats and frames, and carries out
//! their decisions.
//!
//! One loop, one task owns all state; `AF_PACKET` reader tasks only forward
//! frames to it. Each turn: receive (heartbeat, frame, signal or timer),
//! read every heartbeat already queued (a member is judged on what it sent,
//! not on when this loop got round to reading it), then [`Engine::step`]:
//! expire members, recompute owners, claim/release, run announcer timers,
//! hand the heartbeat's content to the [`heartbeat`] thread when due or
//! when what we own changed (so a leaving owner learns at once that its
//! successor took over), poll interfaces, publish status. That thread
//! sends it every interval however long a turn takes.
//!
//! Shutdown (SIGTERM/SIGINT) is make-before-break: we send `leaving`
//! heartbeats and keep answering; peers drop us at once and the successor
//! claims and announces; we release a VIP one heartbeat interval after the
//! successor's heartbeat shows it announcing it (so in-flight packets still
//! find the VIP here), or at `handoffTimeout`, then exit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flatlan_ipam::mac::MacAddr;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::announcer::{Action, Announcer, Link, Phase};
use crate::assign::{HostAddrs, LoopbackAssign, NoAssign};
use crate::config::{Config, MULTICAST_GROUP};
use crate::error::{Error, Result};
use crate::freshness::{self, Challenges, Echoes};
use crate::heartbeat::{self, Outgoing};
use crate::http::Shared;
use crate::iface::{self, IfaceInfo};
use crate::log_limit::{EngineNoise, EVERY as LOG_EVERY};
use crate::membership::{Event, Membership};
use crate::metrics::Metrics;
use crate::ownership::owners;
use crate::reload;
use crate::sockets::{FrameRx, FrameTx, IfaceSockets};
use crate::status::{Status, VipStatus};
use crate::wire::{self, Heartbeat, VipEntry};

/// How often interfaces are re-read (link up/down, address changes).
const IFACE_POLL: Duration = Duration::from_millis(200);
/// How often the status document is refreshed even without changes.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long departed members are remembered (takeover detection, MACs).
const DEPARTED_KEEP: Duration = Duration::from_secs(600);
/// The most queued datagrams read before a turn.
const QUEUED_HEARTBEATS_MAX: usize = 1024;
/// The running speaker.
pub struct Engine {
    cfg: Config,
    /// The file SIGHUP re-reads.
    config_path: PathBuf,
    /// The VIPs we decide about: the configured ones, plus dropped ones
    /// (`retiring`) until they are handed over or released.
    vips: Vec<IpAddr>,
    /// VIPs dropped by a reload and still claimed here.
    retiring: BTreeSet<IpAddr>,
    /// No new claims before this: after start, or after a link comes
    /// back, we first listen for live peers (see `listen`).
    listen_until: Instant,
    /// The view `desired` was computed from; ownership is rehashed only
    /// when it changes (a SHA-256 per VIP and member).
    owner_view: Vec<(String, BTreeSet<IpAddr>)>,
    owner_vips: Vec<IpAddr>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    membership: Membership,
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
    /// VIPs a reload added: not claimed before this, unless every live
    /// peer heard of them first (see `apply_config`).
    claim_after: BTreeMap<IpAddr, Instant>,
    /// When the heartbeat that lists them was handed to the sender.
    told_at: Option<Instant>,
    /// Per peer: when the newest of our challenges its fresh heartbeats
    /// echo was issued (it heard what we sent until then).
    heard_us: BTreeMap<String, Instant>,
    /// Non-members heard from without proof of freshness: since when, and
    /// when last.
    unanswered: BTreeMap<String, (Instant, Instant)>,
    announcer: Announcer,
    host: Box<dyn HostAddrs>,
    nonce: u64,
    ifaces: BTreeMap<String, IfaceInfo>,
    sockets: BTreeMap<String, IfaceSockets>,
    prepared: BTreeSet<String>,
    frame_tx: FrameTx,
    /// The heartbeat socket, for the loop to wait on ...
    udp: Arc<UdpSocket>,
    /// ... and the same socket, to read what is queued without waiting.
    udp_now: std::net::UdpSocket,
    /// Sends our heartbeats from its own thread.
    beats: heartbeat::Sender,
    leaving: Option<Instant>,
    /// VIPs we hold but should hand over: since when.
    handover_since: BTreeMap<IpAddr, Instant>,
    /// VIPs whose successor was seen announcing: since when.
    successor_seen: BTreeMap<IpAddr, Instant>,
    desired: BTreeMap<IpAddr, String>,
    next_heartbeat: Instant,
    next_iface_poll: Instant,
    next_status: Instant,
    heartbeat_now: bool,
    last_owned: BTreeSet<IpAddr>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn instant_to_unix_ms(t: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(t);
    unix_ms(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH))
}

impl Engine {
    /// Sets up what does not depend on owning anything (interfaces, the
    /// heartbeat socket, the metrics endpoint) and removes leftover VIPs
    /// from `lo`. The packet sockets and the `arp_ignore`/`arp_announce`
    /// sysctls of an interface are set later, on the first claim on it
    /// (`ensure_sockets`), so a failure here leaves the system
    /// untouched apart from those leftovers being gone. SIGHUP re-reads
    /// `config_path`.
    pub async fn start(cfg: Config, config_path: PathBuf) -> Result<(Engine, FrameRx)> {
        let metrics = Arc::new(Metrics::default());
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            ..Default::default()
        });
        let ifaces = iface::discover()?;
        for v in &cfg.vips {
            match iface::choose(&cfg, v, &ifaces) {
                Some(i) => {
                    tracing::info!(vip = %v.address, iface = %i.name, "VIP will be announced on this interface")
                }
                None => {
                    tracing::warn!(vip = %v.address, "no interface for this VIP yet (no matching subnet); not eligible")
                }
            }
        }
        let udp = std::net::UdpSocket::bind(cfg.listen)
            .map_err(|e| Error::sys(format!("bind heartbeat socket {}", cfg.listen), e))?;
        if cfg.multicast {
            if let Some(IpAddr::V4(local)) = cfg.node_address {
                udp.join_multicast_v4(&MULTICAST_GROUP, &local)
                    .map_err(|e| Error::sys("join heartbeat multicast group", e))?;
                udp.set_multicast_loop_v4(false)
                    .map_err(|e| Error::sys("IP_MULTICAST_LOOP", e))?;
                // Send by the node address's interface, not by the routing
                // table: without a default route (a LAN with no gateway) the
                // kernel has no route for 239/8 and every heartbeat fails
                // (ENETUNREACH); with several NICs it could pick another.
                socket2::SockRef::from(&udp)
                    .set_multicast_if_v4(&local)
                    .map_err(|e| Error::sys("IP_MULTICAST_IF", e))?;
            }
        }
        udp.set_nonblocking(true)
            .map_err(|e| Error::sys("O_NONBLOCK on the heartbeat socket", e))?;
        let clone = || {
            udp.try_clone()
                .map_err(|e| Error::sys("dup the heartbeat socket", e))
        };
        let udp_now = clone()?;
        // Random, not the clock: membership must not depend on the nodes'
        // clocks agreeing (issue 12).
        let seed = freshness::random_seed()?;
        let window = freshness::window(cfg.timers.dead_interval());
        let challenges = Arc::new(Mutex::new(Challenges::new(seed, window)));
        let beats = heartbeat::Sender::spawn(
            clone()?,
            cfg.secret.clone(),
            cfg.timers.heartbeat_interval,
            heartbeat::engine_stall(cfg.timers.dead_interval()),
            metrics.clone(),
            challenges.clone(),
        )?;
        let udp =
            UdpSocket::from_std(udp).map_err(|e| Error::sys("register the heartbeat socket", e))?;
        if let Some(addr) = cfg.metrics_addr {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::sys(format!("bind metrics endpoint {addr}"), e))?;
            crate::http::spawn(l, shared.clone())?;
        }
        let mut host: Box<dyn HostAddrs> = if cfg.assign {
            Box::new(LoopbackAssign::new(&cfg.state_dir))
        } else {
            Box::new(NoAssign)
        };
        // A previous run may have been SIGKILLed while owning: drop its
        // leftovers so this node does not accept traffic it no longer owns.
        let all: Vec<IpAddr> = cfg.vips.iter().map(|v| v.address).collect();
        for (vip, e) in host.del_many(&all) {
            tracing::warn!(%vip, "cannot remove a leftover VIP from lo: {e}");
        }
        let (frame_tx, frame_rx) = mpsc::channel(1024);
        let nonce = freshness::boot_nonce(&seed);
        let now = Instant::now();
        let vips = cfg.vips.iter().map(|v| v.address).collect();
        let engine = Engine {
            membership: Membership::new(cfg.node_name.clone(), cfg.timers.dead_interval()),
            announcer: Announcer::new(cfg.timers.clone(), metrics.clone()).confirming_assign(),
            vips,
            metrics,
            shared,
            noise: EngineNoise::default(),
            challenges,
            echoes: Echoes::new(window),
            prompted: None,
            claim_after: BTreeMap::new(),
            told_at: None,
            heard_us: BTreeMap::new(),
            unanswered: BTreeMap::new(),
            host,
            nonce,
            ifaces,
            sockets: BTreeMap::new(),
            prepared: BTreeSet::new(),
            frame_tx,
            udp: Arc::new(udp),
            udp_now,
            beats,
            leaving: None,
            handover_since: BTreeMap::new(),
            successor_seen: BTreeMap::new(),
            desired: BTreeMap::new(),
            next_heartbeat: now,
            next_iface_poll: now + IFACE_POLL,
            next_status: now,
            heartbeat_now: true,
            last_owned: BTreeSet::new(),
            cfg,
            config_path,
            retiring: BTreeSet::new(),
            listen_until: now,
            owner_view: Vec::new(),
            owner_vips: Vec::new(),
        };
        Ok((engine, frame_rx))
    }

    /// Runs until shutdown completes.
    pub async fn run(mut self, mut frames: FrameRx) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).map_err(|e| Error::sys("SIGTERM", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::sys("SIGINT", e))?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::sys("SIGHUP", e))?;
        let udp = self.udp.clone();
        let mut buf = vec![0u8; 65_536];
        tracing::info!(node = %self.cfg.node_name, vips = self.vips.len(), "speaker ready");
        self.listen(Instant::now());
        loop {
            let now = Instant::now();
            let wake = [
                Some(self.next_heartbeat),
                Some(self.next_iface_poll),
                Some(self.next_status),
                self.membership
                    .next_expiry()
                    .map(|t| t + Duration::from_millis(1)),
                self.announcer.next_deadline(),
                self.leaving.map(|t| t + self.cfg.timers.handoff_timeout),
                (now < self.listen_until).then_some(self.listen_until),
                self.handover_since
                    .values()
                    .map(|t| *t + self.cfg.timers.handoff_timeout)
                    .min(),
                self.successor_seen
                    .values()
                    .map(|t| *t + self.cfg.timers.heartbeat_interval)
                    .min(),
                self.claim_after.values().min().copied(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1));
            let mut planned = true;
            tokio::select! {
                r = udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(Instant::now(), &buf[..n], from);
                    }
                }
                Some((ifname, frame)) = frames.recv() => {
                    self.on_frame(Instant::now(), &ifname, &frame);
                    // Drain what is queued without re-planning each time:
                    // answers stay fast under an ARP storm.
                    while let Ok((ifname, frame)) = frames.try_recv() {
                        self.on_frame(Instant::now(), &ifname, &frame);
                    }
                    // Frames change no membership: re-plan only when a
                    // timer is due, so an ARP storm costs no hashing.
                    planned = Instant::now() >= wake;
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = term.recv() => self.begin_leaving(Instant::now(), "SIGTERM"),
                _ = int.recv() => self.begin_leaving(Instant::now(), "SIGINT"),
                _ = hup.recv() => self.reload(Instant::now()),
            }
            if !planned {
                continue;
            }
            self.read_queued_heartbeats(&mut buf);
            if self.step(Instant::now()) {
                break;
            }
        }
        // Final word: nothing owned any more.
        let last = self.outgoing(Instant::now());
        self.beats.finish(last);
        self.publish(Instant::now());
        self.restore_host();
        tracing::info!("speaker stopped");
        Ok(())
    }

    /// On a clean exit: puts back the interface sysctls we changed, but
    /// only once no VIP is left on `lo`. With `arp_ignore` back at 0 the
    /// kernel would answer ARP for a leftover VIP on the LAN and draw its
    /// traffic here.
    fn restore_host(&mut self) {
        let left = self.host.del_many(&self.vips);
        if left.is_empty() {
            self.host.restore_ifaces();
            return;
        }
        for (vip, e) in left {
            tracing::warn!(%vip, "cannot remove the VIP from lo: {e}; keeping arp_ignore/arp_announce");
        }
    }

    /// SIGHUP: re-reads the config file. A file that does not validate
    /// changes nothing (the running config stays, whole).
    fn reload(&mut self, now: Instant) {
        let path = &self.config_path;
        match Config::load(path) {
            Ok(new) => self.apply_config(now, &new),
            Err(e) => {
                self.metrics.config_reload_failures.inc();
                tracing::error!(path = %path.display(), "reload refused, the running config stays: {e}");
            }
        }
    }

    /// Applies what of `new` a running speaker can take (see
    /// [`crate::reload`]): new VIPs are claimed in the next turn, dropped
    /// ones held until their successor announces them (released at once if
    /// no peer has them).
    pub fn apply_config(&mut self, now: Instant, new: &Config) {
        let plan = reload::plan(&self.cfg, new);
        for field in &plan.needs_restart {
            tracing::warn!(
                field,
                "changed in the config file: takes effect after a restart"
            );
        }
        self.cfg = reload::apply(&self.cfg, new);
        // A VIP new to us may be new to every node at once (one SIGHUP
        // to all): claimed at once, each would be its only eligible node
        // and all would probe and claim it. So it is held until every live
        // peer has answered the heartbeat that lists it (they answer a
        // changed member at once), or for as long as a start listens: a
        // peer that got it too has said so by then, and the hash picks
        // one. With no peer to wait for, that is no wait at all.
        let hold = now + self.cfg.timers.heartbeat_interval * 2;
        let mut added = false;
        for v in &plan.added {
            self.retiring.remove(v);
            if !self.vips.contains(v) {
                self.vips.push(*v);
                self.claim_after.insert(*v, hold);
                added = true;
            }
        }
        self.retiring.extend(plan.removed.iter().copied());
        self.metrics.config_reloads.inc();
        // Peers learn our new eligible set at once rather than within an
        // interval: that is what lets the VIP's owner be agreed on quickly.
        self.heartbeat_now = true;
        if added {
            self.beats.update(self.outgoing(now), true);
            self.told_at = Some(Instant::now());
        }
        self.next_status = now;
        tracing::info!(
            added = plan.added.len(),
            removed = plan.removed.len(),
            "config reloaded"
        );
    }

    /// Forgets dropped VIPs once nothing here claims them any more.
    fn retire(&mut self) {
        let done: Vec<IpAddr> = self
            .retiring
            .iter()
            .copied()
            .filter(|v| !self.announcer.is_claimed(*v))
            .collect();
        for v in done {
            self.retiring.remove(&v);
            self.vips.retain(|x| *x != v);
            self.desired.remove(&v);
            self.handover_since.remove(&v);
            self.successor_seen.remove(&v);
            self.announcer.forget(v);
            tracing::info!(vip = %v, "VIP removed from the config: no longer handled");
        }
    }

    /// Claims nothing new for two heartbeat intervals, while heartbeats go
    /// out and come in: learning the live members first avoids claiming
    /// (as a probe-less takeover, if we had declared them dead) VIPs a live
    /// peer owns. At start, and when a link comes back: a node whose cable
    /// was out has declared every peer dead and would otherwise take over
    /// all their VIPs at once, then hand them back seconds later.
    fn listen(&mut self, now: Instant) {
        self.listen_until = now + self.cfg.timers.heartbeat_interval * 2;
        self.heartbeat_now = true;
    }

    fn begin_leaving(&mut self, now: Instant, why: &str) {
        if self.leaving.is_none() {
            tracing::info!(why, "leaving: handing VIPs over before stopping");
            self.leaving = Some(now);
            self.heartbeat_now = true;
        }
    }

    /// Reads the heartbeats that arrived while the loop was busy (a long
    /// turn, a burst of frames, a CPU shared with other work), before
    /// `step` judges who missed theirs: a member whose heartbeats sit
    /// unread in our socket is alive, and declaring it dead would take its
    /// VIPs over only to hand them back a moment later.
    fn read_queued_heartbeats(&mut self, buf: &mut [u8]) {
        // The tokio socket would only read when its reactor has seen the
        // socket readable, which it has not while this loop was busy; the
        // plain one asks the kernel. Bounded, so a flood of datagrams
        // cannot keep the loop here: a full receive buffer holds far fewer.
        for _ in 0..QUEUED_HEARTBEATS_MAX {
            match self.udp_now.recv_from(buf) {
                Ok((n, from)) => self.on_datagram(Instant::now(), &buf[..n], from),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != std::io::ErrorKind::WouldBlock {
                        tracing::debug!("heartbeat socket: {e}");
                    }
                    return;
                }
            }
        }
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8], from: SocketAddr) {
        let hb = match wire::decode(bytes, &self.cfg.secret) {
            Ok(hb) => hb,
            Err(Error::BadMac) => {
                self.metrics.heartbeat_auth_failures.inc();
                if let Some(held) = self.noise.bad_mac.pass(now, &self.metrics) {
                    tracing::warn!(%from, more_since_last = held,
                        "heartbeat with a bad HMAC dropped (wrong secret or forged); \
                         logged at most every {LOG_EVERY:?}, all counted in \
                         flatlan_speaker_heartbeat_auth_failures_total");
                }
                return;
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
                return;
            }
            Err(e) => {
                self.metrics.heartbeat_malformed.inc();
                tracing::debug!(%from, "datagram dropped: {e}");
                return;
            }
        };
        if hb.node == self.cfg.node_name {
            if hb.nonce != self.nonce {
                self.metrics.heartbeat_own_name.inc();
                if let Some(held) = self.noise.own_name.pass(now, &self.metrics) {
                    tracing::warn!(%from, more_since_last = held,
                        "heartbeat with our own node name from another speaker: duplicate \
                         node.name, or our old heartbeats replayed; logged at most every \
                         {LOG_EVERY:?}, all counted in flatlan_speaker_heartbeat_own_name_total");
                }
            }
            return;
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
            return;
        }
        self.unanswered.remove(&hb.node);
        self.metrics.heartbeats_received.inc();
        for ev in self.membership.observe(now, &hb) {
            self.on_event(now, ev);
        }
    }

    /// A node we keep hearing whose heartbeats never echo ours is no
    /// member: it does not hear us (a one-sided `peers` list, a firewall)
    /// or it is a recording. Said (at most every 10 s) once that has gone
    /// on for a dead interval past the window, so a peer that is just
    /// starting is not reported.
    fn note_unanswered(&mut self, now: Instant, node: &str, from: SocketAddr) {
        let dead = self.cfg.timers.dead_interval();
        let window = freshness::window(dead);
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
        if now.saturating_duration_since(*since) < window + dead {
            return;
        }
        if let Some(held) = self.noise.unanswered.pass(now, &self.metrics) {
            tracing::warn!(%from, %node, more_since_last = held,
                "heartbeats from this node never echo ours, so it is no member and both \
                 may announce the same VIPs: it does not hear us (is this node in its \
                 peers, is UDP {} open both ways?), or they are replayed; counted in \
                 flatlan_speaker_heartbeat_replays_total", self.cfg.listen.port());
        }
    }

    /// Sends our heartbeat now rather than at the next interval, at most
    /// once per half interval (replays or a churning peer cannot make us
    /// chatter).
    fn prompt(&mut self, now: Instant) {
        let half = self.cfg.timers.heartbeat_interval / 2;
        if self
            .prompted
            .is_none_or(|t| now.saturating_duration_since(t) >= half)
        {
            self.prompted = Some(now);
            self.heartbeat_now = true;
        }
    }

    fn on_event(&mut self, now: Instant, ev: Event) {
        match &ev {
            Event::Joined(n) => tracing::info!(member = %n, "member joined"),
            Event::Changed(n) => {
                // Its answer tells it we heard the change (a peer holding
                // a VIP a reload added waits for it).
                self.prompt(now);
                tracing::debug!(member = %n, "member changed");
            }
            Event::Left(n) => tracing::info!(member = %n, "member is leaving"),
            Event::Died(n) => tracing::warn!(member = %n, "member missed its heartbeats: dead"),
            Event::Rejoined(n) => {
                // A healed partition: both sides may have announced; make
                // the LAN's caches point at whoever owns now.
                tracing::info!(member = %n, "member is back (partition healed): re-announcing");
                let acts = self.announcer.reannounce(now, None);
                self.execute(acts);
            }
        }
    }

    fn on_frame(&mut self, now: Instant, ifname: &str, frame: &[u8]) {
        let membership = &self.membership;
        let is_member = |m: MacAddr| membership.is_member_mac(m);
        let acts = self.announcer.on_frame(now, ifname, frame, &is_member);
        self.execute(acts);
    }

    /// The VIPs this node may own, with their interfaces. A VIP the host
    /// refused is left out while it backs off, so that the next node by
    /// hash owns it rather than nobody.
    fn my_eligible(&self, now: Instant) -> BTreeMap<IpAddr, IfaceInfo> {
        let mut out = BTreeMap::new();
        if self.leaving.is_some() {
            return out;
        }
        for v in &self.cfg.vips {
            if self.announcer.backing_off(v.address, now) {
                continue;
            }
            if let Some(i) = iface::choose(&self.cfg, v, &self.ifaces) {
                if i.running && !i.mac.is_zero() {
                    out.insert(v.address, i.clone());
                }
            }
        }
        out
    }

    /// One planning turn. Returns true when the speaker may exit.
    fn step(&mut self, now: Instant) -> bool {
        for ev in self.membership.expire(now) {
            self.on_event(now, ev);
        }
        self.membership.prune(now, DEPARTED_KEEP);
        if now >= self.next_iface_poll {
            self.poll_ifaces(now);
        }
        self.reconcile(now);
        if !self.retiring.is_empty() {
            self.retire();
        }
        let acts = self.announcer.due(now);
        self.execute(acts);

        let owned: BTreeSet<IpAddr> = self.announcer.owned().collect();
        if owned != self.last_owned {
            self.last_owned = owned;
            self.heartbeat_now = true;
            self.next_status = now;
        }
        // The thread sends every interval on its own; what it sends is
        // refreshed here about as often, and at once when it changed.
        if self.heartbeat_now || now >= self.next_heartbeat {
            let urgent = std::mem::take(&mut self.heartbeat_now);
            self.beats.update(self.outgoing(now), urgent);
            self.next_heartbeat = now + self.cfg.timers.heartbeat_interval;
        }
        if now >= self.next_status {
            self.publish(now);
            self.next_status = now + STATUS_EVERY;
        }
        self.beats.alive();
        if let Some(since) = self.leaving {
            let claimed = self.vips.iter().any(|v| self.announcer.is_claimed(*v));
            if !claimed {
                return true;
            }
            if now.saturating_duration_since(since) >= self.cfg.timers.handoff_timeout {
                tracing::warn!("handoff timeout: releasing the remaining VIPs");
                self.release_all();
                return true;
            }
        }
        false
    }

    fn poll_ifaces(&mut self, now: Instant) {
        self.next_iface_poll = now + IFACE_POLL;
        match iface::discover() {
            Ok(fresh) => self.on_ifaces(now, fresh),
            Err(e) => tracing::warn!("interface poll: {e}"),
        }
    }

    /// Acts on what an interface poll found.
    fn on_ifaces(&mut self, now: Instant, fresh: BTreeMap<String, IfaceInfo>) {
        let mut came_back = Vec::new();
        let mut recreated = Vec::new();
        for (name, i) in &fresh {
            let was = self.ifaces.get(name);
            if was.is_some_and(|w| w.index != i.index || w.mac != i.mac) {
                // A new device starts with default sysctls: prepare it
                // again. A new MAC on the same device keeps ours, and
                // preparing again would save them as the originals.
                if was.is_some_and(|w| w.index != i.index) {
                    self.prepared.remove(name);
                }
                recreated.push(name.clone());
                continue;
            }
            if i.running && was.is_some_and(|w| !w.running) {
                came_back.push(name.clone());
            }
            if !i.running && was.is_some_and(|w| w.running) {
                tracing::warn!(iface = %name, "link is down");
            }
        }
        let mut acts = Vec::new();
        for name in &came_back {
            tracing::info!(iface = %name, "link is back: re-announcing, listening for peers");
            acts.extend(self.announcer.reannounce(now, Some(name)));
        }
        if !came_back.is_empty() {
            self.listen(now);
        }
        // Interfaces that vanished or were recreated lose their sockets.
        self.sockets
            .retain(|name, s| fresh.get(name).is_some_and(|i| i.index == s.ifindex));
        // One that vanished comes back as a new device, with default
        // sysctls: prepare it again then.
        self.prepared.retain(|name| fresh.contains_key(name));
        // A VIP claimed on a recreated interface (or one whose MAC changed)
        // would stay "owned" with no socket and a stale MAC: deaf to ARP/NS
        // while peers think it is served. Release it (after dropping the old
        // sockets, so there is nothing to leave). The reconcile that follows
        // claims it again, which opens fresh sockets, sets the sysctls of a
        // new device and announces the new MAC.
        for name in recreated {
            tracing::warn!(iface = %name, "interface recreated or its MAC changed: claiming its VIPs again");
            let on_it: Vec<IpAddr> = self
                .announcer
                .vips()
                .iter()
                .filter(|(_, s)| s.link.iface == name && !matches!(s.phase, Phase::Idle))
                .map(|(v, _)| *v)
                .collect();
            for vip in on_it {
                acts.extend(self.announcer.release(vip));
            }
        }
        self.ifaces = fresh;
        self.execute(acts);
    }

    fn reconcile(&mut self, now: Instant) {
        let mine = self.my_eligible(now);
        let mut view: Vec<(String, BTreeSet<IpAddr>)> = self
            .membership
            .live()
            .iter()
            .map(|(n, m)| (n.clone(), m.eligible.clone()))
            .collect();
        if self.leaving.is_none() {
            view.push((self.cfg.node_name.clone(), mine.keys().copied().collect()));
        }
        // Rehash only when the view changed: with 1,000 VIPs and three
        // members every turn would cost 3,000 SHA-256s, and turns come with
        // every heartbeat and interface poll.
        let rehashed = view != self.owner_view || self.vips != self.owner_vips;
        if rehashed {
            let me = &self.cfg.node_name;
            let own = |v: &[(String, BTreeSet<IpAddr>)]| {
                v.iter().find(|(n, _)| n == me).map(|(_, s)| s.clone())
            };
            // Peers learn at once what we may own (an assign backoff that
            // starts or ends, an interface down or back).
            if own(&view) != own(&self.owner_view) {
                self.heartbeat_now = true;
            }
            self.desired = owners(&view, &self.vips);
            self.owner_view = view;
            self.owner_vips = self.vips.clone();
        }
        let handovers = self.handover_since.len();
        let desired = std::mem::take(&mut self.desired);
        let me = self.cfg.node_name.clone();
        let listening = now < self.listen_until;
        self.claim_after.retain(|_, t| now < *t);
        let heard_us = &self.heard_us;
        let all_heard = self.told_at.is_some_and(|told| {
            self.membership
                .live()
                .keys()
                .all(|m| heard_us.get(m).is_some_and(|t| *t >= told))
        });
        if all_heard || self.claim_after.is_empty() {
            self.claim_after.clear();
            self.told_at = None;
        }
        let live = self.membership.live();
        self.heard_us.retain(|m, _| live.contains_key(m));
        // One batch per turn: a failover can move hundreds of VIPs, and
        // each `execute` may start an `ip` process, on this one loop that
        // also sends the heartbeats.
        let mut batch = Vec::new();
        for vip in self.vips.clone() {
            let want = desired.get(&vip) == Some(&me);
            // A "conflict" with a MAC that turned out to be another
            // speaker's (two speakers probing at start, before they heard
            // each other) is not a foreign device: start over.
            if self
                .announcer
                .conflict_mac(vip)
                .is_some_and(|m| self.membership.is_member_mac(m))
            {
                tracing::info!(%vip, "the conflicting MAC belongs to a member: retrying");
                batch.extend(self.announcer.release(vip));
            }
            if want {
                self.handover_since.remove(&vip);
                self.successor_seen.remove(&vip);
                if !listening
                    && !self.claim_after.contains_key(&vip)
                    && !self.announcer.is_claimed(vip)
                {
                    let Some(i) = mine.get(&vip).cloned() else {
                        continue;
                    };
                    if let Err(e) = self.ensure_sockets(&i, vip.is_ipv6()) {
                        tracing::error!(%vip, iface = %i.name, "cannot open packet socket: {e}");
                        continue;
                    }
                    let takeover = self
                        .membership
                        .previous_owner(vip)
                        .filter(|(n, _)| *n != me)
                        .map(|(n, t)| {
                            tracing::info!(%vip, from = %n, "taking over");
                            t
                        });
                    tracing::info!(%vip, iface = %i.name, probe = takeover.is_none(), "claiming");
                    // The probe window starts now, not when the turn began:
                    // an interface poll or socket setup earlier in this turn
                    // can take longer than the whole window on a busy node,
                    // and a late answer (a device that holds the VIP) would
                    // then land after "no answer, claiming" (a CI flake).
                    let acts = self.announcer.claim(
                        Instant::now(),
                        vip,
                        Link {
                            iface: i.name.clone(),
                            mac: i.mac,
                        },
                        takeover,
                    );
                    batch.extend(acts);
                }
                continue;
            }
            if !self.announcer.is_claimed(vip) {
                continue;
            }
            let owned = self.announcer.is_owned(vip);
            let succ = desired.get(&vip);
            // A VIP dropped by a reload is handed over like one we leave:
            // held while its link still runs, until the successor announces.
            let link_ok =
                mine.contains_key(&vip) || self.leaving.is_some() || self.retiring_link_runs(vip);
            let release_now = !owned || !link_ok || succ.is_none();
            let succ_announces = succ.is_some_and(|s| {
                self.membership
                    .live()
                    .get(s)
                    .is_some_and(|m| m.owned.contains(&vip))
            });
            let since = *self.handover_since.entry(vip).or_insert(now);
            let mut release = release_now;
            if succ_announces {
                let seen = *self.successor_seen.entry(vip).or_insert(now);
                // One interval of overlap: packets already on their way to
                // us still find the VIP here.
                if now.saturating_duration_since(seen) >= self.cfg.timers.heartbeat_interval {
                    release = true;
                }
            }
            if now.saturating_duration_since(since) >= self.cfg.timers.handoff_timeout {
                release = true;
            }
            if release {
                tracing::info!(%vip, successor = succ.map(String::as_str).unwrap_or("-"),
                    handed_over = succ_announces, "releasing");
                self.handover_since.remove(&vip);
                self.successor_seen.remove(&vip);
                batch.extend(self.announcer.release(vip));
            }
        }
        self.desired = desired;
        // The status shows owners, members and handovers: publish as soon
        // as they change, so nobody reads a settled fleet that is not.
        if rehashed || !batch.is_empty() || self.handover_since.len() != handovers {
            self.next_status = now;
        }
        self.execute(batch);
    }

    /// True if `vip` was dropped by a reload and the link it is claimed on
    /// still runs, so it can be held until it is handed over.
    fn retiring_link_runs(&self, vip: IpAddr) -> bool {
        self.retiring.contains(&vip)
            && self
                .announcer
                .vips()
                .get(&vip)
                .and_then(|s| self.ifaces.get(&s.link.iface))
                .is_some_and(|i| i.running)
    }

    /// Prepares `i` for claiming a VIP of the family `v6` says: sysctls,
    /// the ARP socket, and the IPv6 socket once an IPv6 VIP is claimed on it
    /// (a reload may add the first one to a running speaker).
    fn ensure_sockets(&mut self, i: &IfaceInfo, v6: bool) -> Result<()> {
        if self.cfg.assign && !self.prepared.contains(&i.name) {
            self.host.prepare_iface(&i.name)?;
            self.prepared.insert(i.name.clone());
        }
        if !self.sockets.contains_key(&i.name) {
            let s = IfaceSockets::open(i, &self.frame_tx)?;
            self.sockets.insert(i.name.clone(), s);
        }
        if v6 {
            if let Some(s) = self.sockets.get_mut(&i.name) {
                s.ensure_v6(i, &self.frame_tx)?;
            }
        }
        Ok(())
    }

    fn execute(&mut self, acts: Vec<Action>) {
        let (acts, failed) = assign_or_release(
            Instant::now(),
            &mut self.announcer,
            &mut *self.host,
            &self.metrics,
            net_assignments(acts),
        );
        if failed {
            // We are no longer eligible for it: say so now.
            self.heartbeat_now = true;
        }
        let mut unassign = Vec::new();
        for a in acts {
            match a {
                Action::Send { iface, frame } => {
                    let Some(s) = self.sockets.get(&iface) else {
                        tracing::debug!(%iface, "no socket to send on");
                        continue;
                    };
                    if let Err(e) = s.send(frame.as_bytes()) {
                        self.metrics.frame_send_errors.inc();
                        if let Some(held) = self.noise.send.pass(Instant::now(), &self.metrics) {
                            tracing::warn!(%iface, more_since_last = held, "send: {e}");
                        }
                    }
                }
                Action::Assign(_) => {}
                Action::Unassign(vip) => unassign.push(vip),
                Action::JoinSolicitedNode { iface, vip } => self.membership_op(&iface, vip, true),
                Action::LeaveSolicitedNode { iface, vip } => self.membership_op(&iface, vip, false),
            }
        }
        // After the frames: a VIP stops being answered before the kernel
        // stops accepting its traffic.
        unassign_all(&mut *self.host, &unassign);
    }

    fn membership_op(&mut self, iface: &str, vip: Ipv6Addr, join: bool) {
        let Some(s) = self.sockets.get_mut(iface) else {
            return;
        };
        let r = if join { s.join(vip) } else { s.leave(vip) };
        if let Err(e) = r {
            tracing::warn!(%iface, %vip, join, "multicast membership: {e}");
        }
    }

    /// What our heartbeat says now.
    fn outgoing(&self, now: Instant) -> Outgoing {
        let mine = self.my_eligible(now);
        let owned: BTreeSet<IpAddr> = self.announcer.owned().collect();
        let mut vips: Vec<VipEntry> = mine
            .keys()
            .map(|v| VipEntry {
                addr: *v,
                owned: owned.contains(v),
                refused: self.announcer.conflict_mac(*v),
            })
            .collect();
        // While leaving we are eligible for nothing, but still report what
        // we announce, so successors see when we let go (peers drop a
        // leaving node from their view at once). A VIP dropped by a reload
        // is not reported while we hold it: peers take every VIP listed for
        // one we may own, and would leave it to us. Its successor probes
        // it (our answer comes from a member's MAC: no conflict) and
        // announces it, and then we let go.
        for v in &owned {
            if self.leaving.is_some() && !mine.contains_key(v) {
                vips.push(VipEntry {
                    addr: *v,
                    owned: true,
                    refused: None,
                });
            }
        }
        let mut macs: Vec<MacAddr> = mine.values().map(|i| i.mac).collect();
        macs.extend(self.announcer.vips().values().map(|s| s.link.mac));
        macs.sort();
        macs.dedup();
        macs.truncate(wire::MAX_MACS);
        let mut dests = self.cfg.peers.clone();
        if self.cfg.multicast {
            dests.push(SocketAddr::new(
                IpAddr::V4(MULTICAST_GROUP),
                self.cfg.listen.port(),
            ));
        }
        Outgoing {
            hb: Heartbeat {
                node: self.cfg.node_name.clone(),
                nonce: self.nonce,
                // Both set by the heartbeat thread as it sends.
                seq: 0,
                challenge: 0,
                echoes: self.echoes.echoes(now),
                leaving: self.leaving.is_some(),
                macs,
                vips,
            },
            dests,
        }
    }

    fn status(&self) -> Status {
        let vips = self
            .vips
            .iter()
            .map(|vip| {
                let st = self.announcer.vips().get(vip);
                let handing_over = self.handover_since.contains_key(vip);
                let state = match st.map(|s| &s.phase) {
                    Some(Phase::Owned { .. }) if handing_over => "releasing",
                    Some(Phase::Owned { .. }) => "announcing",
                    Some(Phase::Probing { .. }) => "probing",
                    Some(Phase::Assigning) => "assigning",
                    Some(Phase::Conflict { .. }) => "conflict",
                    Some(Phase::Idle) | None => "standby",
                };
                let held = matches!(state, "announcing" | "releasing");
                // A refused VIP has no owner, here or in any peer's view
                // (its heartbeat says it refuses it): nobody answers for
                // it but the device that answered the probe.
                let refused_by = self
                    .membership
                    .refused_by(*vip)
                    .filter(|(n, _)| self.desired.get(vip).is_some_and(|d| d == n));
                let owner = if held {
                    Some(self.cfg.node_name.clone())
                } else if state == "conflict" || refused_by.is_some() {
                    None
                } else {
                    self.desired.get(vip).cloned()
                };
                let iface = st.map(|s| s.link.iface.clone()).or_else(|| {
                    self.cfg
                        .vips
                        .iter()
                        .find(|v| v.address == *vip)
                        .and_then(|v| iface::choose(&self.cfg, v, &self.ifaces))
                        .map(|i| i.name.clone())
                });
                let ours = st.and_then(|s| {
                    matches!(s.phase, Phase::Conflict { .. })
                        .then_some(s.conflict)
                        .flatten()
                        .map(|(mac, _)| format!("{mac} answered our probe; not announcing"))
                });
                let theirs = refused_by.map(|(n, mac)| {
                    format!("{mac} answered {n}'s probe; {n} does not announce it")
                });
                VipStatus {
                    vip: vip.to_string(),
                    owner,
                    state: state.to_owned(),
                    interface: iface,
                    // What a standby node once announced with, and when,
                    // is history, not state.
                    mac: st
                        .filter(|_| state != "standby" && state != "conflict")
                        .map(|s| s.link.mac.to_string()),
                    last_garp_unix_ms: st
                        .filter(|_| held)
                        .and_then(|s| s.last_announce)
                        .map(instant_to_unix_ms),
                    conflict: ours.or(theirs),
                    foreign: st
                        .and_then(|s| s.foreign)
                        .map(|(mac, t)| format!("{mac} claimed it at {}", instant_to_unix_ms(t))),
                }
            })
            .collect();
        Status {
            node: self.cfg.node_name.clone(),
            updated_unix_ms: unix_ms(SystemTime::now()),
            members: self.membership.live().keys().cloned().collect(),
            leaving: self.leaving.is_some(),
            vips,
        }
    }

    fn publish(&self, _now: Instant) {
        let st = self.status();
        if let Ok(json) = serde_json::to_string_pretty(&st) {
            if let Ok(mut s) = self.shared.status_json.lock() {
                *s = json;
            }
        }
        self.metrics
            .set_gauges(self.last_owned.len(), self.membership.live().len());
        if let Some(p) = &self.cfg.status_file {
            if let Err(e) = st.write_atomic(p) {
                tracing::warn!("status file: {e}");
            }
        }
    }

    /// Releases everything without waiting (the handoff timed out), in
    /// one batch: one `ip` process, not one per VIP.
    fn release_all(&mut self) {
        let mut acts = Vec::new();
        for v in self.vips.clone() {
            acts.extend(self.announcer.release(v));
        }
        self.execute(acts);
    }
}

/// Keeps, for each VIP, only its last `Assign` or `Unassign` in `acts`: a
/// batch may release and claim the same VIP (an interface recreated, a
/// conflict retried), and since assigns run first and unassigns last, an
/// earlier `Unassign` would otherwise undo a later `Assign`.
fn net_assignments(acts: Vec<Action>) -> Vec<Action> {
    let mut last: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (i, a) in acts.iter().enumerate() {
        if let Action::Assign(v) | Action::Unassign(v) = a {
            last.insert(*v, i);
        }
    }
    acts.into_iter()
        .enumerate()
        .filter(|(i, a)| match a {
            Action::Assign(v) | Action::Unassign(v) => last.get(v) == Some(i),
            _ => true,
        })
        .map(|(_, a)| a)
        .collect()
}

/// Carries out the `Assign`s among `acts` first, in one batch, so traffic
/// attracted by the announcements is accepted, and returns what is left to
/// do, with the first announcements of the VIPs the host accepted, and
/// whether any failed. A VIP that could not be added to `lo` is not
/// announced: an announced VIP the kernel does not accept draws the LAN's
/// traffic to a node that drops it. It backs off for `conflictRetry`,
/// during which this node is not eligible for it, so the next node by
/// hash announces it; then it is claimed again, so a passing failure heals
/// by itself.
fn assign_or_release(
    now: Instant,
    announcer: &mut Announcer,
    host: &mut dyn HostAddrs,
    metrics: &Metrics,
    mut acts: Vec<Action>,
) -> (Vec<Action>, bool) {
    let assign: Vec<IpAddr> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Assign(v) => Some(*v),
            _ => None,
        })
        .collect();
    let failed: BTreeSet<IpAddr> = host
        .add_many(&assign)
        .into_iter()
        .map(|(vip, e)| {
            tracing::error!(%vip, "cannot add the VIP to lo: {e}; not announcing it, \
                leaving it to another node for a while");
            vip
        })
        .collect();
    metrics.assign_failures.add(failed.len() as u64);
    // Frames for a refused VIP (an announcer that did not wait for the
    // host) are not sent.
    acts.retain(|a| {
        !matches!(a, Action::Send { .. }) || !a.vip().is_some_and(|v| failed.contains(&v))
    });
    for vip in assign {
        if failed.contains(&vip) {
            acts.extend(announcer.assign_failed(now, vip));
        } else {
            acts.extend(announcer.assigned(now, vip));
        }
    }
    (acts, !failed.is_empty())
}

/// Takes `vips` off `lo`. Most batches (every received frame, most turns)
/// release nothing, which costs nothing ([`HostAddrs`]).
fn unassign_all(host: &mut dyn HostAddrs, vips: &[IpAddr]) {
    for (vip, e) in host.del_many(vips) {
        tracing::warn!(%vip, "cannot remove the VIP from lo: {e}");
    }
}

/// Runs static mode: validates nothing more (the caller passed a valid
/// config, read from `path`, which SIGHUP re-reads), starts the engine and
/// runs it to completion.
pub fn run_static(cfg: Config, path: PathBuf) -> Result<()> {
    // While this is the only thread: every later one inherits both.
    crate::privileges::raise_fd_limit()?;
    crate::privileges::drop_capabilities(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::sys("tokio runtime", e))?;
    rt.block_on(async move {
        let (engine, frames) = Engine::start(cfg, path).await?;
        engine.run(frames).await
    })
}

#[cfg(test)]
mod tests;
