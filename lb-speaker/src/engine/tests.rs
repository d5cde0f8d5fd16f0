//! The engine's gather and execute steps, on an engine built with
//! [`Engine::new`]: no heartbeat socket, no runtime.

use std::net::SocketAddr;
use std::sync::Mutex;

use flatlan_l2::mac::MacAddr;
use tokio::sync::mpsc;

use super::start::Parts;
use super::*;
use crate::announcer::{announce_frames, Link};
use crate::assign::HostAddrs;
use crate::config::Timers;
use crate::execute::{assign_or_release, net_assignments, unassign_all};
use crate::freshness::Challenges;
use crate::wire::{self, Heartbeat, VipEntry};

/// A config reader for tests whose config names no files.
fn no_files(_: &std::path::Path) -> std::io::Result<Vec<u8>> {
    Err(std::io::ErrorKind::NotFound.into())
}

fn yaml(vips: &str) -> String {
    format!(
        "node: {{ name: me }}\nlisten: \"127.0.0.1:0\"\nsecret: \"0123456789abcdef0123\"\n\
         metricsAddr: off\nassign: false\nvips: [{vips}]\n"
    )
}

fn eth9(index: u32, last: u8) -> IfaceInfo {
    IfaceInfo {
        name: "eth9".into(),
        index,
        mac: MacAddr([2, 0, 0, 0, 0, last]),
        running: true,
        nets: vec!["192.0.2.10/24".parse().unwrap()],
    }
}

/// An engine for `yaml` with `host`, an `eth9` in 192.0.2.0/24, and
/// nothing bound.
fn engine(yaml: &str, host: FakeHost) -> Engine {
    let cfg = Config::from_yaml(yaml, &no_files).unwrap();
    let window = crate::freshness::window(&cfg.timers);
    let (frame_tx, _) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::default());
    Engine::new(
        cfg,
        Parts {
            shared: Arc::new(Shared {
                metrics: metrics.clone(),
                ..Default::default()
            }),
            metrics,
            host: Box::new(host),
            ifaces: BTreeMap::from([("eth9".into(), eth9(99, 9))]),
            challenges: Arc::new(Mutex::new(Challenges::new([7; 32], window))),
            nonce: 1,
            frame_tx,
        },
    )
}

fn link() -> Link {
    Link {
        iface: "eth9".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
    }
}

/// Claims `vips` as takeovers (owned at once) and carries that out.
fn own(e: &mut Engine, vips: &[IpAddr]) {
    let now = Instant::now();
    for v in vips {
        let acts = e.announcer.claim(now, *v, link(), Some(now));
        e.actions.extend(acts);
    }
    e.execute();
}

fn peer_hb(seq: u64, vips: Vec<VipEntry>) -> Heartbeat {
    Heartbeat {
        node: "peer".into(),
        nonce: 1,
        seq,
        challenge: 0,
        echoes: Vec::new(),
        leaving: false,
        macs: Vec::new(),
        vips,
    }
}

/// What the fake host was asked.
#[derive(Debug, Default)]
struct HostLog {
    /// The VIP it refuses to add.
    bad: Option<IpAddr>,
    added: Vec<IpAddr>,
    /// The sizes of the non-empty batches (adds and deletes): each
    /// one an `ip` process for the real host.
    batches: Vec<usize>,
    deleted: Vec<usize>,
    prepared: usize,
}

/// A host that records what it is asked and refuses `bad`; clones
/// share the record, so a test keeps one while the engine owns another.
#[derive(Clone, Default)]
struct FakeHost(Arc<std::sync::Mutex<HostLog>>);

impl FakeHost {
    fn refusing(bad: IpAddr) -> Self {
        let h = FakeHost::default();
        h.log().bad = Some(bad);
        h
    }

    fn log(&self) -> std::sync::MutexGuard<'_, HostLog> {
        self.0.lock().unwrap()
    }
}

