//! Replays the committed heartbeat fuzz corpus (`fuzz/corpus/heartbeat/`)
//! and crash regressions (`fuzz/regressions/heartbeat/`) through the very
//! check the cargo-fuzz target runs (`fuzz/checks/heartbeat.rs`), so a
//! plain `cargo test` exercises them on stable.
//!
//! The seeds are heartbeats built by the crate's own encoder and signed
//! with the fuzzing key: `FLATLAN_WRITE_FUZZ_SEEDS=1 cargo test -p
//! flatlan-speaker --test fuzz_corpus` rewrites them; otherwise the
//! committed seeds must match.

#[path = "../../fuzz/checks/heartbeat.rs"]
mod heartbeat;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flatlan_l2::mac::MacAddr;
use flatlan_speaker::wire::{decode, encode, Heartbeat, VipEntry, MAX_ECHOES, MAX_MACS, MAX_NAME};
use replay::{replay, seeds};

fn hb(node: &str, leaving: bool, macs: usize, vips: &[(&str, bool)]) -> Heartbeat {
    Heartbeat {
        node: node.into(),
        nonce: 0x9e37_79b9_7f4a_7c15,
        seq: 42,
        challenge: 0x0123_4567_89ab_cdef,
        echoes: vec![0xfedc_ba98_7654_3210],
        leaving,
        macs: (0..macs)
            .map(|i| MacAddr([0x02, 0, 0x5e, 0x10, 0, i as u8]))
            .collect(),
        vips: vips
            .iter()
            .map(|(a, owned)| VipEntry {
                addr: a.parse().expect("IP literal"),
                owned: *owned,
                refused: None,
            })
            .collect(),
    }
}

fn heartbeat_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sign = |h: Heartbeat| encode(&h, heartbeat::KEY).expect("encodable");
    let many: Vec<VipEntry> = (0..40u32)
        .map(|i| VipEntry {
            addr: if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0xc0a8_02f0 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    0xfd00_0002_0000_0000_0000_0000_0001_0000 + u128::from(i),
                ))
            },
            owned: i % 3 == 0,
            refused: (i % 5 == 1).then_some(MacAddr([0x02, 0, 0, 0, 0xee, i as u8])),
        })
        .collect();
    let mut big = hb(&"n".repeat(MAX_NAME), false, MAX_MACS, &[]);
    big.vips = many;
    big.echoes = (0..MAX_ECHOES as u64).map(|i| i * 0x0101_0101).collect();
    let mut first = hb("node-2", false, 1, &[("192.168.2.242", false)]);
    // First contact: nothing heard yet, nothing echoed.
    first.echoes.clear();
    vec![
        ("minimal", sign(hb("a", false, 0, &[]))),
        (
            "dual-stack",
            sign(hb(
                "node-1",
                false,
                1,
                &[("192.168.2.240", true), ("fd00:2::f0", false)],
            )),
        ),
        (
            "leaving",
            sign(hb("k3s-node.lan", true, 2, &[("192.168.2.241", true)])),
        ),
        ("max-name-macs", sign(big)),
        ("first-contact", sign(first)),
    ]
}

#[test]
fn heartbeat_corpus() {
    let s = heartbeat_seeds();
    for (name, bytes) in &s {
        decode(bytes, heartbeat::KEY).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    seeds("heartbeat", &s, heartbeat::check);
    assert!(replay("heartbeat", heartbeat::check) >= s.len());
}
