use super::*;
use crate::announcer::{announce_frames, Link};
use crate::config::Timers;

/// A config reader for tests whose config names no files.
fn no_files(_: &std::path::Path) -> std::io::Result<Vec<u8>> {
    Err(std::io::ErrorKind::NotFound.into())
}

/// An engine started from `yaml`, with no key or status files.
async fn started(yaml: &str) -> (Engine, FrameRx) {
    let cfg = Config::from_yaml(yaml, &no_files).unwrap();
    Engine::start(cfg, PathBuf::from("/nonexistent"))
        .await
        .unwrap()
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

/// The loop is busy (this test never yields to the runtime) for longer
/// than the dead interval while a peer keeps sending: the peer is
/// alive, because its heartbeats are read before anyone is judged.
#[tokio::test]
async fn a_member_whose_heartbeats_wait_unread_is_not_declared_dead() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
heartbeatInterval: 20ms
deadAfter: 3
vips: [{ address: 192.0.2.1 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    let secret = e.cfg.secret.clone();
    let to = e.udp.local_addr().unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ours = e.challenges.clone();
    let send = |seq| {
        // The peer heard our latest heartbeat: it echoes its challenge.
        let hb = Heartbeat {
            node: "peer".into(),
            nonce: 1,
            seq,
            challenge: seq,
            echoes: vec![ours.lock().unwrap().issue(Instant::now())],
            leaving: false,
            macs: Vec::new(),
            vips: Vec::new(),
        };
        peer.send_to(&wire::encode(&hb, &secret).unwrap(), to)
            .unwrap();
    };
    let mut buf = vec![0u8; 65_536];
    let pause = Duration::from_millis(25);
    send(1);
    e.read_queued_heartbeats(&mut buf);
    assert!(!e.step(Instant::now()), "not leaving");
    assert!(e.membership.live().contains_key("peer"));
    for seq in 2..6 {
        std::thread::sleep(pause);
        send(seq);
    }
    e.read_queued_heartbeats(&mut buf);
    e.step(Instant::now());
    assert!(
        e.membership.live().contains_key("peer"),
        "alive: its heartbeats were queued"
    );
    assert_eq!(e.metrics.heartbeats_received.get(), 5);
    std::thread::sleep(pause * 4);
    e.read_queued_heartbeats(&mut buf);
    e.step(Instant::now());
    assert!(e.membership.live().is_empty(), "silent: dead");
}

/// A heartbeat that echoes no recent challenge of ours (a recording,
/// or a peer that has not heard us yet) makes nobody a member, however
/// new its sequence number; its challenge is echoed at once, and the
/// sender's answer that echoes ours does make it one. Nothing it said
/// (here: seq 2^64-1) keeps the sender's later heartbeats out.
#[tokio::test]
async fn only_a_heartbeat_that_echoes_our_challenge_is_a_sign_of_life() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
vips: [{ address: 192.0.2.1 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    let secret = e.cfg.secret.clone();
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let hb = |seq, challenge, echoes| Heartbeat {
        node: "peer".into(),
        nonce: 1,
        seq,
        challenge,
        echoes,
        leaving: false,
        macs: Vec::new(),
        vips: Vec::new(),
    };
    let deliver = |e: &mut Engine, h: Heartbeat| {
        let bytes = wire::encode(&h, &secret).unwrap();
        e.on_datagram(Instant::now(), &bytes, from);
    };
    // A challenge of an earlier life of ours, say: not recent.
    deliver(&mut e, hb(u64::MAX, 41, vec![12345]));
    assert!(e.membership.live().is_empty(), "a replay is no member");
    assert_eq!(e.metrics.heartbeat_replays.get(), 1);
    assert!(e.heartbeat_now, "its sender is answered at once");
    assert_eq!(e.outgoing(Instant::now()).hb.echoes, vec![41]);
    // Heard for long without an echo of ours: said, once.
    let t0 = Instant::now();
    let stale = wire::encode(&hb(2, 43, vec![]), &secret).unwrap();
    for ms in (0..=1200).step_by(100) {
        e.on_datagram(t0 + Duration::from_millis(ms), &stale, from);
    }
    assert!(e.unanswered.contains_key("peer"));
    assert_eq!(e.metrics.log_suppressed.get(), 3, "logged once, then held");
    let c = e.challenges.lock().unwrap().issue(Instant::now());
    deliver(&mut e, hb(1, 42, vec![c]));
    assert!(e.membership.live().contains_key("peer"));
    assert!(e.unanswered.is_empty());
    assert_eq!(e.metrics.heartbeats_received.get(), 1);
    // Its latest fresh and latest other challenge.
    assert_eq!(e.outgoing(Instant::now()).hb.echoes, vec![42, 43]);
}

/// Two nodes given the same new VIP by one SIGHUP each: neither claims
/// it before the other's heartbeat can say it may own it too.
#[tokio::test]
async fn a_vip_a_reload_adds_is_not_claimed_before_peers_can_speak() {
    let yaml = |vips: &str| {
        format!(
            "node: {{ name: me }}\nlisten: \"127.0.0.1:0\"\nsecret: \"0123456789abcdef0123\"\n\
             metricsAddr: off\nassign: false\nvips: [{vips}]\n"
        )
    };
    let (mut e, _frames) = started(&yaml("{ address: 192.0.2.1 }")).await;
    let interval = e.cfg.timers.heartbeat_interval;
    let added: IpAddr = "192.0.2.2".parse().unwrap();
    let both = yaml("{ address: 192.0.2.1 }, { address: 192.0.2.2 }");
    let new = Config::from_yaml(&both, &no_files).unwrap();
    let now = Instant::now();
    // Alone: nobody to wait for.
    e.apply_config(now, &new);
    assert!(e.heartbeat_now, "peers hear of it at once");
    e.reconcile(now);
    assert!(e.claim_after.is_empty(), "alone: free to claim at once");

    // With a live peer: held until the peer echoes a challenge sent
    // with the new VIP, or for two intervals.
    let (mut e, _frames) = Engine::start(
        Config::from_yaml(&yaml("{ address: 192.0.2.1 }"), &no_files).unwrap(),
        PathBuf::from("/nonexistent"),
    )
    .await
    .unwrap();
    let peer = |echoes| Heartbeat {
        node: "peer".into(),
        nonce: 1,
        seq: 1,
        challenge: 7,
        echoes,
        leaving: false,
        macs: Vec::new(),
        vips: Vec::new(),
    };
    let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let deliver = |e: &mut Engine, h: Heartbeat| {
        let bytes = wire::encode(&h, &e.cfg.secret).unwrap();
        e.on_datagram(Instant::now(), &bytes, from);
    };
    let before = e.challenges.lock().unwrap().issue(Instant::now());
    deliver(&mut e, peer(vec![before]));
    assert!(e.membership.live().contains_key("peer"));
    let now = Instant::now();
    e.apply_config(now, &new);
    assert_eq!(e.claim_after.get(&added), Some(&(now + interval * 2)));
    e.reconcile(now);
    assert!(
        e.claim_after.contains_key(&added),
        "held: the peer may have it too"
    );
    deliver(&mut e, peer(vec![before]));
    e.reconcile(Instant::now());
    assert!(
        e.claim_after.contains_key(&added),
        "an answer to what it knew before"
    );
    let after = e.challenges.lock().unwrap().issue(Instant::now());
    deliver(&mut e, peer(vec![after]));
    e.reconcile(Instant::now());
    assert!(
        e.claim_after.is_empty(),
        "the peer heard of it: free to claim"
    );
    // And without an answer, two intervals at most.
    e.apply_config(
        now,
        &Config::from_yaml(
            &yaml("{ address: 192.0.2.1 }, { address: 192.0.2.2 }, { address: 192.0.2.3 }"),
            &no_files,
        )
        .unwrap(),
    );
    e.reconcile(now + interval);
    assert!(!e.claim_after.is_empty(), "still held");
    e.reconcile(now + interval * 2);
    assert!(e.claim_after.is_empty(), "free to claim");
}

/// Status tells the truth: a standby row shows no MAC or last GARP
/// from when it was ours, and a VIP its owner refuses (a foreign
/// device answered that owner's probe) has no owner in a peer's view,
/// and shows the conflict.
#[tokio::test]
async fn status_shows_no_stale_announcement_and_a_peers_conflict() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
vips: [{ address: 192.0.2.1 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    let vip: IpAddr = "192.0.2.1".parse().unwrap();
    let link = Link {
        iface: "eth9".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
    };
    let now = Instant::now();
    let acts = e.announcer.claim(now, vip, link, Some(now));
    e.execute(acts);
    let row = |e: &Engine| e.status().vips[0].clone();
    let owned = row(&e);
    assert_eq!(owned.state, "announcing");
    assert_eq!(owned.mac.as_deref(), Some("02:00:00:00:00:09"));
    assert!(owned.last_garp_unix_ms.is_some());
    let acts = e.announcer.release(vip);
    e.execute(acts);
    let standby = row(&e);
    assert_eq!(standby.state, "standby");
    assert_eq!((standby.mac, standby.last_garp_unix_ms), (None, None));

    let foreign = MacAddr([2, 0, 0, 0, 0, 0xee]);
    e.membership.observe(
        now,
        &Heartbeat {
            node: "peer".into(),
            nonce: 1,
            seq: 1,
            challenge: 0,
            echoes: Vec::new(),
            leaving: false,
            macs: Vec::new(),
            vips: vec![VipEntry {
                addr: vip,
                owned: false,
                refused: Some(foreign),
            }],
        },
    );
    e.desired.insert(vip, "peer".into());
    let r = row(&e);
    assert_eq!(r.owner, None, "{r:?}");
    let note = r.conflict.unwrap_or_default();
    assert!(
        note.contains("peer") && note.contains(&foreign.to_string()),
        "{note}"
    );
    assert!(e.status().render(0).contains("conflict: "));
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

/// While a VIP backs off, our heartbeat leaves it out of what we are
/// eligible for, so every member's hash picks the next node for it.
#[tokio::test]
async fn a_vip_the_host_refused_is_left_to_the_next_node() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
vips: [{ address: 192.0.2.1 }, { address: 192.0.2.2 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    let retry = e.cfg.timers.conflict_retry;
    let (good, bad): (IpAddr, IpAddr) =
        ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    let eth = IfaceInfo {
        name: "eth9".into(),
        index: 99,
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
        running: true,
        nets: vec!["192.0.2.10/24".parse().unwrap()],
    };
    e.ifaces = BTreeMap::from([(eth.name.clone(), eth)]);
    e.host = Box::new(FakeHost::refusing(bad));
    let now = Instant::now();
    let eligible = |e: &Engine, t| e.my_eligible(t).into_keys().collect::<Vec<_>>();
    assert_eq!(eligible(&e, now), vec![good, bad]);
    let link = Link {
        iface: "eth9".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
    };
    let mut acts = e.announcer.claim(now, good, link.clone(), Some(now));
    acts.extend(e.announcer.claim(now, bad, link, Some(now)));
    e.heartbeat_now = false;
    e.execute(acts);
    assert!(e.heartbeat_now, "peers are told at once");
    assert_eq!(eligible(&e, now), vec![good]);
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert_eq!(said, vec![good]);
    // Eligible again once the backoff is over (`execute` read the
    // clock a little after `now`).
    e.reconcile(now);
    assert_eq!(e.desired.get(&bad), None, "nobody else is live here");
    let later = now + retry + Duration::from_secs(1);
    assert_eq!(eligible(&e, later), vec![good, bad]);
}

/// A VIP a reload drops is handed over make-before-break, like one we
/// leave: held until the node that takes it announces it (then one
/// interval more), and released at once only when no peer has it.
#[tokio::test]
async fn a_vip_dropped_by_a_reload_is_held_until_its_successor_announces_it() {
    let yaml = |vips: &str| {
        format!(
            "node: {{ name: me }}\nlisten: \"127.0.0.1:0\"\nsecret: \"0123456789abcdef0123\"\n\
             metricsAddr: off\nassign: false\nvips: [{vips}]\n"
        )
    };
    let all = "{ address: 192.0.2.1 }, { address: 192.0.2.2 }, { address: 192.0.2.3 }";
    let (mut e, _frames) = started(&yaml(all)).await;
    let interval = e.cfg.timers.heartbeat_interval;
    let [kept, handed, alone]: [IpAddr; 3] =
        ["192.0.2.1", "192.0.2.2", "192.0.2.3"].map(|v| v.parse().unwrap());
    let mac = MacAddr([2, 0, 0, 0, 0, 9]);
    let eth = IfaceInfo {
        name: "eth9".into(),
        index: 99,
        mac,
        running: true,
        nets: vec!["192.0.2.10/24".parse().unwrap()],
    };
    e.ifaces = BTreeMap::from([(eth.name.clone(), eth)]);
    let link = Link {
        iface: "eth9".into(),
        mac,
    };
    let now = Instant::now();
    let mut acts = Vec::new();
    for v in [kept, handed, alone] {
        acts.extend(e.announcer.claim(now, v, link.clone(), Some(now)));
    }
    e.execute(acts);
    // A peer that may take `handed` (not `alone`), and does not yet.
    let peer = |seq, owned| Heartbeat {
        node: "peer".into(),
        nonce: 1,
        seq,
        challenge: 0,
        echoes: Vec::new(),
        leaving: false,
        macs: Vec::new(),
        vips: vec![VipEntry {
            addr: handed,
            owned,
            refused: None,
        }],
    };
    e.membership.observe(now, &peer(1, false));
    let new = Config::from_yaml(&yaml("{ address: 192.0.2.1 }"), &no_files).unwrap();
    e.apply_config(now, &new);
    e.reconcile(now);
    e.retire();
    assert!(e.announcer.is_owned(handed), "held for its successor");
    assert!(!e.announcer.is_claimed(alone), "nobody to hand it to");
    assert!(!e.vips.contains(&alone) && e.vips.contains(&handed));
    // Not offered to peers as ours: they would wait for us.
    let said: Vec<IpAddr> = e.outgoing(now).hb.vips.iter().map(|v| v.addr).collect();
    assert_eq!(said, vec![kept]);
    // The successor announces it: one interval of overlap, then gone.
    e.membership.observe(now, &peer(2, true));
    e.reconcile(now);
    assert!(e.announcer.is_owned(handed), "overlap");
    let later = now + interval;
    e.membership.observe(later, &peer(3, true));
    e.reconcile(later);
    e.retire();
    assert!(!e.announcer.is_claimed(handed));
    assert_eq!(e.vips, vec![kept]);
    assert!(e.announcer.is_owned(kept));
}

/// A handoff timeout releases every VIP with one host call.
#[tokio::test]
async fn releasing_everything_takes_one_host_call() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
vips: [{ address: 192.0.2.1 }, { address: 192.0.2.2 }, { address: 192.0.2.3 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    let host = FakeHost::default();
    e.host = Box::new(host.clone());
    let link = Link {
        iface: "eth9".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
    };
    let now = Instant::now();
    let mut acts = Vec::new();
    for v in e.vips.clone() {
        acts.extend(e.announcer.claim(now, v, link.clone(), Some(now)));
    }
    e.execute(acts);
    assert_eq!(e.announcer.owned().count(), 3);
    e.release_all();
    assert_eq!(e.announcer.owned().count(), 0);
    assert_eq!(host.log().deleted, vec![3]);
}

/// A new MAC on the same device releases and re-claims its VIPs but
/// does not prepare the device again: that would save our own sysctl
/// values as the ones to restore. A recreated device is prepared anew.
#[tokio::test]
async fn only_a_new_device_is_prepared_again() {
    let yaml = r#"
node: { name: me }
listen: "127.0.0.1:0"
secret: "0123456789abcdef0123"
metricsAddr: off
assign: false
vips: [{ address: 192.0.2.1 }]
"#;
    let (mut e, _frames) = started(yaml).await;
    e.cfg.assign = true;
    let host = FakeHost::default();
    e.host = Box::new(host.clone());
    let prepares = || host.log().prepared;
    let vip: IpAddr = "192.0.2.1".parse().unwrap();
    let eth = |index, last| IfaceInfo {
        name: "eth9".into(),
        index,
        mac: MacAddr([2, 0, 0, 0, 0, last]),
        running: true,
        nets: vec!["192.0.2.10/24".parse().unwrap()],
    };
    let only = |i: IfaceInfo| BTreeMap::from([(i.name.clone(), i)]);
    e.ifaces = only(eth(99, 1));
    // The socket cannot open on a device that does not exist; the
    // sysctls come first.
    let _ = e.ensure_sockets(&eth(99, 1), false);
    assert_eq!(prepares(), 1);
    let now = Instant::now();
    let link = Link {
        iface: "eth9".into(),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
    };
    let acts = e.announcer.claim(now, vip, link, Some(now));
    e.execute(acts);
    assert!(e.announcer.is_owned(vip));

    e.on_ifaces(now, only(eth(99, 2)));
    assert!(
        !e.announcer.is_claimed(vip),
        "claimed again with the new MAC"
    );
    let _ = e.ensure_sockets(&eth(99, 2), false);
    assert_eq!(prepares(), 1, "the same device: not again");

    e.on_ifaces(now, only(eth(100, 2)));
    let _ = e.ensure_sockets(&eth(100, 2), false);
    assert_eq!(prepares(), 2, "a new device");
}