impl HostAddrs for FakeHost {
    fn prepare_iface(&mut self, _: &str) -> Result<()> {
        self.log().prepared += 1;
        Ok(())
    }
    fn add_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        let mut log = self.log();
        if !vips.is_empty() {
            log.batches.push(vips.len());
        }
        let mut failed = Vec::new();
        for v in vips {
            if Some(*v) == log.bad {
                let e = std::io::Error::other("EPERM");
                failed.push((*v, Error::sys("ip addr replace", e)));
            } else {
                log.added.push(*v);
            }
        }
        failed
    }
    fn del_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        let mut log = self.log();
        if !vips.is_empty() {
            log.batches.push(vips.len());
            log.deleted.push(vips.len());
        }
        Vec::new()
    }
}

#[test]
fn frames_and_turns_that_change_no_vip_leave_the_host_alone() {
    let metrics = Arc::new(Metrics::default());
    let mut ann = Announcer::new(Timers::default(), metrics.clone());
    let vip: IpAddr = "10.0.0.1".parse().unwrap();
    let link = Link {
        iface: "eth0".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
    };
    let now = Instant::now();
    let claimed = ann.claim(now, vip, link.clone(), Some(now));
    let mut host = FakeHost::default();
    let calls = |h: &FakeHost| h.log().batches.len();
    assign_or_release(now, &mut ann, &mut host, &metrics, claimed);
    assert_eq!(calls(&host), 1, "the claim puts the VIP on lo");
    unassign_all(&mut host, &[]);
    // A refresh round: frames only.
    let refresh = announce_frames(vip, &link);
    let (left, _) = assign_or_release(now, &mut ann, &mut host, &metrics, net_assignments(refresh));
    unassign_all(&mut host, &[]);
    assert_eq!(left.len(), 2);
    assert_eq!(calls(&host), 1, "no host call without an address to change");
    unassign_all(&mut host, &[vip]);
    assert_eq!(calls(&host), 2);
}

#[test]
fn only_the_last_assignment_of_a_vip_in_a_batch_counts() {
    let a: IpAddr = "10.0.0.1".parse().unwrap();
    let b: IpAddr = "10.0.0.2".parse().unwrap();
    let acts = vec![
        Action::Unassign(a),
        Action::Assign(b),
        Action::Assign(a),
        Action::Unassign(b),
    ];
    assert_eq!(
        net_assignments(acts),
        vec![Action::Assign(a), Action::Unassign(b)]
    );
}

#[test]
fn a_vip_that_cannot_be_added_is_neither_announced_nor_owned() {
    let metrics = Arc::new(Metrics::default());
    let timers = Timers::default();
    let mut ann = Announcer::new(timers.clone(), metrics.clone()).confirming_assign();
    let good: IpAddr = "10.0.0.1".parse().unwrap();
    let bad: IpAddr = "10.0.0.2".parse().unwrap();
    let link = Link {
        iface: "eth0".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
    };
    let now = Instant::now();
    // Takeovers own at once: the Assign, then (once the host took it)
    // the first GARP round.
    let mut acts = ann.claim(now, good, link.clone(), Some(now));
    acts.extend(ann.claim(now, bad, link.clone(), Some(now)));
    let mut host = FakeHost::refusing(bad);
    let (left, failed) = assign_or_release(now, &mut ann, &mut host, &metrics, acts);
    assert!(failed);
    assert_eq!(host.log().added, vec![good]);
    let frames: Vec<Option<IpAddr>> = left
        .iter()
        .filter(|a| matches!(a, Action::Send { .. }))
        .map(Action::vip)
        .collect();
    assert_eq!(
        frames,
        vec![Some(good), Some(good)],
        "GARPs for the good VIP only"
    );
    assert!(
        !left
            .iter()
            .any(|a| !matches!(a, Action::Assign(_)) && a.vip() == Some(bad)),
        "nothing else to do for the bad VIP: {left:?}"
    );
    assert!(ann.is_owned(good) && !ann.is_claimed(bad));
    assert_eq!(metrics.assign_failures.get(), 1);
    // Only what was sent is counted.
    assert_eq!(metrics.announcements.get(), 1);
    assert_eq!(metrics.garps_sent.get(), 2);
    assert_eq!(metrics.failovers_total.get(), 1);
    assert_eq!(metrics.failover_seconds.count(), 1);
    assert!(ann.vips()[&bad].last_announce.is_none());
    // It backs off: not claimed again (no `ip` process each turn) until
    // the retry time, which wakes the engine.
    assert!(ann.backing_off(bad, now));
    assert!(ann.claim(now, bad, link.clone(), None).is_empty());
    let retry = now + timers.conflict_retry;
    assert!(ann.next_deadline().is_some_and(|t| t <= retry));
    ann.due(retry);
    assert!(!ann.backing_off(bad, retry));
    let again = ann.claim(retry, bad, link, None);
    assert_eq!(again, vec![Action::Assign(bad)], "probed already");
    let mut ok = FakeHost::default();
    let (left, failed) = assign_or_release(retry, &mut ann, &mut ok, &metrics, again);
    assert!(!failed && ann.is_owned(bad));
    let sends = left
        .iter()
        .filter(|a| matches!(a, Action::Send { .. }))
        .count();
    assert_eq!(sends, 2, "announced now");
    assert_eq!(metrics.announcements.get(), 2);
}

