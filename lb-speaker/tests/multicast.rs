//! Heartbeats over multicast only (`multicast: true`, no `peers`): the
//! speakers find each other on the LAN, agree on one owner and fail over.
//! Root, in the private namespace lab of `common`. The nodes have no
//! default route, as on a LAN segment without a gateway: the heartbeats
//! must leave by the node address's interface, not by the routing table.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn multicast_only(lab: &Lab, i: usize) -> String {
    let text = lab.config_text(i, &[VIP4], "multicast: true\n");
    let peers = text
        .lines()
        .find(|l| l.starts_with("peers:"))
        .expect("peers line")
        .to_owned();
    text.replace(&peers, "peers: []")
}

#[test]
fn multicast_heartbeats_elect_one_owner_and_fail_over() {
    let mut lab = Lab::new(2);
    for i in 0..2 {
        let text = multicast_only(&lab, i);
        lab.start_text(i, &text);
    }
    // Without heartbeats each speaker would think itself alone and both
    // would announce: one owner means they hear each other.
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.wait_owner(VIP4, Duration::from_secs(1)), owner);
    // The status file is rewritten at least every second.
    let deadline = Instant::now() + Duration::from_secs(3);
    for i in 0..2 {
        loop {
            let members = lab.speaker(i).status().unwrap().members;
            if members.len() == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} does not see its peer: {members:?}\n{}",
                lab.speaker(i).log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    lab.speaker(owner).signal(Signal::SIGKILL);
    lab.speaker(owner).wait(Duration::from_secs(2));
    let next = lab.wait_owner(VIP4, Duration::from_secs(3));
    assert_ne!(next, owner);
}
