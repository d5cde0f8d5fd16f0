//! Hostile LAN (issue 12): the real `flatlan-speaker` in the netns home
//! LAN, under attack. Each case runs speakers, attacks them, and asserts
//! throughout that
//!
//! - exactly one MAC answers ARP for each VIP (`arping` from the LAN
//!   client, every VIP at once);
//! - the speakers' logs stay bounded ([`LOG_LIMIT`]);
//! - a killed owner's VIP is announced by another node within
//!   [`FAILOVER_BUDGET`] (measured on the client's wire: from the SIGKILL
//!   to the first GARP from the new owner).
//!
//! The cases are grouped by what they attack: `membership` (clock skew,
//! odd and replayed heartbeats, simultaneous reloads, what status
//! tells) and `floods` (packet floods that must not become log floods,
//! connection floods that must not delay a failover). Needs root, and
//! `cargo build --workspace --bins` first.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod floods;
mod membership;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_testkit::speaker_fleet::{arping, SpeakerFleet, SpeakerStatus};
use netns_testkit::{Lab, LabConfig};

/// The most a speaker may log in one case: a few dozen lines per
/// membership change. A per-packet warning under attack overruns it fast.
pub const LOG_LIMIT: usize = 64 * 1024;
/// The failover budget.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(1);
/// How long a started speaker may take to say it is ready.
pub const START: Duration = Duration::from_secs(20);
/// How long the fleet may take to settle after a change.
pub const SETTLE: Duration = Duration::from_secs(10);
/// The fleet's heartbeat port and group key (netns-testkit's fleet).
pub const PORT: u16 = 7946;
pub const SECRET: &[u8] = b"flatlan-lab-fleet-secret-0123456789";

pub fn speaker_bin() -> PathBuf {
    flatlan_e2e::bin("flatlan-speaker")
}

/// A home LAN with `nodes` nodes.
pub fn lab(nodes: usize) -> Lab {
    flatlan_e2e::require_root();
    LabConfig::new()
        .nodes(nodes)
        .build()
        .unwrap_or_else(|e| panic!("lab: {e}"))
}

/// The speaker node name of lab node position `i` (the fleet's naming).
pub fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

/// `per_node` VIPs on the lab LAN owned by each of `nodes` nodes when all
/// are up (rendezvous hashing), so that every node has VIPs to lose.
pub fn vips_spread(nodes: usize, per_node: usize) -> Vec<IpAddr> {
    let names: Vec<String> = (0..nodes).map(name).collect();
    let all: Vec<(String, std::collections::BTreeSet<IpAddr>)> = names
        .iter()
        .map(|n| {
            let set = (200..=254u8)
                .map(|l| IpAddr::V4(Ipv4Addr::new(192, 168, 2, l)))
                .collect();
            (n.clone(), set)
        })
        .collect();
    let candidates: Vec<IpAddr> = (200..=254u8)
        .map(|l| IpAddr::V4(Ipv4Addr::new(192, 168, 2, l)))
        .collect();
    let owners = flatlan_speaker::ownership::owners(&all, &candidates);
    let mut out = Vec::new();
    for n in &names {
        let mine: Vec<IpAddr> = owners
            .iter()
            .filter(|(_, o)| *o == n)
            .map(|(v, _)| *v)
            .take(per_node)
            .collect();
        assert_eq!(mine.len(), per_node, "not enough VIPs for {n}");
        out.extend(mine);
    }
    out
}

/// The `br0` MAC of every lab node, by speaker name, lower case.
pub fn node_macs(lab: &Lab) -> BTreeMap<String, String> {
    (0..lab.nodes.len())
        .map(|i| {
            let m = lab.nodes[i].ns.link_mac("br0").unwrap();
            (name(i), m.to_ascii_lowercase())
        })
        .collect()
}