/// The loop is busy (this test never yields to a runtime) for longer than
/// the dead interval while a peer keeps sending: the peer is alive,
/// because its heartbeats are read before anyone is judged.
#[test]
fn a_member_whose_heartbeats_wait_unread_is_not_declared_dead() {
    let y = "node: { name: me }\nlisten: \"127.0.0.1:0\"\nsecret: \"0123456789abcdef0123\"\n\
             metricsAddr: off\nassign: false\nheartbeatInterval: 20ms\ndeadAfter: 3\n\
             vips: [{ address: 192.0.2.1 }]\n";
    let mut e = engine(y, FakeHost::default());
    // Nothing to claim: this is about membership.
    e.ifaces.clear();
    let secret = e.cfg.secret.clone();
    let ours = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    ours.set_nonblocking(true).unwrap();
    let to = ours.local_addr().unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let challenges = e.inbox.challenges().clone();
    let send = |seq| {
        // The peer heard our latest heartbeat: it echoes its challenge.
        let mut hb = peer_hb(seq, Vec::new());
        hb.challenge = seq;
        hb.echoes = vec![challenges.lock().unwrap().issue(Instant::now())];
        peer.send_to(&wire::encode(&hb, &secret).unwrap(), to)
            .unwrap();
    };
    let mut buf = vec![0u8; 65_536];
    let pause = Duration::from_millis(25);
    send(1);
    e.inbox.read_queued(&ours, &mut buf);
    assert!(!e.step(Instant::now()), "not leaving");
    assert!(e.inbox.membership().live().contains_key("peer"));
    for seq in 2..6 {
        std::thread::sleep(pause);
        send(seq);
    }
    e.inbox.read_queued(&ours, &mut buf);
    e.step(Instant::now());
    assert!(
        e.inbox.membership().live().contains_key("peer"),
        "alive: its heartbeats were queued"
    );
    assert_eq!(e.metrics.heartbeats_received.get(), 5);
    // Silent past the detector's bound (the late reads above count as a
    // late link, which lengthens its timeout, up to maxDeadTime).
    std::thread::sleep(e.cfg.timers.max_dead_time + pause);
    e.inbox.read_queued(&ours, &mut buf);
    e.step(Instant::now());
    assert!(e.inbox.membership().live().is_empty(), "silent: dead");
}

