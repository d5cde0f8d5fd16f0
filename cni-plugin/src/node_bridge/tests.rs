//! The whole command against the fake host: success, refusal, rollback
//! after a silent gateway, and undo after a failure at every step.

use std::path::PathBuf;

use super::plan::tests::{host, nm_host, MAC};
use super::*;
use crate::netlink::fake_host::FakeHost;

/// A world whose managers and gateway answers are scripted.
struct Script {
    found: Vec<Finding>,
    /// Answers of the gateway, by interface name.
    answers_on: Vec<&'static str>,
    asked: Vec<String>,
    wireless: bool,
}

impl World for Script {
    fn managers(&mut self, _: &Path, _: &str, _: u32) -> Vec<Finding> {
        self.found.clone()
    }
    fn wireless(&mut self, _: &str) -> bool {
        self.wireless
    }
    fn gateway(
        &mut self,
        ifname: &str,
        gw: IpAddr,
        tries: u32,
    ) -> Result<Option<(MacAddr, Duration)>> {
        self.asked.push(format!("{ifname} {gw} {tries}"));
        Ok(self
            .answers_on
            .contains(&ifname)
            .then_some((MacAddr([2, 0, 0, 0, 0, 1]), Duration::from_millis(1))))
    }
}

fn world(answers_on: &[&'static str]) -> Script {
    Script {
        found: vec![],
        answers_on: answers_on.to_vec(),
        asked: vec![],
        wireless: false,
    }
}

fn fake() -> FakeHost {
    fake_of(host())
}

fn fake_of(obs: Observed) -> FakeHost {
    FakeHost {
        links: obs.links,
        addrs: obs.addrs.into_iter().map(|a| (2, a)).collect(),
        routes: obs.routes,
        ..FakeHost::default()
    }
}

fn opts() -> Opts {
    Opts {
        uplink: "eth0".into(),
        bridge: "br0".into(),
        gateway: None,
        force: false,
        dry_run: false,
        root: PathBuf::from("/nonexistent"),
    }
}

#[test]
fn a_migration_moves_addresses_routes_and_mac_and_a_rerun_is_a_no_op() {
    let mut nl = fake();
    let mut w = world(&["eth0", "br0"]);
    let out = migrate(&mut nl, &opts(), &mut w).expect("migrates");
    assert!(out.contains("moved eth0 into br0"), "{out}");
    assert!(out.contains("runtime change"), "{out}");
    assert!(
        out.contains("note: 192.168.2.11/24 has a lease (86000 s left)"),
        "{out}"
    );
    assert!(out.contains("docs/bridge.md"), "{out}");
    let br = nl
        .links
        .iter()
        .find(|l| l.name == "br0")
        .expect("br0")
        .clone();
    assert_eq!(br.mac, Some(MAC));
    assert_eq!(nl.links[1].master, Some(br.index));
    let on_br: Vec<String> = nl
        .addrs
        .iter()
        .filter(|(i, _)| *i == br.index)
        .map(|(_, a)| a.net.to_string())
        .collect();
    assert_eq!(
        on_br,
        ["192.168.2.11/24", "192.168.2.50/24", "fd00:2::11/64"]
    );
    assert!(nl
        .routes
        .iter()
        .any(|r| r.oif == br.index && r.dst.prefix_len() == 0 && r.metric == Some(100)));
    assert_eq!(w.asked, ["eth0 192.168.2.1 1", "br0 192.168.2.1 3"]);

    let log = nl.log.len();
    let again = migrate(&mut nl, &opts(), &mut w).expect("no-op");
    assert!(again.contains("already a port of br0"), "{again}");
    assert_eq!(nl.log.len(), log, "a rerun changes nothing");
}

#[test]
fn a_silent_gateway_rolls_back_to_the_exact_original_state() {
    let mut nl = fake();
    let before = nl.state();
    let e = migrate(&mut nl, &opts(), &mut world(&[])).expect_err("rolls back");
    let msg = e.to_string();
    assert!(matches!(e, Error::BridgeMigration { .. }), "{e:?}");
    assert!(msg.contains("did not answer ARP through br0"), "{msg}");
    assert!(msg.contains("before the change either"), "{msg}");
    assert!(msg.contains("rolled back: eth0 has its addresses"), "{msg}");
    let mut after = nl.state();
    // The fake appends what comes back; the kernel's order is by
    // address, which the real test compares.
    after.addrs.sort_by_key(|(_, a)| a.net);
    after.routes.sort_by_key(|r| (r.dst, r.metric));
    let mut want = before.clone();
    want.addrs.sort_by_key(|(_, a)| a.net);
    want.routes.sort_by_key(|r| (r.dst, r.metric));
    assert_eq!(after, want);

    // A gateway that answered on the NIC but not through the bridge.
    let mut nl = fake();
    let e = migrate(&mut nl, &opts(), &mut world(&["eth0"])).expect_err("rolls back");
    assert!(
        e.to_string().contains("although it answered through eth0"),
        "{e}"
    );
}

#[test]
fn a_failure_at_any_step_undoes_the_steps_before_it() {
    let steps = fake().log.len();
    assert_eq!(steps, 0);
    let total = {
        let mut nl = fake();
        migrate(&mut nl, &opts(), &mut world(&["eth0", "br0"])).expect("migrates");
        nl.log.len()
    };
    for k in 0..total {
        let mut nl = fake();
        nl.fail_on = Some(String::new());
        nl.fail_after = k;
        let before = nl.state();
        let e = migrate(&mut nl, &opts(), &mut world(&["eth0", "br0"])).expect_err("fails");
        let msg = e.to_string();
        assert!(msg.contains("failed: at `ip "), "step {k}: {msg}");
        if k == 0 {
            assert!(msg.ends_with("nothing was changed"), "{msg}");
        } else {
            assert!(msg.contains("rolled back: eth0 has"), "step {k}: {msg}");
        }
        let mut after = nl.state();
        after.addrs.sort_by_key(|(_, a)| a.net);
        after.routes.sort_by_key(|r| (r.dst, r.metric));
        let mut want = before;
        want.addrs.sort_by_key(|(_, a)| a.net);
        want.routes.sort_by_key(|r| (r.dst, r.metric));
        assert_eq!(after, want, "step {k}: {msg}");
    }
}

#[test]
fn an_owning_manager_is_refused_with_its_snippet_unless_forced() {
    let cases = [
        (Manager::Netplan, "macaddress: \"02:aa:bb:cc:dd:02\""),
        (
            Manager::NetworkManager,
            "ethernet.cloned-mac-address 02:aa:bb:cc:dd:02",
        ),
        (Manager::Networkd, "MACAddress=02:aa:bb:cc:dd:02"),
        (Manager::Ifupdown, "hwaddress ether 02:aa:bb:cc:dd:02"),
        (
            Manager::DhcpClient {
                program: "dhclient".into(),
                pid: 42,
            },
            "dhclient br0",
        ),
    ];
    for (m, want) in cases {
        let mut nl = fake();
        let before = nl.state();
        let mut w = world(&["eth0", "br0"]);
        w.found = vec![Finding {
            manager: m.clone(),
            evidence: "seeded".into(),
        }];
        let e = migrate(&mut nl, &opts(), &mut w).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains(&format!("eth0 is managed by {m}")), "{msg}");
        assert!(msg.contains(want), "{m}: {msg}");
        assert!(msg.contains("--force"), "{msg}");
        assert!(nl.log.is_empty(), "{m}: {:?}", nl.log);
        assert_eq!(nl.state(), before);
        assert!(w.asked.is_empty(), "no probe before refusing");

        let mut forced = opts();
        forced.force = true;
        let out = migrate(&mut nl, &forced, &mut w).expect("forced");
        assert!(out.contains(&format!("warning: {m} manages eth0")), "{out}");
    }
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let mut nl = fake();
    let mut o = opts();
    o.dry_run = true;
    let mut w = world(&[]);
    w.found = vec![Finding {
        manager: Manager::Networkd,
        evidence: "seeded".into(),
    }];
    let out = migrate(&mut nl, &o, &mut w).expect("plans");
    assert!(out.contains("ip link set eth0 master br0"), "{out}");
    assert!(
        out.contains("without --force this would be refused"),
        "{out}"
    );
    assert!(nl.log.is_empty());
    assert!(w.asked.is_empty());
}

