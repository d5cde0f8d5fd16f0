//! Soak: ADD/DEL cycles at random concurrency with GC interleaved, then not
//! one address, link, pod interface or store file may be left.
//!
//! CI runs 1,000 cycles; `FLATLAN_SOAK_CYCLES=10000 cargo test -p flatlan-e2e
//! --test soak` is the long mode.

use std::collections::HashSet;
use std::sync::Mutex;

use flatlan_e2e::{allocation_count, links, pod_veths, settle_store, FlatLab};
use netns_testkit::cni::Attachment;
use netns_testkit::LabConfig;

const WORKERS: usize = 6;
const RANGE: &str = "192.168.2.200-192.168.2.254";

/// A tiny deterministic PRNG (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn add_del_cycles_with_random_concurrency_and_interleaved_gc_leak_nothing() {
    let cycles: usize = std::env::var("FLATLAN_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = flatlan_e2e::network(l.state.path(), 1, &[RANGE]);
    let pods: Vec<_> = (0..WORKERS)
        .map(|w| l.lab.add_pod_netns(1, &format!("w{w}")).expect("netns"))
        .collect();
    // What the runtime knows: attachments it has started to ADD and not yet
    // DELeted. A runtime records an attachment before calling ADD, so GC
    // never sees an in-flight ADD as garbage.
    let known: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let per_worker = cycles.div_ceil(WORKERS);

    std::thread::scope(|s| {
        for (w, ns) in pods.iter().enumerate() {
            let (net, known) = (&net, &known);
            s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                for i in 0..per_worker {
                    // Random concurrency: workers idle for a random moment.
                    std::thread::sleep(std::time::Duration::from_micros(rng.next() % 3000));
                    let id = format!("soak-{w}-{i}");
                    let att = Attachment::new(&id, ns);
                    known.lock().expect("lock").insert(id.clone());
                    net.add(node, &att)
                        .unwrap_or_else(|e| panic!("{id} ADD: {e}"));
                    if rng.next().is_multiple_of(5) {
                        let valid: Vec<Attachment> = known
                            .lock()
                            .expect("lock")
                            .iter()
                            .map(|c| {
                                let mut a = Attachment::new(c, ns);
                                a.netns = None;
                                a
                            })
                            .collect();
                        net.gc(node, &valid)
                            .unwrap_or_else(|e| panic!("{id} GC: {e}"));
                    }
                    net.del(node, &att, None)
                        .unwrap_or_else(|e| panic!("{id} DEL: {e}"));
                    known.lock().expect("lock").remove(&id);
                }
            });
        }
    });

    settle_store(&l.data_dir(1));
    assert_eq!(allocation_count(&l.data_dir(1)), 0, "leaked addresses");
    assert!(pod_veths(node).is_empty(), "leaked host veths");
    for ns in &pods {
        assert_eq!(links(ns), ["lo"], "leaked interface in {}", ns.name());
    }
    assert_eq!(
        flatlan_e2e::store_files(&l.data_dir(1)),
        flatlan_e2e::STORE_FILES,
        "leaked store files"
    );
}