/// A heartbeat that echoes no recent challenge of ours (a recording, or a
/// peer that has not heard us yet) makes nobody a member, however new its
/// sequence number; its challenge is echoed at once, and the sender's
/// answer that echoes ours does make it one. Nothing it said (here: seq
/// 2^64-1) keeps the sender's later heartbeats out.
#[test]
fn only_a_heartbeat_that_echoes_our_challenge_is_a_sign_of_life() {
    let mut e = engine(&yaml("{ address: 192.0.2.1 }"), FakeHost::default());
    let secret = e.cfg.secret.clone();
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let hb = |seq, challenge, echoes| {
        let mut h = peer_hb(seq, Vec::new());
        h.challenge = challenge;
        h.echoes = echoes;
        h
    };
    let deliver = |e: &mut Engine, h: Heartbeat| {
        let bytes = wire::encode(&h, &secret).unwrap();
        e.inbox.on_datagram(Instant::now(), &bytes, from);
    };
    // A challenge of an earlier life of ours, say: not recent.
    deliver(&mut e, hb(u64::MAX, 41, vec![12345]));
    assert!(
        e.inbox.membership().live().is_empty(),
        "a replay is no member"
    );
    assert_eq!(e.metrics.heartbeat_replays.get(), 1);
    assert!(e.inbox.take_prompt(), "its sender is answered at once");
    assert_eq!(e.outgoing(Instant::now()).hb.echoes, vec![41]);
    // Heard for long without an echo of ours: said, once.
    let t0 = Instant::now();
    let stale = wire::encode(&hb(2, 43, vec![]), &secret).unwrap();
    // The window (maxDeadTime, 800 ms) and a dead interval (300 ms) pass
    // before it is said.
    for ms in (0..=1400).step_by(100) {
        e.inbox
            .on_datagram(t0 + Duration::from_millis(ms), &stale, from);
    }
    assert!(e.inbox.is_unanswered("peer"));
    assert_eq!(e.metrics.log_suppressed.get(), 3, "logged once, then held");
    let c = e.inbox.challenges().lock().unwrap().issue(Instant::now());
    let v0 = e.inbox.version();
    deliver(&mut e, hb(1, 42, vec![c]));
    assert!(e.inbox.membership().live().contains_key("peer"));
    assert_eq!(e.inbox.version(), v0 + 1, "a join moves the version");
    assert!(!e.inbox.is_unanswered("peer"));
    assert_eq!(e.metrics.heartbeats_received.get(), 1);
    // Its latest fresh and latest other challenge.
    assert_eq!(e.outgoing(Instant::now()).hb.echoes, vec![42, 43]);
}

/// A reload that adds a VIP hands peers a heartbeat listing it at once,
/// and the planner holds it while a live peer may not have heard.
#[test]
fn a_vip_a_reload_adds_is_told_at_once_and_held_for_live_peers() {
    let mut e = engine(&yaml("{ address: 192.0.2.1 }"), FakeHost::default());
    let added: IpAddr = "192.0.2.2".parse().unwrap();
    e.inbox.observe(Instant::now(), &peer_hb(1, Vec::new()));
    let new = Config::from_yaml(
        &yaml("{ address: 192.0.2.1 }, { address: 192.0.2.2 }"),
        &no_files,
    )
    .unwrap();
    let now = Instant::now();
    e.apply_config(now, &new);
    let (out, urgent) = e.outbox.take().expect("told at once");
    assert!(urgent);
    assert!(out.hb.vips.iter().any(|v| v.addr == added));
    assert_eq!(e.planner.held().collect::<Vec<_>>(), vec![added]);
    assert_eq!(e.metrics.config_reloads.get(), 1);
}