/// A world whose gateway check is cut short by a signal to this thread,
/// as an SSH session dying sends SIGHUP.
struct Hangup(nix::sys::signal::Signal);

impl World for Hangup {
    fn managers(&mut self, _: &Path, _: &str, _: u32) -> Vec<Finding> {
        vec![]
    }
    fn wireless(&mut self, _: &str) -> bool {
        false
    }
    fn gateway(&mut self, ifname: &str, _: IpAddr, _: u32) -> Result<Option<(MacAddr, Duration)>> {
        if ifname == "br0" {
            // Held back by migrate; without that the default action ends
            // the test binary.
            nix::sys::signal::raise(self.0).expect("raise");
        }
        Ok(Some((
            MacAddr([2, 0, 0, 0, 0, 1]),
            Duration::from_millis(1),
        )))
    }
}

#[test]
fn a_signal_during_the_gateway_check_rolls_back_even_if_the_gateway_answered() {
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        let mut nl = fake();
        let mut want = nl.state();
        let e = migrate(&mut nl, &opts(), &mut Hangup(sig)).expect_err("rolls back");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("interrupted by {sig}")),
            "{sig}: {msg}"
        );
        assert!(msg.contains("rolled back: eth0 has"), "{msg}");
        let mut after = nl.state();
        after.addrs.sort_by_key(|(_, a)| a.net);
        after.routes.sort_by_key(|r| (r.dst, r.metric));
        want.addrs.sort_by_key(|(_, a)| a.net);
        want.routes.sort_by_key(|r| (r.dst, r.metric));
        assert_eq!(after, want, "{sig}");
        // The signal was consumed and the mask is back as it was.
        let mask = nix::sys::signal::SigSet::thread_get_mask().expect("mask");
        assert!(!mask.contains(sig), "{sig} still blocked");
    }
}

