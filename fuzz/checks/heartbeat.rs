//! The `heartbeat` check: shared by `fuzz/fuzz_targets/heartbeat.rs` and the
//! corpus replay in `lb-speaker/tests/fuzz_corpus.rs`.
//!
//! Input: one heartbeat datagram signed with [`KEY`]. Each input is decoded
//! twice: as given, and re-signed (its last 32 bytes replaced by the right
//! HMAC), so that mutations get past the tag to the parser proper.

use std::time::{Duration, Instant};

use flatlan_speaker::freshness::Challenges;
use flatlan_speaker::wire::{decode, encode, tag, MIN_LEN, TAG_LEN};

/// The fuzzing key; the corpus seeds are signed with it.
pub const KEY: &[u8] = b"flatlan-fuzz-key";

pub fn check(data: &[u8]) {
    let raw = decode(data, KEY);
    if let Some(signed) = resign(data) {
        check_signed(&signed);
        if raw.is_ok() {
            assert_eq!(
                signed, data,
                "a datagram with a good tag re-signs to itself"
            );
        }
    } else {
        assert!(raw.is_err());
    }
    if let Ok(hb) = raw {
        assert_eq!(encode(&hb, KEY).expect("a decoded heartbeat encodes"), data);
    }
}

/// `data` with its tag replaced by HMAC-SHA256(KEY, everything before it).
pub fn resign(data: &[u8]) -> Option<Vec<u8>> {
    let body_len = data.len().checked_sub(TAG_LEN)?;
    let mut out = data[..body_len].to_vec();
    out.extend_from_slice(&tag(KEY, &out));
    Some(out)
}

fn check_signed(signed: &[u8]) {
    let Ok(hb) = decode(signed, KEY) else {
        return;
    };
    assert!(signed.len() >= MIN_LEN);
    // The encoding is canonical: encode(decode(x)) == x, byte for byte.
    assert_eq!(
        encode(&hb, KEY).expect("a decoded heartbeat encodes"),
        signed
    );
    // Any other key is refused.
    assert!(decode(signed, b"another-key").is_err());
    assert!(!hb.node.is_empty() && hb.node.len() <= flatlan_speaker::wire::MAX_NAME);
    assert!(hb.macs.len() <= flatlan_speaker::wire::MAX_MACS);
    assert!(hb.echoes.len() <= flatlan_speaker::wire::MAX_ECHOES);
    // However odd its fields, a heartbeat is a sign of life only to a
    // receiver whose recent challenge it echoes.
    let now = Instant::now();
    let mut ours = Challenges::new([7; 32], Duration::from_secs(1));
    let c = ours.issue(now);
    assert_eq!(ours.is_fresh(&hb, now), hb.echoes.contains(&c));
}
