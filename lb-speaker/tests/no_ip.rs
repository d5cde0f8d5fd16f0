//! The speaker runs no `ip` process (issue 11 item 2): VIPs go on and off
//! `lo` through rtnetlink, and links and addresses are followed through
//! rtnetlink events. The real speaker runs with a `PATH` whose only `ip`
//! fails loudly and leaves a marker file; it must assign, announce,
//! re-assign a VIP someone removed, and release, and the marker must not
//! exist. Needs root; fails (never skips) without it.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use netns_testkit::speaker::SpeakerLab;
use nix::sys::signal::Signal;

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Polls `cond` for up to `timeout`.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_speaker_assigns_announces_and_releases_without_running_ip() {
    let dir = tempfile::tempdir().unwrap();
    let fake_bin = dir.path().join("bin");
    std::fs::create_dir(&fake_bin).unwrap();
    let marker = dir.path().join("ip-was-run");
    write_script(
        &fake_bin.join("ip"),
        &format!(
            "#!/bin/sh\necho \"ip $*\" >> '{}'\necho 'the speaker ran ip' >&2\nexit 1\n",
            marker.display()
        ),
    );
    // The speaker, with the fake `ip` first (and only) on its PATH.
    let wrapper = dir.path().join("speaker");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nPATH='{}'\nexport PATH\nexec '{BIN}' \"$@\"\n",
            fake_bin.display()
        ),
    );
    let mut lab = SpeakerLab::new(&wrapper, 1).unwrap();
    lab.start(0, &[VIP4, VIP6], "").unwrap();
    lab.wait_owner(ip(VIP4), Duration::from_secs(10)).unwrap();
    lab.wait_owner(ip(VIP6), Duration::from_secs(10)).unwrap();
    let node = &lab.nodes[0];

    // Assigned and announced: the client resolves the VIP to the node and
    // the node's kernel accepts the traffic.
    assert!(on_lo(node, VIP4) && on_lo(node, VIP6), "{}", lab.logs());
    lab.client
        .ok(&["ping", "-c", "2", "-i", "0.2", "-W", "1", VIP4]);
    assert_eq!(neigh_mac(&lab.client, VIP4), Some(node.mac("eth0")));
    lab.client
        .ok(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", VIP6]);

    // Someone takes an owned VIP off lo: the address event brings it back
    // at once (well before the safety poll's 5 s).
    node.ok(&["ip", "addr", "del", &format!("{VIP4}/32"), "dev", "lo"]);
    assert!(
        eventually(Duration::from_secs(3), || on_lo(node, VIP4)),
        "the removed VIP was not put back on lo\n{}",
        lab.logs()
    );

    // Released on a clean exit.
    lab.speaker(0).unwrap().signal(Signal::SIGTERM).unwrap();
    let st = lab.speaker(0).unwrap().wait(Duration::from_secs(5));
    assert!(
        st.is_some_and(|s| s.success()),
        "exit {st:?}\n{}",
        lab.logs()
    );
    let node = &lab.nodes[0];
    assert!(!on_lo(node, VIP4) && !on_lo(node, VIP6), "VIP left on lo");

    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        !marker.exists(),
        "the speaker ran ip:\n{ran}\n{}",
        lab.logs()
    );
}
