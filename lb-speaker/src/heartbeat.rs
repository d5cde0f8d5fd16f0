//! The heartbeat sender: a thread of its own, so heartbeats leave on time
//! however long the engine's turn is.
//!
//! Peers declare us dead after `deadAfter` intervals without a heartbeat
//! and take our VIPs over. Sent from the engine's loop, a heartbeat waited
//! behind whatever that loop was doing: a turn that claims or releases
//! hundreds of VIPs, a queue of frames, a CPU shared with a build. Under
//! load that was seconds, and a live, busy node was failed over. Here the
//! engine hands over what to say ([`Outgoing`]) when it changes and about
//! once an interval; this thread numbers, signs and sends the latest of it
//! every interval, and at once when the engine asks (what we announce
//! changed, we are leaving). A thread that mostly sleeps is scheduled
//! promptly even when the engine's thread is not.
//!
//! A heartbeat still means "this speaker works": if the engine has not
//! finished a turn for [`engine_stall`] of the dead interval it is wedged,
//! not busy, and the thread falls silent so that peers take its VIPs over.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::freshness::Challenges;
use crate::metrics::Metrics;
use crate::wire::{self, Heartbeat};

/// The least [`engine_stall`]: far above any turn of a working speaker (a
/// failover of 1,000 VIPs in a debug build on a loaded machine: about half
/// a second).
pub const MIN_ENGINE_STALL: Duration = Duration::from_secs(2);

/// How many dead intervals the engine may go without finishing a turn.
const STALL_DEAD_INTERVALS: u32 = 10;

/// How long the engine may go without finishing a turn before heartbeats
/// stop, for peers that declare a member dead after `dead_interval`: ten of
/// those, and at least [`MIN_ENGINE_STALL`]. A wedged speaker then loses
/// its VIPs a few seconds after it stopped working (3 s with the default
/// timers), and slower timers, whose failovers are slower anyway, give a
/// busy engine more room.
pub fn engine_stall(dead_interval: Duration) -> Duration {
    (dead_interval * STALL_DEAD_INTERVALS).max(MIN_ENGINE_STALL)
}

/// How often the thread looks again while it has nothing to send yet.
const IDLE: Duration = Duration::from_secs(1);

/// What to send, as the engine last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The heartbeat; its `seq` is set by the sender.
    pub hb: Heartbeat,
    /// Where to (peers, the multicast group): a reload may change them.
    pub dests: Vec<SocketAddr>,
}

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Sleep this long, unless woken.
    Wait(Duration),
    /// Send the latest heartbeat now.
    Send,
    /// Due, but the engine is wedged: send nothing this interval.
    Silent,
}

/// The sender's state, shared with the engine.
#[derive(Debug)]
struct Clock {
    /// The latest heartbeat, once the engine has produced one.
    out: Option<Outgoing>,
    /// Send at once instead of at `next`.
    urgent: bool,
    /// When the next regular heartbeat is due.
    next: Instant,
    /// When the engine last finished a turn (or handed over a heartbeat).
    engine_alive: Instant,
    /// How long the engine may take before it counts as wedged.
    stall: Duration,
    /// Send what is urgent, then end the thread.
    stop: bool,
}

impl Clock {
    fn new(now: Instant, stall: Duration) -> Self {
        Clock {
            out: None,
            urgent: false,
            next: now,
            engine_alive: now,
            stall,
            stop: false,
        }
    }

    /// Takes the engine's latest heartbeat. A changed one goes out at once
    /// like an `urgent` one: peers learn of a change as soon as the engine
    /// does (an interface down or back changes what we are eligible for),
    /// not an interval later.
    fn hand_over(&mut self, now: Instant, out: Outgoing, urgent: bool) {
        self.urgent |= urgent || self.out.as_ref() != Some(&out);
        self.out = Some(out);
        self.engine_alive = now;
    }

    /// What to do at `now`: a pure function of the state.
    fn decide(&self, now: Instant) -> Decision {
        if self.out.is_none() {
            return Decision::Wait(IDLE);
        }
        if !self.urgent && now < self.next {
            return Decision::Wait(self.next - now);
        }
        if now.saturating_duration_since(self.engine_alive) > self.stall {
            return Decision::Silent;
        }
        Decision::Send
    }

    /// A heartbeat was due and withheld: the next is due an interval
    /// later. What was urgent is dropped too, or the thread would spin on
    /// it until the engine works again.
    fn withheld(&mut self, now: Instant, interval: Duration) {
        self.urgent = false;
        self.next = now + interval;
    }
}

struct Shared {
    clock: Mutex<Clock>,
    wake: Condvar,
}

