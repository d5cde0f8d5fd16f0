//! Setting the engine up: the parts that touch the system at start (the
//! heartbeat socket and its sender thread, the metrics endpoint, leftovers
//! on `lo`), kept apart from [`Engine::new`], which binds nothing, so the
//! engine's tests need no socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::Engine;
use crate::announcer::Announcer;
use crate::assign::{HostAddrs, LoopbackAssign, NoAssign};
use crate::config::{Config, MULTICAST_GROUP};
use crate::error::{Error, Result};
use crate::execute::Executor;
use crate::freshness::{self, Challenges};
use crate::heartbeat;
use crate::http::Shared;
use crate::iface::{self, IfaceInfo};
use crate::inbox::Inbox;
use crate::link_events::{self, Ifaces};
use crate::metrics::Metrics;
use crate::plan::Planner;
use crate::sockets::{FrameRx, FrameTx, Sockets};
use crate::source::{self, UpdateRx, VipSource};

/// The heartbeat socket and sender: what [`Engine::run`] needs besides
/// the engine.
pub struct Io {
    /// The heartbeat socket, for the loop to wait on ...
    pub(super) udp: Arc<UdpSocket>,
    /// ... and the same socket, to read what is queued without waiting.
    pub(super) udp_now: std::net::UdpSocket,
    /// Sends our heartbeats from its own thread.
    pub(super) beats: heartbeat::Sender,
    /// The interface table, republished on rtnetlink link and address
    /// events ([`link_events`]).
    pub(super) links: watch::Receiver<Ifaces>,
}

/// What [`Engine::new`] is built from.
pub struct Parts {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// What the metrics endpoint serves.
    pub shared: Arc<Shared>,
    /// Adds and removes VIPs on the host.
    pub host: Box<dyn HostAddrs>,
    /// The interfaces at start.
    pub ifaces: BTreeMap<String, IfaceInfo>,
    /// Our challenges, shared with the heartbeat sender.
    pub challenges: Arc<Mutex<Challenges>>,
    /// Our boot nonce.
    pub nonce: u64,
    /// Where packet sockets' readers send frames.
    pub frame_tx: FrameTx,
}

impl Engine {
    /// An engine for `cfg` on `parts`; binds and spawns nothing.
    pub fn new(cfg: Config, parts: Parts) -> Engine {
        let now = Instant::now();
        let desired = source::from_config(&cfg);
        let vips = desired.iter().map(|d| d.address()).collect();
        Engine {
            inbox: Inbox::new(&cfg, parts.nonce, parts.challenges, parts.metrics.clone()),
            planner: Planner::new(cfg.timers.clone(), vips, now),
            announcer: Announcer::new(cfg.timers.clone(), parts.metrics.clone())
                .confirming_assign(),
            exec: Executor::new(
                parts.host,
                cfg.assign,
                Sockets::new(parts.frame_tx),
                parts.metrics.clone(),
            ),
            desired,
            metrics: parts.metrics,
            shared: parts.shared,
            ifaces: parts.ifaces,
            leaving: None,
            intents: Vec::new(),
            actions: Vec::new(),
            outbox: None,
            tells_added: false,
            next_heartbeat: now,
            next_status: now,
            heartbeat_now: true,
            last_owned: BTreeSet::new(),
            cfg,
        }
    }
}

/// Sets up what does not depend on owning anything (interfaces, the
/// heartbeat socket, the metrics endpoint, the VIP source) and removes
/// leftover VIPs from `lo`. The packet sockets and the
/// `arp_ignore`/`arp_announce` sysctls of an interface are set later, on
/// the first claim on it, so a failure here leaves the system untouched
/// apart from those leftovers being gone.
pub async fn start(
    cfg: Config,
    source: Box<dyn VipSource>,
) -> Result<(Engine, Io, FrameRx, UpdateRx)> {
    start_with_metrics(cfg, source, Arc::new(Metrics::default())).await
}

/// [`start`], counting into `metrics`, which others in the process (the
/// allocator) share, so that one `/metrics` serves them all.
pub async fn start_with_metrics(
    cfg: Config,
    source: Box<dyn VipSource>,
    metrics: Arc<Metrics>,
) -> Result<(Engine, Io, FrameRx, UpdateRx)> {
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        ..Default::default()
    });
    let links = link_events::watch_ifaces().await?;
    let ifaces = links.borrow().clone();
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
    let window = freshness::window(&cfg.timers);
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
    let host: Box<dyn HostAddrs> = if cfg.assign {
        Box::new(LoopbackAssign::new(&cfg.state_dir, &cfg.sysctl_root)?)
    } else {
        Box::new(NoAssign)
    };
    let (frame_tx, frame_rx) = mpsc::channel(1024);
    let (update_tx, update_rx) = mpsc::channel(16);
    let mut source = source;
    source.observe_status(shared.status.subscribe());
    source.start(update_tx)?;
    let nonce = freshness::boot_nonce(&seed);
    let mut engine = Engine::new(
        cfg,
        Parts {
            metrics,
            shared,
            host,
            ifaces,
            challenges,
            nonce,
            frame_tx,
        },
    );
    // A previous run may have been SIGKILLed while owning: drop its
    // leftovers so this node does not accept traffic it no longer owns.
    let all = engine.planner.vips().to_vec();
    engine.exec.remove_leftovers(&all);
    let io = Io {
        udp: Arc::new(udp),
        udp_now,
        beats,
        links,
    };
    Ok((engine, io, frame_rx, update_rx))
}
