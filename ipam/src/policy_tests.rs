//! The allocation policy against a store in a temporary directory, with
//! scripted probes: no network, no root.

use std::net::IpAddr;

use super::*;
use crate::range::IpRange;

const HOST: MacAddr = MacAddr([0x3c, 0x2a, 0xf4, 0x11, 0x09, 0x7e]);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pools() -> Vec<Pool> {
    let range: IpRange = "192.168.2.210-192.168.2.219".parse().unwrap();
    vec![Pool::new("192.168.2.0/24".parse().unwrap(), &[range], &[]).unwrap()]
}

fn policy() -> Policy {
    Policy {
        probe: true,
        verified_ttl: 60,
        ahead: 4,
        quarantine_secs: 3600,
    }
}

fn req<'a>(cid: &'a str, required: &'a [IpAddr]) -> Request<'a> {
    Request {
        container_id: cid,
        ifname: "eth0",
        pod: None,
        required,
        mac: None,
        boot_id: "b1",
    }
}

fn store(dir: &tempfile::TempDir) -> Store {
    Store::new(dir.path(), "lan").unwrap()
}

#[test]
fn an_answered_address_is_quarantined_and_the_next_one_taken() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut probed = Vec::new();
    let r = s
        .reserve(&pools(), &req("c1", &[]), &policy(), |ips| {
            probed.push(ips.to_vec());
            Ok(match ips {
                [a] if *a == ip("192.168.2.210") => vec![(*a, HOST)],
                _ => Vec::new(),
            })
        })
        .unwrap();
    assert_eq!(r.ips, [ip("192.168.2.211")]);
    assert_eq!(r.mac, MacAddr::from_ip(ip("192.168.2.211")));
    assert_eq!(probed, [[ip("192.168.2.210")], [ip("192.168.2.211")]]);
    let state = s.peek().unwrap();
    assert_eq!(state.allocations().len(), 1);
    assert_eq!(state.quarantined()[0].ip, ip("192.168.2.210"));
    assert_eq!(state.quarantined()[0].mac, HOST.to_string());
}

#[test]
fn an_answered_requested_address_fails_and_nothing_stays_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let want = [ip("192.168.2.215")];
    let e = s
        .reserve(&pools(), &req("c1", &want), &policy(), |ips| {
            Ok(ips.iter().map(|a| (*a, HOST)).collect())
        })
        .unwrap_err();
    assert!(matches!(e, Error::RequestedInUse { .. }), "{e}");
    assert!(e.to_string().contains(&HOST.to_string()), "{e}");
    assert!(s.peek().unwrap().allocations().is_empty());
}

#[test]
fn a_requested_address_outside_every_pool_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let want = [ip("10.0.0.5")];
    let e = s
        .reserve(&pools(), &req("c1", &want), &policy(), |_| {
            panic!("nothing to probe")
        })
        .unwrap_err();
    assert!(matches!(e, Error::RequestedOutsideRange { .. }), "{e}");
    assert!(!dir.path().join("lan").exists(), "no store was made");
}

#[test]
fn a_failed_probe_releases_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let e = s
        .reserve(&pools(), &req("c1", &[]), &policy(), |_| {
            Err(Error::InvalidNetworkName("probe failed".into()))
        })
        .unwrap_err();
    assert!(e.to_string().contains("probe failed"), "{e}");
    assert!(s.peek().unwrap().allocations().is_empty());
}

#[test]
fn a_lan_that_answers_for_everything_ends_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut calls = 0;
    let e = s
        .reserve(&pools(), &req("c1", &[]), &policy(), |ips| {
            calls += 1;
            Ok(ips.iter().map(|a| (*a, HOST)).collect())
        })
        .unwrap_err();
    assert!(matches!(e, Error::ConflictsInARow(MAX_CONFLICTS)), "{e}");
    assert_eq!(calls, MAX_CONFLICTS + 1);
    assert!(s.peek().unwrap().allocations().is_empty());
}

#[test]
fn the_same_attachment_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let p = Policy {
        probe: false,
        ..policy()
    };
    s.reserve(&pools(), &req("c1", &[]), &p, |_| Ok(Vec::new()))
        .unwrap();
    let e = s
        .reserve(&pools(), &req("c1", &[]), &p, |_| Ok(Vec::new()))
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyAttached { .. }), "{e}");
    assert!(
        e.to_string().contains("DEL it before adding it again"),
        "{e}"
    );
}