/// Status tells the truth: a standby row shows no MAC or last GARP from
/// when it was ours, and a VIP its owner refuses (a foreign device
/// answered that owner's probe) has no owner in a peer's view, and shows
/// the conflict.
#[test]
fn status_shows_no_stale_announcement_and_a_peers_conflict() {
    let mut e = engine(&yaml("{ address: 192.0.2.1 }"), FakeHost::default());
    let vip: IpAddr = "192.0.2.1".parse().unwrap();
    own(&mut e, &[vip]);
    let row = |e: &Engine| e.status().vips[0].clone();
    let owned = row(&e);
    assert_eq!(owned.state, "announcing");
    assert_eq!(owned.mac.as_deref(), Some("02:00:00:00:00:09"));
    assert!(owned.last_garp_unix_ms.is_some());
    e.intents.push(Intent::Release(vip));
    e.execute();
    let standby = row(&e);
    assert_eq!(standby.state, "standby");
    assert_eq!((standby.mac, standby.last_garp_unix_ms), (None, None));
    assert_eq!(standby.interface.as_deref(), Some("eth9"));

    let foreign = MacAddr([2, 0, 0, 0, 0, 0xee]);
    let mut hb = peer_hb(1, Vec::new());
    hb.vips = vec![VipEntry {
        addr: vip,
        owned: false,
        refused: Some(foreign),
    }];
    e.inbox.observe(Instant::now(), &hb);
    // The peer's view: we are not eligible, it is (and refuses it).
    e.desired[0].eligible = false;
    e.step(Instant::now());
    assert_eq!(
        e.planner.owners().get(&vip).map(String::as_str),
        Some("peer")
    );
    let r = row(&e);
    assert_eq!(r.owner, None, "{r:?}");
    let note = r.conflict.unwrap_or_default();
    assert!(
        note.contains("peer") && note.contains(&foreign.to_string()),
        "{note}"
    );
    assert!(e.status().render(0).contains("conflict: "));
}

