//! The `store_file` check: shared by `fuzz/fuzz_targets/store_file.rs` and
//! the corpus replay in `ipam/tests/fuzz_corpus.rs`.
//!
//! Input: the bytes of a store's `state.json`. They are decoded exactly as
//! `Store::lock` and `Store::peek` decode them (`store::decode`), without
//! the file system round trip. The edits below run on anything serde
//! reads, so that corpus entries without a `version` still reach them.

use std::net::IpAddr;

use flatlan_ipam::store::{decode, Unusable};
use flatlan_ipam::State;

pub fn check(data: &[u8]) {
    let parsed = serde_json::from_slice::<State>(data);
    match decode(data) {
        // What the store accepts is exactly a version-1 object serde reads.
        Ok(s) => {
            assert_eq!(s.version(), 1);
            assert_eq!(parsed.as_ref().ok(), Some(&s));
        }
        Err(Unusable::Newer(v)) => assert!(v > 1),
        Err(Unusable::Corrupt(_)) => {}
    }
    let Ok(state) = parsed else {
        return;
    };
    // Round trip: what a commit writes loads back equal.
    let bytes = serde_json::to_vec(&state).expect("a State serializes");
    let back: State = serde_json::from_slice(&bytes).expect("a committed State loads");
    assert_eq!(back, state);
    assert_eq!(serde_json::to_vec(&back).expect("serializes"), bytes);

    // The queries and the edits a CNI command makes never panic, and keep
    // the document loadable.
    let mut s = state.clone();
    let now = 1_700_000_000;
    for a in state.allocations() {
        let _ = (
            a.describe(),
            s.owner_of(a.ip, now),
            s.find(&a.container_id, &a.ifname),
        );
        let _ = s
            .reserved_for_others(a.pod.as_ref().map(|p| p.key()).as_deref())
            .contains(&a.ip);
    }
    let probe: IpAddr = "192.168.2.210".parse().expect("literal");
    let _ = (s.owner_of(probe, now), s.is_verified(probe, now, 600));
    if let Some(a) = state.allocations().first() {
        let gone = s.release(&a.container_id, &a.ifname, now);
        assert!(!gone.is_empty());
        assert!(s.find(&a.container_id, &a.ifname).is_empty());
        // The newest released address of a pod is remembered for it (unless
        // the document is so full that the count bound may evict it).
        let room = state.remembered().len() + state.allocations().len()
            <= flatlan_ipam::sticky::MAX_REMEMBERED;
        if let Some((g, pod)) = gone
            .iter()
            .rev()
            .find_map(|g| Some((g, g.pod.as_ref()?)))
            .filter(|_| room)
        {
            assert!(s.remembered()[&pod.key()].ips.contains(&g.ip));
        }
        let boot = a.boot_id.clone();
        let before = s.allocations().len();
        let other = s.reclaim_other_boots(&boot, now);
        assert_eq!(before, s.allocations().len() + other.len());
        assert!(s.allocations().iter().all(|x| x.boot_id == boot));
    }
    s.quarantine_ip(probe, "02:00:00:00:00:01".into(), now, now + 10);
    assert!(s.owner_of(probe, now).is_some() || s.allocation_of(probe).is_some());
    s.prune(now, 600);
    assert!(s.remembered().len() <= flatlan_ipam::sticky::MAX_REMEMBERED);
    // Once given to a pod, an address is remembered for no one.
    s.handed_out(None, [probe]);
    assert!(s.remembered().values().all(|st| !st.ips.contains(&probe)));
    let bytes = serde_json::to_vec(&s).expect("serializes");
    assert_eq!(serde_json::from_slice::<State>(&bytes).expect("loads"), s);
}