#[test]
fn a_dual_stack_mac_follows_ipv4_whatever_the_pool_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let v6: IpRange = "fd00::10-fd00::1f".parse().unwrap();
    let mut p = vec![Pool::new("fd00::/64".parse().unwrap(), &[v6], &[]).unwrap()];
    p.extend(pools());
    let no_probe = Policy {
        probe: false,
        ..policy()
    };
    let r = s
        .reserve(&p, &req("c1", &[]), &no_probe, |_| Ok(Vec::new()))
        .unwrap();
    assert_eq!(r.ips, [ip("fd00::10"), ip("192.168.2.210")]);
    assert_eq!(r.mac, MacAddr::from_ip(ip("192.168.2.210")));
    let state = s.peek().unwrap();
    assert!(state
        .allocations()
        .iter()
        .all(|a| a.mac == r.mac.to_string()));
}

#[test]
fn probe_ahead_verifies_free_addresses_and_quarantines_answered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let n = s
        .probe_ahead(&pools(), &policy(), |ips| {
            assert_eq!(ips.len(), 4);
            Ok(vec![(ips[1], HOST)])
        })
        .unwrap();
    assert_eq!(n, 4);
    let state = s.peek().unwrap();
    assert!(state.verified_at(ip("192.168.2.210")).is_some());
    assert!(state.verified_at(ip("192.168.2.211")).is_none());
    assert_eq!(state.quarantined()[0].ip, ip("192.168.2.211"));
    // The next ADD takes a verified address and needs no probe.
    let r = s
        .reserve(&pools(), &req("c1", &[]), &policy(), |_| {
            panic!("a verified address is not probed again")
        })
        .unwrap();
    assert_eq!(r.ips, [ip("192.168.2.210")]);
}

/// A pod with a MAC of its runtime's choosing takes a candidate while the
/// probe-ahead probes it, answers, and is DELeted before the probe-ahead
/// records its verdicts: the answer was ours, so the address must not be
/// quarantined (it was, once release stopped marking addresses verified).
#[test]
fn probe_ahead_gives_no_verdict_on_an_address_released_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let own = MacAddr([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01]);
    let no_probe = Policy {
        probe: false,
        ..policy()
    };
    // Some ADD started the probe-ahead (it holds the lease).
    let mut locked = s.lock().unwrap();
    locked.state.ahead_started = Some(now_secs());
    locked.commit().unwrap();
    drop(locked);
    s.probe_ahead(&pools(), &policy(), |ips| {
        let want = [ips[0]];
        let mut r = req("c1", &want);
        r.mac = Some(own);
        s.reserve(&pools(), &r, &no_probe, |_| Ok(Vec::new()))
            .unwrap();
        s.release("c1", "eth0").unwrap();
        Ok(vec![(ips[0], own)])
    })
    .unwrap();
    let state = s.peek().unwrap();
    assert!(state.quarantined().is_empty(), "{:?}", state.quarantined());
    assert!(state.verified_at(ip("192.168.2.210")).is_none());
    assert!(state.verified_at(ip("192.168.2.211")).is_some());
    assert!(state.ahead_started().is_none(), "the lease ends");
}

#[test]
fn a_freshly_verified_address_after_the_cursor_is_preferred() {
    let mut state = State::default();
    let pool = &pools()[0];
    for a in ["192.168.2.212", "192.168.2.216"] {
        state.verified.insert(ip(a), 100);
    }
    let pick =
        |state: &State, cursor: &str| state.freshly_verified(pool, Some(ip(cursor)), 110, 60);
    assert_eq!(pick(&state, "192.168.2.213"), Some(ip("192.168.2.216")));
    // None after the cursor: wrap around to the first.
    assert_eq!(pick(&state, "192.168.2.217"), Some(ip("192.168.2.212")));
    // Stale verdicts are not fresh.
    assert_eq!(state.freshly_verified(pool, None, 200, 60), None);
}

#[test]
fn garbage_is_what_the_runtime_does_not_name_or_another_boot_made() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut locked = s.lock().unwrap();
    for (cid, boot) in [("live", "b1"), ("gone", "b1"), ("old", "b0")] {
        let mut a = crate::store::state::tests::alloc("192.168.2.210", cid, None, boot);
        a.ip = ip(&format!("192.168.2.21{}", locked.state.allocations.len()));
        locked.state.allocations.push(a);
    }
    let valid = [("live".to_string(), "eth0".to_string())];
    let freed = locked.collect_garbage(&valid, "b1", 10).unwrap();
    let mut ids: Vec<&str> = freed.iter().map(|a| a.container_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["gone", "old"]);
    drop(locked);
    // Committed.
    let state = s.peek().unwrap();
    assert_eq!(state.allocations().len(), 1);
    assert_eq!(state.allocations()[0].container_id, "live");
}
