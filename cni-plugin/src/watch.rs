//! `flatlan ipam watch --conf FILE`: the long-running half of "never a
//! duplicate address" (DESIGN §3, issue 10). It listens to ARP and NDP on
//! the bridge and quarantines a pool address the moment a foreign MAC uses
//! it, so that ADD, which trusts a fresh probe-ahead verdict, never hands it
//! out. The classification and the store update are `flatlan_ipam::watch`;
//! this is the socket, the store lock and the logs around it.
//!
//! It lives in the plugin binary because that already parses the network
//! config and owns the store; the node agent has neither. One process per
//! network config; the DaemonSet (or a systemd unit) runs it next to the
//! node agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flatlan_ipam::store::now_secs;
use flatlan_ipam::watch::Watch;
use flatlan_ipam::Pool;
use flatlan_l2::frame::EtherType;
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{debug, info, warn};

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::netlink::{Netlink, Socket};

pub const USAGE: &str =
    "  flatlan ipam watch --conf FILE   (FILE: a conflist, or flatlan's plugin config)";

/// Store writes happen at most this often, whatever the traffic.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Pools (node IPs, the range file) are re-read this often.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// At most this many packet-triggered warnings per minute.
const WARNINGS_PER_MINUTE: u32 = 10;

/// Parses `watch`'s arguments and runs until killed.
pub fn main(args: &[String]) -> Result<String> {
    let usage = format!("usage:\n{USAGE}");
    let mut f = Flags::new(args, &usage);
    let mut conf = None;
    while let Some(a) = f.next()? {
        match a {
            "--conf" => conf = Some(PathBuf::from(f.value()?)),
            _ => return Err(f.unknown()),
        }
    }
    let Some(conf) = conf else {
        return Err(f.usage("--conf FILE is required".into()));
    };
    let conf = load(&conf)?;
    crate::init_logging(Some(conf.log_level.as_deref().unwrap_or("info")));
    let stop = Stop::new()?;
    loop {
        match watch(&conf, &stop) {
            Ok(Run::Stopped) => break,
            Ok(Run::Reload) => continue,
            Err(e) => warn!("{e}; retrying in 5 s"),
        }
        if stop.within(Duration::from_secs(5)) {
            break;
        }
    }
    info!("stopped by a signal");
    Ok(String::new())
}

/// SIGTERM and SIGINT, taken synchronously. As the DaemonSet's
/// `ipam-watch` container this process is PID 1 of its PID namespace, and
/// the kernel gives PID 1 no default action for SIGTERM: without a
/// handler the kubelet waited out the whole grace period (30 s) and
/// killed it on every rolling update and uninstall (issue 14, the real
/// cluster). The signal is remembered once read: a read consumes it, and
/// an error after it (the store, the socket) goes through the 5 s retry,
/// which must still see it, or the 30 s SIGKILL is back.
struct Stop {
    fd: SignalFd,
    seen: std::cell::Cell<bool>,
}

impl Stop {
    fn new() -> Result<Stop> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|e| Error::io("block", "SIGTERM and SIGINT", e.into()))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::io("signalfd", "SIGTERM and SIGINT", e.into()))?;
        Ok(Stop {
            fd,
            seen: std::cell::Cell::new(false),
        })
    }

    /// True once a signal came, and from then on.
    fn requested(&self) -> bool {
        if !self.seen.get() && matches!(self.fd.read_signal(), Ok(Some(_))) {
            self.seen.set(true);
        }
        self.seen.get()
    }

    /// Waits up to `d`; true if a signal came meanwhile.
    fn within(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.requested() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.requested()
    }
}

/// How one [`watch`] ended.
enum Run {
    /// Time to re-read the pools.
    Reload,
    /// A signal: the sightings are flushed, exit.
    Stopped,
}

/// A conflist (flatlan's entry, with the list's name and version) or one
/// plugin config, exactly as the runtime would pass it on stdin.
pub fn load(path: &Path) -> Result<NetConf> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path.display(), e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Decode(format!("{}: {e}", path.display())))?;
    let conf = match v.get("plugins").and_then(|p| p.as_array()) {
        None => v,
        Some(plugins) => {
            let mut p = plugins
                .iter()
                .find(|p| p["type"] == "flatlan")
                .cloned()
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "{} has no plugin of type flatlan",
                        path.display()
                    ))
                })?;
            for key in ["name", "cniVersion"] {
                if p.get(key).is_none() {
                    p[key] = v[key].clone();
                }
            }
            p
        }
    };
    NetConf::parse(conf.to_string().as_bytes())
}

