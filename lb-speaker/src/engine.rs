//! The engine: one tokio loop that gathers, plans and executes.
//!
//! Each iteration:
//! 1. **gather**: wait for a heartbeat, a frame, a source update
//!    ([`crate::source`]), a signal or a timer; read every heartbeat
//!    already queued (a member is judged on what it sent, not on when this
//!    loop got round to reading it) into the [`Inbox`]; take the interface
//!    table [`crate::link_events`] republishes on every rtnetlink link or
//!    address event (no poll).
//!    Frames go to the announcer, whose answers join this iteration's batch
//!    (`engine/gather.rs`).
//! 2. **plan**: [`Planner::turn`] decides, from a [`View`] of all that, what
//!    to claim and release (pure, unit-tested in `plan/tests.rs`).
//! 3. **execute**: the [`Executor`] carries the intents and the announcer's
//!    actions out, once; then the heartbeat ([`crate::outgoing`]) and the
//!    status ([`crate::status::Status::of`]) are rebuilt from a
//!    [`crate::snapshot::Snapshot`] when due (`engine/publish.rs`).
//!
//! `AF_PACKET` reader tasks only forward frames here, the heartbeat thread
//! ([`crate::heartbeat`]) sends every interval however long a turn takes,
//! and the VIP source runs on its own task: the loop awaits nothing else.
//!
//! Shutdown (SIGTERM/SIGINT) is make-before-break: we send `leaving`
//! heartbeats and keep answering; peers drop us at once and the successor
//! claims and announces; we release a VIP one heartbeat interval after the
//! successor's heartbeat shows it announcing it (so in-flight packets still
//! find the VIP here), or at `handoffTimeout`, then exit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use crate::announcer::{Action, Announcer};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::execute::Executor;
use crate::heartbeat::Outgoing;
use crate::http::Shared;
use crate::iface::IfaceInfo;
use crate::inbox::Inbox;
use crate::metrics::Metrics;
use crate::plan::{Intent, Planner, View};
use crate::sockets::FrameRx;
use crate::source::{DesiredVip, StaticFile, UpdateRx, VipSource};

mod gather;
mod publish;
mod start;
#[cfg(test)]
mod tests;

pub use start::Io;

/// How often the status document is refreshed even without changes.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The speaker's state, and the parts that act on the host.
pub struct Engine {
    cfg: Config,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    /// The VIPs the source wants, with their eligibility.
    desired: Vec<DesiredVip>,
    inbox: Inbox,
    planner: Planner,
    announcer: Announcer,
    exec: Executor,
    ifaces: BTreeMap<String, IfaceInfo>,
    leaving: Option<Instant>,
    /// Gathered this iteration, carried out with the plan.
    intents: Vec<Intent>,
    actions: Vec<Action>,
    /// The heartbeat to hand to the sender (urgent or not), and whether
    /// it is the one that tells peers of VIPs the source added.
    outbox: Option<(Outgoing, bool)>,
    tells_added: bool,
    next_heartbeat: Instant,
    next_status: Instant,
    heartbeat_now: bool,
    last_owned: BTreeSet<IpAddr>,
}

impl Engine {
    /// Runs until shutdown completes: `io` carries the heartbeats,
    /// `frames` the packet sockets' frames, `updates` the VIP source's.
    pub async fn run(mut self, io: Io, mut frames: FrameRx, mut updates: UpdateRx) -> Result<()> {
        let mut term = signal(SignalKind::terminate()).map_err(|e| Error::sys("SIGTERM", e))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::sys("SIGINT", e))?;
        let udp = io.udp.clone();
        let mut links = io.links.clone();
        let mut buf = vec![0u8; 65_536];
        tracing::info!(node = %self.cfg.node_name, vips = self.desired.len(), "speaker ready");
        self.planner.listen(Instant::now());
        self.heartbeat_now = true;
        loop {
            let wake = self.next_wake(Instant::now());
            let mut planned = true;
            tokio::select! {
                r = udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let evs = self.inbox.on_datagram(Instant::now(), &buf[..n], from);
                        self.on_events(evs);
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
                Some(u) = updates.recv() => self.on_update(Instant::now(), u),
                Ok(()) = links.changed() => {
                    let fresh = links.borrow_and_update().clone();
                    self.on_ifaces(Instant::now(), fresh);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = term.recv() => self.begin_leaving(Instant::now(), "SIGTERM"),
                _ = int.recv() => self.begin_leaving(Instant::now(), "SIGINT"),
            }
            // A reload's heartbeat goes out before the turn (see `flush`).
            self.flush(&io);
            let mut exit = false;
            if planned {
                let evs = self.inbox.read_queued(&io.udp_now, &mut buf);
                self.on_events(evs);
                exit = self.step(Instant::now());
            } else {
                self.execute();
            }
            self.flush(&io);
            if planned {
                io.beats.alive();
            }
            if exit {
                break;
            }
        }
        // Final word: nothing owned any more.
        let last = self.outgoing(Instant::now());
        let mut beats = io.beats;
        beats.finish(last);
        self.publish();
        let vips = self.planner.vips().to_vec();
        self.exec.restore_host(&vips);
        tracing::info!("speaker stopped");
        Ok(())
    }