/// While a VIP backs off, our heartbeat leaves it out of what we are
/// eligible for, so every member's hash picks the next node for it.
#[test]
fn a_vip_the_host_refused_is_left_to_the_next_node() {
    let (good, bad): (IpAddr, IpAddr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let mut e = engine(
        &yaml("{ address: 192.0.2.1 }, { address: 192.0.2.2 }"),
        FakeHost::refusing(bad),
    );
    let retry = e.cfg.timers.conflict_retry;
    let now = Instant::now();
    let eligible = |e: &Engine, t| e.my_eligible(t).into_keys().collect::<Vec<_>>();
    assert_eq!(eligible(&e, now), vec![good, bad]);
    e.heartbeat_now = false;
    own(&mut e, &[good, bad]);
    assert!(e.heartbeat_now, "peers are told at once");
    assert_eq!(eligible(&e, now), vec![good]);
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert_eq!(said, vec![good]);
    e.step(now);
    assert_eq!(
        e.planner.owners().get(&bad),
        None,
        "nobody else is live here"
    );
    let later = now + retry + Duration::from_secs(1);
    assert_eq!(eligible(&e, later), vec![good, bad]);
}

/// A VIP a reload drops is not offered to peers as ours while we hold it
/// for its successor: they would wait for us.
#[test]
fn a_vip_dropped_by_a_reload_is_not_offered_while_held() {
    let all = "{ address: 192.0.2.1 }, { address: 192.0.2.2 }, { address: 192.0.2.3 }";
    let mut e = engine(&yaml(all), FakeHost::default());
    let [kept, handed, alone]: [IpAddr; 3] =
        ["192.0.2.1", "192.0.2.2", "192.0.2.3"].map(|v| v.parse().unwrap());
    own(&mut e, &[kept, handed, alone]);
    let entry = |addr| VipEntry {
        addr,
        owned: false,
        refused: None,
    };
    e.inbox
        .observe(Instant::now(), &peer_hb(1, vec![entry(handed)]));
    let new = Config::from_yaml(&yaml("{ address: 192.0.2.1 }"), &no_files).unwrap();
    let now = Instant::now();
    e.apply_config(now, &new);
    e.step(now);
    assert!(e.announcer.is_owned(handed), "held for its successor");
    assert!(!e.announcer.is_claimed(alone), "nobody to hand it to");
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert_eq!(said, vec![kept]);
    assert_eq!(e.status().vips.len(), 2, "alone is forgotten");
}

/// The engine tells the announcer which VIPs are held for a successor: a
/// held VIP's next burst round sends nothing while a kept VIP's does (on
/// the real cluster a round of the old owner's, 20 ms after the new
/// pod's GARP, lost 2 pings).
#[test]
fn a_vip_held_for_its_successor_sends_no_more_rounds() {
    let both = "{ address: 192.0.2.1 }, { address: 192.0.2.2 }";
    let y = format!("{}handoffTimeout: 5s\n", yaml(both));
    let mut e = engine(&y, FakeHost::default());
    let [kept, handed]: [IpAddr; 2] = ["192.0.2.1", "192.0.2.2"].map(|v| v.parse().unwrap());
    own(&mut e, &[kept, handed]);
    let entry = VipEntry {
        addr: handed,
        owned: false,
        refused: None,
    };
    let now = Instant::now();
    e.inbox.observe(now, &peer_hb(1, vec![entry]));
    let new = Config::from_yaml(
        &format!("{}handoffTimeout: 5s\n", yaml("{ address: 192.0.2.1 }")),
        &no_files,
    )
    .unwrap();
    e.apply_config(now, &new);
    e.step(now);
    assert!(e.announcer.is_owned(handed), "held for its successor");
    let garps = e.metrics.garps_sent.get();
    // The burst's second round (100 ms), well before the peer could be
    // declared dead or the handoff time out.
    e.step(now + Duration::from_millis(150));
    assert!(e.announcer.is_owned(handed), "still held");
    assert_eq!(
        e.metrics.garps_sent.get() - garps,
        2,
        "only the kept VIP's round (a GARP request and reply)"
    );
}

/// A handoff timeout releases every VIP with one host call.
#[test]
fn releasing_everything_takes_one_host_call() {
    let all = "{ address: 192.0.2.1 }, { address: 192.0.2.2 }, { address: 192.0.2.3 }";
    let host = FakeHost::default();
    let mut e = engine(&yaml(all), host.clone());
    let vips = e.planner.vips().to_vec();
    own(&mut e, &vips);
    assert_eq!(e.announcer.owned().count(), 3);
    let now = Instant::now();
    e.begin_leaving(now, "test");
    // A peer that could take them, and never does.
    let entries = vips
        .iter()
        .map(|v| VipEntry {
            addr: *v,
            owned: false,
            refused: None,
        })
        .collect();
    e.inbox.observe(now, &peer_hb(1, entries));
    assert!(!e.step(now));
    let timeout = now + e.cfg.timers.handoff_timeout;
    e.inbox.observe(timeout, &peer_hb(2, Vec::new()));
    assert!(e.step(timeout), "may exit");
    assert_eq!(e.announcer.owned().count(), 0);
    assert_eq!(host.log().deleted, vec![3]);
}

/// An engine for 192.0.2.1 whose executor puts VIPs on `host`'s `lo`
/// and prepares its interfaces.
fn assigning_engine(host: &FakeHost) -> Engine {
    let mut e = engine(&yaml("{ address: 192.0.2.1 }"), host.clone());
    e.exec = Executor::new(
        Box::new(host.clone()),
        true,
        crate::sockets::Sockets::new(mpsc::channel(1).0),
        e.metrics.clone(),
    );
    e
}

/// A new MAC on the same device releases and re-claims its VIPs but does
/// not prepare the device again: that would save our own sysctl values as
/// the ones to restore. A recreated device is prepared anew.
#[test]
fn only_a_new_device_is_prepared_again() {
    let host = FakeHost::default();
    let mut e = assigning_engine(&host);
    let prepares = || host.log().prepared;
    let vip: IpAddr = "192.0.2.1".parse().unwrap();
    let only = |i: IfaceInfo| BTreeMap::from([(i.name.clone(), i)]);
    // The socket cannot open on a device that does not exist; the
    // sysctls come first.
    let _ = e.exec.ensure_sockets(&eth9(99, 9), false);
    assert_eq!(prepares(), 1);
    own(&mut e, &[vip]);
    assert!(e.announcer.is_owned(vip));
    let now = Instant::now();
    e.on_ifaces(now, only(eth9(99, 2)));
    assert_eq!(
        e.intents,
        vec![Intent::Release(vip)],
        "claimed again with the new MAC"
    );
    e.execute();
    let _ = e.exec.ensure_sockets(&eth9(99, 2), false);
    assert_eq!(prepares(), 1, "the same device: not again");

    e.on_ifaces(now, only(eth9(100, 2)));
    let _ = e.exec.ensure_sockets(&eth9(100, 2), false);
    assert_eq!(prepares(), 2, "a new device");
}

/// A source's VIP this node may not announce (not selected here, no ready
/// local endpoint) is decided about but never offered or claimed here; the
/// same VIP made eligible is.
#[test]
fn a_source_vip_not_eligible_here_is_neither_offered_nor_claimed() {
    use crate::source::DesiredVip;
    let mut e = engine(&yaml("{ address: 192.0.2.1 }"), FakeHost::default());
    let vip: IpAddr = "192.0.2.2".parse().unwrap();
    let pinned = |eligible| DesiredVip {
        vip: crate::config::VipConfig {
            address: vip,
            interface: Some("eth9".into()),
        },
        eligible,
    };
    let now = Instant::now();
    e.on_update(now, crate::source::Update::Vips(vec![pinned(false)]));
    assert_eq!(e.planner.vips(), &["192.0.2.1".parse().unwrap(), vip]);
    assert!(e.my_eligible(now).is_empty());
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert!(said.is_empty(), "{said:?}");
    e.step(now);
    assert!(!e.announcer.is_claimed(vip));
    // The set replaced the config's: 192.0.2.1, never claimed, is gone.
    let rows = e.status().vips;
    assert_eq!((rows.len(), rows[0].state.as_str()), (1, "standby"));
    e.on_update(now, crate::source::Update::Vips(vec![pinned(true)]));
    assert_eq!(
        e.my_eligible(now).into_keys().collect::<Vec<_>>(),
        vec![vip]
    );
    e.flush_told();
    e.step(now);
    // Ours (the claim itself needs a packet socket on a real eth9).
    assert_eq!(e.planner.owners().get(&vip).map(String::as_str), Some("me"));
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert_eq!(said, vec![vip]);
}

/// An interface table that predates our own add (the rtnetlink dump runs
/// on its own task; 100 Services created at once on a real cluster) does
/// not make a VIP we just added "removed by someone else": it is not added
/// twice. Once the add has settled, a VIP missing from `lo` goes back.
#[test]
fn a_table_older_than_our_add_is_no_removal() {
    let host = FakeHost::default();
    let mut e = assigning_engine(&host);
    let vip: IpAddr = "192.0.2.1".parse().unwrap();
    let now = Instant::now();
    own(&mut e, &[vip]);
    assert!(e.announcer.is_owned(vip));
    let adds = || host.log().added.iter().filter(|v| **v == vip).count();
    let before = adds();
    assert!(before >= 1, "owned means added");
    let lo = IfaceInfo {
        name: "lo".into(),
        ..eth9(1, 0)
    };
    e.exec.reassign_lost(now, &e.announcer, Some(&lo));
    assert_eq!(adds(), before, "a table from before the add");
    // Looked at again once the add has settled (the engine wakes for it),
    // against the newest table: still missing, so really removed.
    let again = e.exec.recheck_at().expect("a recheck is due");
    assert!(again > now && again <= Instant::now() + Duration::from_secs(1));
    e.exec
        .reassign_lost(again + Duration::from_millis(1), &e.announcer, Some(&lo));
    assert_eq!(adds(), before + 1, "settled and missing: put back");
    assert_eq!(e.exec.recheck_at(), None);
}