#[test]
fn network_managers_prefix_routes_move_and_come_back() {
    let mut nl = fake_of(nm_host());
    let want = nl.state();
    migrate(&mut nl, &opts(), &mut world(&["eth0", "br0"])).expect("migrates");
    let br = nl
        .links
        .iter()
        .find(|l| l.name == "br0")
        .expect("br0")
        .index;
    for dst in ["192.168.2.0/24", "fd00:2::/64"] {
        assert!(
            nl.routes
                .iter()
                .any(|r| r.oif == br && r.dst.to_string() == dst),
            "{dst} on br0: {:?}",
            nl.routes
        );
    }

    let mut nl = fake_of(nm_host());
    migrate(&mut nl, &opts(), &mut world(&[])).expect_err("rolls back");
    let mut after = nl.state();
    after.addrs.sort_by_key(|(_, a)| a.net);
    after.routes.sort_by_key(|r| (r.dst, r.metric));
    let mut want = want;
    want.addrs.sort_by_key(|(_, a)| a.net);
    want.routes.sort_by_key(|r| (r.dst, r.metric));
    assert_eq!(after, want);
}

#[test]
fn the_rollback_report_compares_the_uplink_and_bridge_only_and_their_macs() {
    let before = observe(&mut fake(), "eth0").expect("observes");
    // A pod's veth made during the check is not a difference.
    let mut nl = fake();
    nl.add_link("veth1234", Some("veth"), [2, 9, 9, 9, 9, 9]);
    let now = observe(&mut nl, "eth0").expect("observes");
    assert_eq!(same(&before, &now, "eth0", "br0"), Ok(()));
    // The uplink's MAC is.
    let mut nl = fake();
    nl.links[1].mac = Some([2, 1, 1, 1, 1, 1]);
    let now = observe(&mut nl, "eth0").expect("observes");
    let diff = same(&before, &now, "eth0", "br0").expect_err("MAC differs");
    assert!(diff.contains("MAC 02:01:01:01:01:01"), "{diff}");
    // And a bridge left behind.
    let mut nl = fake();
    nl.add_link("br0", Some("bridge"), MAC);
    let now = observe(&mut nl, "eth0").expect("observes");
    let diff = same(&before, &now, "eth0", "br0").expect_err("br0 left");
    assert!(diff.contains("br0 was no br0, is br0 MAC"), "{diff}");
}