impl Shared {
    /// The clock, also after a panic elsewhere: it holds plain data that
    /// every writer leaves consistent.
    fn lock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's handle on the sender thread.
pub struct Sender {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts the thread. `socket` is (a clone of) the heartbeat socket, so
    /// heartbeats keep their source port and multicast settings. `stall`
    /// is how long the engine may go without a turn before heartbeats are
    /// withheld ([`engine_stall`]). Every heartbeat sent carries a new
    /// challenge from `challenges`, which the engine shares to judge the
    /// echoes it receives: issued here, at the moment of sending, so that
    /// a busy engine does not age them.
    pub fn spawn(
        socket: UdpSocket,
        secret: Vec<u8>,
        interval: Duration,
        stall: Duration,
        metrics: Arc<Metrics>,
        challenges: Arc<Mutex<Challenges>>,
    ) -> Result<Sender> {
        let shared = Arc::new(Shared {
            clock: Mutex::new(Clock::new(Instant::now(), stall)),
            wake: Condvar::new(),
        });
        let run = Run {
            shared: shared.clone(),
            socket,
            secret,
            interval,
            metrics,
            challenges,
            seq: 0,
            failing: BTreeSet::new(),
            silent: false,
        };
        let thread = std::thread::Builder::new()
            .name("heartbeats".into())
            .spawn(move || run.run())
            .map_err(|e| Error::sys("start the heartbeat thread", e))?;
        Ok(Sender {
            shared,
            thread: Some(thread),
        })
    }