/// Watches until the bridge goes away, the pools need re-reading or a
/// signal comes.
fn watch(conf: &NetConf, stop: &Stop) -> Result<Run> {
    let mut nl = Socket::new()?;
    // The same check ADD makes: `bridge: eth0` must not sniff the NIC.
    let bridge = crate::cmd::bridge(&mut nl, &conf.bridge)?;
    let node_ips = crate::plan::node_ips(conf, &nl.addresses(bridge.index)?);
    let pools: Vec<Pool> = crate::ipam::pools(conf, &node_ips)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let in_scope = |ip| pools.iter().any(|p| p.is_usable(ip));
    let sock = PacketSocket::open_checked(
        &conf.bridge,
        bridge.index,
        &[EtherType::ARP, EtherType::IPV6],
    )
    .map_err(flatlan_ipam::Error::from)?;
    let store = crate::ipam::store(conf)?;
    let state_file = store.dir().join("state.json");
    let mut w = Watch::new(sock.mac(), conf.ipam.probe.quarantine_seconds);
    let mut limit = RateLimit::default();
    let mut seen_mtime = None;
    let (started, mut flushed) = (Instant::now(), Instant::now());
    info!(bridge = %conf.bridge, pools = ?pools.iter().map(Pool::describe).collect::<Vec<_>>(), "watching for foreign use of pool addresses");
    let mut buf = vec![0u8; 2048];
    while started.elapsed() < RELOAD_EVERY {
        let stopping = stop.requested();
        let mtime = modified(&state_file);
        if mtime != seen_mtime {
            w.note_state(&store.peek()?, now_secs());
            seen_mtime = mtime;
        }
        if let Some(n) = sock
            .recv_timeout(&mut buf, Duration::from_millis(250))
            .map_err(flatlan_ipam::Error::from)?
        {
            if let Some(s) = w.observe(&buf[..n.min(buf.len())], now_secs(), in_scope) {
                debug!(ip = %s.addr, mac = %s.mac, evidence = ?s.evidence, "foreign use seen");
            }
        }
        if w.has_pending() && (stopping || flushed.elapsed() >= FLUSH_EVERY) {
            flushed = Instant::now();
            let mut locked = store.lock()?;
            let applied = w.apply(&mut locked.state, now_secs());
            if applied.changed() {
                locked.commit()?;
            }
            drop(locked);
            for s in &applied.quarantined {
                limit.warn(|| warn!(ip = %s.addr, mac = %s.mac, evidence = ?s.evidence, "a LAN host uses this pool address; quarantined"));
            }
            for (s, pod) in &applied.pod_conflicts {
                limit.warn(|| warn!(ip = %s.addr, mac = %s.mac, "a LAN host uses the address of {pod}: a duplicate address on the LAN; find the host"));
            }
            if w.dropped > 0 {
                limit.warn(|| {
                    warn!(
                        dropped = w.dropped,
                        "too many distinct addresses seen at once; some sightings were dropped"
                    )
                });
                w.dropped = 0;
            }
        }
        if stopping {
            return Ok(Run::Stopped);
        }
    }
    Ok(Run::Reload)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// At most [`WARNINGS_PER_MINUTE`] packet-triggered warnings a minute, and
/// one line saying how many were suppressed: a LAN host must not be able
/// to fill the node's disk with our logs.
#[derive(Default)]
struct RateLimit {
    window: Option<Instant>,
    count: u32,
    suppressed: u64,
}

impl RateLimit {
    fn warn(&mut self, log: impl FnOnce()) {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60))
        {
            if self.suppressed > 0 {
                warn!(
                    suppressed = self.suppressed,
                    "warnings suppressed in the last minute"
                );
            }
            *self = RateLimit {
                window: Some(now),
                ..RateLimit::default()
            };
        }
        if self.count < WARNINGS_PER_MINUTE {
            self.count += 1;
            log();
        } else {
            self.suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `requested` consumed the signal, so a store or socket
    /// error after it sent the watcher into its 5 s retry, which never saw
    /// the signal again, and the kubelet's SIGKILL came after 30 s.
    #[test]
    fn a_signal_once_seen_stays_seen() {
        // Blocked in this thread by `Stop::new`, so raising it leaves it
        // pending for the signalfd instead of ending the test process.
        let stop = Stop::new().expect("signalfd");
        assert!(!stop.requested());
        nix::sys::signal::raise(Signal::SIGTERM).expect("raise");
        assert!(stop.requested());
        assert!(stop.requested(), "the second look lost the signal");
        assert!(stop.within(Duration::from_millis(1)));
    }
}