#[test]
fn an_uplink_that_cannot_be_a_port_is_refused_before_any_change() {
    let mut nl = fake();
    nl.uppers = vec![(2, "pihole-shim".into(), "macvlan".into())];
    let e = migrate(&mut nl, &opts(), &mut world(&["eth0", "br0"])).expect_err("refused");
    assert!(
        e.to_string()
            .contains("eth0 carries pihole-shim (a macvlan)"),
        "{e}"
    );
    assert!(nl.log.is_empty(), "{:?}", nl.log);

    let mut nl = fake();
    let mut w = world(&["eth0", "br0"]);
    w.wireless = true;
    let e = migrate(&mut nl, &opts(), &mut w).expect_err("refused");
    assert!(e.to_string().contains("eth0 is a Wi-Fi NIC"), "{e}");
    assert!(nl.log.is_empty(), "{:?}", nl.log);
    assert!(w.asked.is_empty(), "{:?}", w.asked);
}

/// The rollback after a silent gateway with the undo step that logs as
/// `op` refused: the host after it, whether the error says incomplete,
/// and the `ip` commands it leaves to do.
fn undo_refused(op: &str) -> (FakeHost, bool, Vec<String>) {
    let mut nl = fake();
    nl.fail_on = Some(op.into());
    let e = migrate(&mut nl, &opts(), &mut world(&["eth0"])).expect_err("rolls back");
    let Error::BridgeMigration { incomplete, .. } = e else {
        panic!("{e:?}");
    };
    assert_eq!(crate::cli::exit_code(&e), if incomplete { 3 } else { 1 });
    let todo = e
        .to_string()
        .lines()
        .filter_map(|l| l.strip_prefix("  ip "))
        .map(str::to_string)
        .collect();
    (nl, incomplete, todo)
}

/// An uplink-side step refused is left to the operator (exit 3) as the
/// command that does it; a bridge-side step is not, deleting the bridge
/// did it; and an IPv4 primary refused holds back the rest of its subnet.
#[test]
fn a_failed_undo_step_leaves_exactly_what_is_left_to_do() {
    let sorted = |mut h: FakeHost| {
        h.addrs.sort_by_key(|(_, a)| a.net);
        h.routes.sort_by_key(|r| (r.dst, r.metric));
        h
    };
    // eth0 is index 2 and br0 is made as 3: `del_addr 3` happens only in
    // the undo, `add_addr 2` likewise.
    let (nl, incomplete, todo) = undo_refused("del_addr 3 192.168.2.50/24");
    assert!(!incomplete && todo.is_empty(), "{todo:?}");
    assert_eq!(sorted(nl.state()), sorted(fake().state()));

    let (_, incomplete, todo) = undo_refused("add_addr 2 192.168.2.50/24");
    assert!(incomplete);
    assert_eq!(todo.len(), 1, "{todo:?}");
    assert!(
        todo[0].starts_with("addr add 192.168.2.50/24 dev eth0"),
        "{todo:?}"
    );

    // The primary refused: the secondary of its subnet is held back, or
    // it would be the primary now; IPv6 is not held.
    let (nl, incomplete, todo) = undo_refused("add_addr 2 192.168.2.11/24");
    assert!(incomplete);
    assert!(
        todo[0].starts_with("addr add 192.168.2.11/24 dev eth0"),
        "{todo:?}"
    );
    assert!(
        todo[1].starts_with("addr add 192.168.2.50/24 dev eth0"),
        "{todo:?}"
    );
    assert!(
        todo[1].contains("# not run: it would become 192.168.2.0/24's primary"),
        "{todo:?}"
    );
    assert!(
        !todo.iter().any(|t| t.contains("fd00:2::11/64")),
        "{todo:?}"
    );
    let on_eth0 = |net: &str| {
        nl.addrs
            .iter()
            .any(|(i, a)| *i == 2 && a.net.to_string() == net)
    };
    assert!(on_eth0("fd00:2::11/64") && !on_eth0("192.168.2.50/24"));
}
