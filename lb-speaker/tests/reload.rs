//! SIGHUP in static mode: a running speaker takes new VIPs, drops removed
//! ones (handing them over, make-before-break, where a peer still has
//! them), and keeps its
//! running config whole when the new file is bad. Root, in the private
//! namespace lab of `common`.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const VIP_B: &str = "10.77.0.101";
const VIP6_B: &str = "fd77::101";

fn rewrite(lab: &mut Lab, i: usize, vips: &[&str]) {
    let text = lab.config_text(i, vips, "");
    let path = lab.speaker(i).config.clone();
    fs::write(&path, text).expect("config");
    lab.speaker(i).signal(Signal::SIGHUP);
}

/// The distinct MACs that answer an arping for `vip` from the client.
fn responders(lab: &Lab, vip: &str) -> Vec<String> {
    arp_responders(&lab.client, vip, "2").macs
}

fn wait_until(what: &str, lab: &mut Lab, mut cond: impl FnMut(&mut Lab) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond(lab) {
        if Instant::now() > deadline {
            panic!("timed out: {what}; logs:\n{}", lab.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_adds_and_drops_vips_and_refuses_a_bad_file() {
    let mut lab = Lab::new(2);
    lab.start(0, &[VIP4], "");
    lab.start(1, &[VIP4], "");
    lab.wait_owner(VIP4, Duration::from_secs(5));

    // Added on both nodes: one owner each, answering ARP and IPv6 (the
    // first IPv6 VIP of a running speaker needs its IPv6 socket opened).
    rewrite(&mut lab, 0, &[VIP4, VIP_B, VIP6_B]);
    rewrite(&mut lab, 1, &[VIP4, VIP_B, VIP6_B]);
    let owner_b = lab.wait_owner(VIP_B, Duration::from_secs(5));
    lab.wait_owner(VIP6_B, Duration::from_secs(5));
    let owner_mac = lab.nodes[owner_b].mac("eth0");
    assert_eq!(responders(&lab, VIP_B), vec![owner_mac.clone()]);
    lab.client
        .ok(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", VIP6_B]);
    assert!(on_lo(&lab.nodes[owner_b], VIP_B));

    // A bad file changes nothing: the error names the field, the VIPs
    // stay announced, the failure is counted.
    let path = lab.speaker(owner_b).config.clone();
    let good = fs::read_to_string(&path).unwrap();
    fs::write(&path, good.replace(VIP_B, "10.77.0.999")).unwrap();
    lab.speaker(owner_b).signal(Signal::SIGHUP);
    wait_until("reload refused", &mut lab, |l| {
        l.speaker(owner_b).log_text().contains("reload refused")
    });
    let log = lab.speaker(owner_b).log_text();
    assert!(
        log.contains("vips[1].address"),
        "the field is named:\n{log}"
    );
    assert_eq!(
        lab.speaker(owner_b).vip_state(VIP_B).as_deref(),
        Some("announcing")
    );
    assert_eq!(
        flatlan_speaker::metrics::scrape(
            &lab.metrics(owner_b),
            "flatlan_speaker_config_reload_failures_total"
        ),
        Some(1.0)
    );
    assert_eq!(responders(&lab, VIP_B), vec![owner_mac]);

    // Dropped on every node: nobody answers, it leaves lo and the status.
    rewrite(&mut lab, 0, &[VIP4]);
    rewrite(&mut lab, 1, &[VIP4]);
    wait_until("VIP_B forgotten", &mut lab, |l| {
        (0..2).all(|i| l.speaker(i).vip_state(VIP_B).is_none())
    });
    for i in 0..2 {
        assert!(!on_lo(&lab.nodes[i], VIP_B), "node {i} still has {VIP_B}");
        assert!(!on_lo(&lab.nodes[i], VIP6_B), "node {i} still has {VIP6_B}");
    }
    assert!(responders(&lab, VIP_B).is_empty());

    // Dropped on its owner only (the file must keep one VIP): the peer that
    // still has it takes over.
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    rewrite(&mut lab, owner, &[VIP_B]);
    let next = 1 - owner;
    wait_until("handed over", &mut lab, |l| {
        l.speaker(owner).vip_state(VIP4).is_none()
            && l.speaker(next).vip_state(VIP4).as_deref() == Some("announcing")
    });
    assert_eq!(responders(&lab, VIP4), vec![lab.nodes[next].mac("eth0")]);
    assert!(!on_lo(&lab.nodes[owner], VIP4));
    // Make-before-break: the old owner let go only once the peer's
    // heartbeat showed it announcing (released at once, it would log
    // handed_over=false).
    let log = lab.speaker(owner).log_text();
    let released: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("releasing") && l.contains(VIP4))
        .collect();
    assert!(
        !released.is_empty() && released.iter().all(|l| l.contains("handed_over=true")),
        "{VIP4} released before its successor announced it; logs:\n{}",
        lab.logs()
    );
}