    /// Hands the heartbeat built this iteration to the sender. When it is
    /// the first to list VIPs the source added, the planner learns when:
    /// only a challenge issued after this instant proves a peer heard of
    /// them (one issued while the old list was still being sent does not).
    fn flush(&mut self, io: &Io) {
        if let Some((out, urgent)) = self.outbox.take() {
            io.beats.update(out, urgent);
            if std::mem::take(&mut self.tells_added) {
                self.planner.told(Instant::now());
            }
        }
    }

    /// What `flush` does, without a heartbeat sender.
    #[cfg(test)]
    fn flush_told(&mut self) {
        if self.outbox.take().is_some() && std::mem::take(&mut self.tells_added) {
            self.planner.told(Instant::now());
        }
    }

    /// When the loop must run a turn without any input.
    fn next_wake(&self, now: Instant) -> Instant {
        [
            Some(self.next_heartbeat),
            Some(self.next_status),
            self.inbox
                .membership()
                .next_expiry()
                .map(|t| t + Duration::from_millis(1)),
            self.announcer.next_deadline(),
            self.planner.next_wake(now),
            self.exec.recheck_at(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1))
    }

    /// One planning turn: expire members, plan, execute,
    /// refresh the heartbeat and status. Returns true when the speaker may
    /// exit.
    fn step(&mut self, now: Instant) -> bool {
        if self.exec.recheck_at().is_some_and(|t| t <= now) {
            self.exec
                .reassign_lost(now, &self.announcer, self.ifaces.get("lo"));
        }
        let evs = self.inbox.expire(now);
        self.on_events(evs);
        // Gathered intents first: a VIP released on a recreated interface
        // is claimed again by this very turn.
        self.apply_gathered();
        let mine = self.my_eligible(now);
        let view = View {
            me: &self.cfg.node_name,
            leaving: self.leaving.is_some(),
            mine: &mine,
            membership: self.inbox.membership(),
            members_version: self.inbox.version(),
            announcer: &self.announcer,
            ifaces: &self.ifaces,
            heard_us: self.inbox.heard_us(),
        };
        let turn = self.planner.turn(now, &view);
        self.heartbeat_now |= turn.tell_peers;
        if turn.publish {
            self.next_status = now;
        }
        let acts = self.exec.apply(turn.intents, &mut self.announcer);
        self.actions.extend(acts);
        let vips: Vec<IpAddr> = self.announcer.vips().keys().copied().collect();
        for vip in vips {
            let on = self.planner.handing_over(vip);
            self.announcer.set_handing_over(now, vip, on);
        }
        self.actions.extend(self.announcer.due(now));
        self.execute();
        self.exec.sync_sockets(&self.announcer, &self.ifaces);

        let owned: BTreeSet<IpAddr> = self.announcer.owned().collect();
        if owned != self.last_owned {
            self.last_owned = owned;
            self.heartbeat_now = true;
            self.next_status = now;
        }
        self.heartbeat_now |= self.inbox.take_prompt();
        // The thread sends every interval on its own; what it sends is
        // refreshed here about as often, and at once when it changed.
        if self.heartbeat_now || now >= self.next_heartbeat {
            let urgent = std::mem::take(&mut self.heartbeat_now);
            self.outbox = Some((self.outgoing(now), urgent));
            self.next_heartbeat = now + self.cfg.timers.heartbeat_interval;
        }
        if now >= self.next_status {
            self.publish();
            self.next_status = now + STATUS_EVERY;
        }
        turn.exit
    }

    /// Carries out what this iteration gathered and decided, once.
    fn execute(&mut self) {
        self.apply_gathered();
        let acts = std::mem::take(&mut self.actions);
        if self.exec.execute(&mut self.announcer, acts) {
            // We are no longer eligible for it: say so now.
            self.heartbeat_now = true;
        }
    }

    fn apply_gathered(&mut self) {
        if !self.intents.is_empty() {
            let intents = std::mem::take(&mut self.intents);
            let acts = self.exec.apply(intents, &mut self.announcer);
            self.actions.extend(acts);
        }
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
        let source: Box<dyn VipSource> = Box::new(StaticFile::new(path));
        let (engine, io, frames, updates) = start::start(cfg, source).await?;
        engine.run(io, frames, updates).await
    })
}

/// Runs the engine on the VIPs of another source (Kubernetes mode):
/// `setup` runs first inside the runtime, with the metrics the engine
/// will count into and serve; it may spawn what shares the process (the
/// allocator, the node agent) and returns the source. The runtime has
/// worker threads for those tasks and the source's, so that decoding a
/// large list never holds up this loop, which runs on the calling thread;
/// they end with the engine (after its make-before-break handover on
/// SIGTERM).
pub fn run_with_source<F, Fut>(cfg: Config, setup: F) -> Result<()>
where
    F: FnOnce(Arc<Metrics>) -> Fut,
    Fut: std::future::Future<Output = Result<Box<dyn VipSource>>>,
{
    crate::privileges::raise_fd_limit()?;
    crate::privileges::drop_capabilities(&cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flatlan-kube")
        .enable_all()
        .build()
        .map_err(|e| Error::sys("tokio runtime", e))?;
    let r = rt.block_on(async move {
        let metrics = Arc::new(Metrics::default());
        let source = setup(metrics.clone()).await?;
        let (engine, io, frames, updates) = start::start_with_metrics(cfg, source, metrics).await?;
        engine.run(io, frames, updates).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}