/// Who answers ARP for each VIP: `arping` from the client, all VIPs at
/// once, two broadcast requests each (every responder answers each).
pub fn responders(lab: &Lab, vips: &[IpAddr]) -> BTreeMap<IpAddr, Vec<String>> {
    std::thread::scope(|s| {
        let runs: Vec<_> = vips
            .iter()
            .map(|v| {
                let client = &lab.client;
                s.spawn(move || {
                    let r = arping(client, "eth0", *v, &["-c", "2", "-w", "2"])
                        .unwrap_or_else(|e| panic!("arping {v}: {e}"));
                    (*v, r.macs)
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Asserts that exactly one MAC answers for every VIP; returns them.
pub fn assert_one_responder(
    lab: &Lab,
    fleet: &SpeakerFleet,
    vips: &[IpAddr],
    when: &str,
) -> BTreeMap<IpAddr, String> {
    let got = responders(lab, vips);
    let bad: Vec<_> = got.iter().filter(|(_, m)| m.len() != 1).collect();
    assert!(
        bad.is_empty(),
        "{when}: not exactly one ARP responder: {bad:?}\n{}",
        fleet.log_tails(40)
    );
    got.into_iter().map(|(v, m)| (v, m[0].clone())).collect()
}

/// Asserts every speaker's log is within [`LOG_LIMIT`].
pub fn assert_logs_bounded(fleet: &SpeakerFleet, when: &str) {
    for i in 0..fleet.len() {
        let n = fleet.log(i).len();
        assert!(
            n <= LOG_LIMIT,
            "{when}: {} logged {n} bytes (limit {LOG_LIMIT}):\n{}",
            fleet.name(i),
            fleet.log_tails(20)
        );
    }
}

/// Waits until `ok` holds for the status of every running speaker, with
/// every speaker having written a status; panics with `what` and the logs.
pub fn wait_statuses(
    fleet: &mut SpeakerFleet,
    what: &str,
    ok: impl Fn(&BTreeMap<String, SpeakerStatus>) -> bool,
) {
    wait_statuses_within(fleet, what, SETTLE, ok);
}

/// [`wait_statuses`], failing after `within`.
pub fn wait_statuses_within(
    fleet: &mut SpeakerFleet,
    what: &str,
    within: Duration,
    ok: impl Fn(&BTreeMap<String, SpeakerStatus>) -> bool,
) {
    let deadline = Instant::now() + within;
    let mut last = BTreeMap::new();
    loop {
        let views = fleet.statuses();
        if views.values().all(Result::is_ok) {
            last = views.into_iter().map(|(n, v)| (n, v.unwrap())).collect();
            if ok(&last) {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; last statuses: {last:#?}\n{}",
                fleet.log_tails(40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True if `views` hold exactly `running`, each seeing all the others as
/// members, and every VIP held by exactly one of them.
pub fn settled(
    views: &BTreeMap<String, SpeakerStatus>,
    running: &[String],
    vips: &[IpAddr],
) -> bool {
    let names: Vec<&String> = views.keys().collect();
    if names.len() != running.len() || running.iter().any(|r| !views.contains_key(r)) {
        return false;
    }
    let members_ok = views.iter().all(|(n, s)| {
        let want: std::collections::BTreeSet<String> =
            running.iter().filter(|r| *r != n).cloned().collect();
        s.members == want
    });
    let held_once = vips
        .iter()
        .all(|v| views.values().filter(|s| s.held().contains(v)).count() == 1);
    members_ok && held_once
}

/// Which speaker (by position) holds `vip` now, from the status files.
pub fn holder(fleet: &mut SpeakerFleet, vip: IpAddr) -> usize {
    let views = fleet.statuses();
    let n = views
        .iter()
        .find(|(_, s)| s.as_ref().is_ok_and(|s| s.held().contains(&vip)))
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| panic!("nobody holds {vip}:\n{}", fleet.log_tails(30)));
    (0..fleet.len()).find(|i| name(*i) == n).unwrap()
}

/// SIGKILLs the speaker holding `vip` and measures, on the client's wire,
/// how long until a GARP for it comes from another MAC. Asserts it is
/// within [`FAILOVER_BUDGET`]; returns it and the killed position.
pub fn kill_owner_and_time_failover(
    lab: &Lab,
    fleet: &mut SpeakerFleet,
    vip: IpAddr,
) -> (Duration, usize) {
    let IpAddr::V4(vip4) = vip else {
        panic!("IPv4 VIPs only")
    };
    let owner = holder(fleet, vip);
    let old_mac: flatlan_l2::mac::MacAddr = node_macs(lab)[&name(owner)].parse().unwrap();
    let window = Duration::from_secs(3);
    let cap = flatlan_e2e::garp_from_another_mac(&lab.client, vip4, old_mac, window);
    let killed = Instant::now();
    fleet.crash(owner).unwrap();
    let took = cap
        .join()
        .unwrap()
        .map(|t| t.saturating_duration_since(killed))
        .unwrap_or_else(|| {
            panic!(
                "no GARP for {vip} from another node within {window:?}:\n{}",
                fleet.log_tails(40)
            )
        });
    assert!(
        took <= FAILOVER_BUDGET,
        "failover of {vip} took {took:?}:\n{}",
        fleet.log_tails(40)
    );
    (took, owner)
}