    /// Hands over the latest heartbeat; a changed or `urgent` one is sent
    /// at once.
    pub fn update(&self, out: Outgoing, urgent: bool) {
        let mut c = self.shared.lock();
        c.hand_over(Instant::now(), out, urgent);
        let wake = c.urgent;
        drop(c);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// The engine finished a turn: it is working.
    pub fn alive(&self) {
        self.shared.lock().engine_alive = Instant::now();
    }

    /// Sends `out` once more and stops the thread (a speaker's last word).
    pub fn finish(&mut self, out: Outgoing) {
        self.update(out, true);
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the heartbeat thread panicked");
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's side.
struct Run {
    shared: Arc<Shared>,
    socket: UdpSocket,
    secret: Vec<u8>,
    interval: Duration,
    metrics: Arc<Metrics>,
    challenges: Arc<Mutex<Challenges>>,
    seq: u64,
    /// Destinations whose last send failed.
    failing: BTreeSet<SocketAddr>,
    /// Heartbeats are withheld (the engine is wedged).
    silent: bool,
}

impl Run {
    fn run(mut self) {
        loop {
            let mut c = self.shared.lock();
            let now = Instant::now();
            let mut decision = c.decide(now);
            if c.stop {
                // The last word (a leaving heartbeat) still goes out.
                if !c.urgent {
                    return;
                }
                decision = Decision::Send;
            }
            match decision {
                Decision::Wait(d) => {
                    // Woken early by an urgent `update`, or by `stop`.
                    drop(self.shared.wake.wait_timeout(c, d));
                }
                Decision::Silent => {
                    c.withheld(now, self.interval);
                    let stall = c.stall;
                    drop(c);
                    if !self.silent {
                        self.silent = true;
                        tracing::error!(
                            "the engine has not finished a turn for over {stall:?}: \
                             heartbeats withheld, so that peers take our VIPs over"
                        );
                    }
                }
                Decision::Send => {
                    c.urgent = false;
                    c.next = now + self.interval;
                    let Some(mut out) = c.out.clone() else {
                        continue;
                    };
                    // Issued while the clock is held, so that a challenge
                    // issued after an `update` returned is sent with what
                    // that update handed over: an echo of it proves the
                    // peer heard the new content (see the engine's
                    // `told_at`).
                    out.hb.challenge = self
                        .challenges
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .issue(Instant::now());
                    drop(c);
                    if std::mem::take(&mut self.silent) {
                        tracing::info!("the engine works again: heartbeats resume");
                    }
                    self.seq += 1;
                    out.hb.seq = self.seq;
                    self.send(&out);
                }
            }
        }
    }

    fn send(&mut self, out: &Outgoing) {
        let bytes = match wire::encode(&out.hb, &self.secret) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("heartbeat: {e}");
                return;
            }
        };
        for p in &out.dests {
            let r = send_to(&self.socket, &bytes, *p);
            // Said once per outage, not ten times a second: a peer we
            // cannot reach is a peer that will also claim our VIPs.
            match r {
                Err(e) if self.failing.insert(*p) => {
                    tracing::warn!(peer = %p, "cannot send heartbeats: {e}");
                }
                Err(_) => {}
                Ok(()) if self.failing.remove(p) => {
                    tracing::info!(peer = %p, "heartbeats are sent again");
                }
                Ok(()) => {}
            }
        }
        self.metrics.heartbeats_sent.inc();
    }
}

/// One datagram. The socket is shared with the engine's tokio socket and
/// so non-blocking: a full send buffer (rare for a few datagrams a
/// second) is given a few milliseconds to drain.
fn send_to(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match socket.send_to(bytes, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn out(node: &str) -> Outgoing {
        Outgoing {
            hb: Heartbeat {
                node: node.into(),
                nonce: 7,
                seq: 0,
                challenge: 0,
                echoes: Vec::new(),
                leaving: false,
                macs: Vec::new(),
                vips: Vec::new(),
            },
            dests: Vec::new(),
        }
    }

    #[test]
    fn sends_on_time_at_once_when_changed_or_urgent_never_for_a_wedged_engine() {
        let t0 = Instant::now();
        let stall = engine_stall(Duration::from_millis(300));
        assert_eq!(stall, 3000 * MS, "ten dead intervals");
        let mut c = Clock::new(t0, stall);
        assert_eq!(c.decide(t0), Decision::Wait(IDLE), "nothing to say yet");
        c.hand_over(t0, out("a"), false);
        assert_eq!(c.decide(t0), Decision::Send);
        // Sent: the next one is due an interval later.
        c.urgent = false;
        c.next = t0 + 100 * MS;
        assert_eq!(c.decide(t0 + 30 * MS), Decision::Wait(70 * MS));
        c.hand_over(t0 + 30 * MS, out("a"), false);
        assert_eq!(c.decide(t0 + 30 * MS), Decision::Wait(70 * MS), "same");
        let mut changed = out("a");
        changed.hb.leaving = true;
        c.hand_over(t0 + 30 * MS, changed.clone(), false);
        assert_eq!(c.decide(t0 + 30 * MS), Decision::Send, "changed");
        c.urgent = false;
        c.hand_over(t0 + 30 * MS, changed, true);
        assert_eq!(c.decide(t0 + 30 * MS), Decision::Send, "urgent");
        c.urgent = false;
        c.engine_alive = t0;
        // A busy engine (a long turn) does not hold heartbeats back ...
        assert_eq!(c.decide(t0 + 2500 * MS), Decision::Send);
        // ... a wedged one does, also when something was urgent, and then
        // waits an interval rather than deciding again at once.
        c.urgent = true;
        let t1 = t0 + stall + MS;
        assert_eq!(c.decide(t1), Decision::Silent);
        c.withheld(t1, 100 * MS);
        assert_eq!(c.decide(t1), Decision::Wait(100 * MS));
        c.engine_alive = t0 + stall;
        assert_eq!(c.decide(t1 + 100 * MS), Decision::Send);
    }

    #[test]
    fn the_stall_limit_follows_the_dead_interval_with_a_floor() {
        assert_eq!(engine_stall(Duration::from_millis(30)), MIN_ENGINE_STALL);
        assert_eq!(
            engine_stall(Duration::from_secs(3)),
            Duration::from_secs(30)
        );
    }

    fn receiver() -> (UdpSocket, SocketAddr) {
        let r = UdpSocket::bind("127.0.0.1:0").expect("bind");
        r.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let a = r.local_addr().expect("addr");
        (r, a)
    }

    fn recv(r: &UdpSocket) -> Heartbeat {
        let mut buf = [0u8; 2048];
        let n = r.recv(&mut buf).expect("a heartbeat within 5 s");
        wire::decode(&buf[..n], b"0123456789abcdef").expect("valid")
    }

    /// The engine hands over one heartbeat and then stays busy (this test
    /// never calls it again): heartbeats keep coming every interval,
    /// numbered; the last word is sent before the thread ends.
    #[test]
    fn heartbeats_keep_their_interval_while_the_engine_is_busy() {
        let (r, to) = receiver();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let metrics = Arc::new(Metrics::default());
        let interval = 50 * MS;
        let challenges = Arc::new(Mutex::new(Challenges::new([3; 32], interval * 6)));
        let mut s = Sender::spawn(
            socket,
            b"0123456789abcdef".to_vec(),
            interval,
            engine_stall(interval * 3),
            metrics.clone(),
            challenges.clone(),
        )
        .expect("spawn");
        let mut o = out("busy");
        o.dests = vec![to];
        let t0 = Instant::now();
        s.update(o.clone(), true);
        let got: Vec<Heartbeat> = (0..6).map(|_| recv(&r)).collect();
        let took = t0.elapsed();
        let seqs: Vec<u64> = got.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        // A new challenge each time, each one the engine recognises as
        // its own: the thread issues them, not the (busy) engine.
        let mut cs: Vec<u64> = got.iter().map(|h| h.challenge).collect();
        let last = cs[5];
        assert!(challenges.lock().unwrap().is_recent(last, Instant::now()));
        cs.dedup();
        assert_eq!(cs.len(), 6, "{cs:?}");
        // Five intervals after the first; generous for a loaded machine.
        assert!(took >= 5 * interval - 10 * MS, "{took:?}");
        assert!(took < 40 * interval, "{took:?}");
        o.hb.leaving = true;
        s.finish(o);
        let mut last = recv(&r);
        while !last.leaving {
            last = recv(&r);
        }
        assert!(last.seq > 6);
        assert!(metrics.heartbeats_sent.get() >= 7);
    }
}
