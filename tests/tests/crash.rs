//! Crash safety: `flatlan` is SIGKILLed right after each step of ADD (via
//! its FLATLAN_TEST_CRASH_AFTER hook), then the runtime's cleanup (DEL, or
//! GC for an attachment it forgot) must leave no address, link, pod
//! interface or store file behind, and the store must stay readable.

use flatlan_e2e::{
    allocation_count, links, pod_veths, run_raw, settle_store, store_files, store_state, FlatLab,
    STORE_FILES,
};
use netns_testkit::LabConfig;

/// Every hook point, in ADD order.
const STEPS: &[&str] = &[
    "allocated-unprobed",
    "allocated",
    "veth",
    "addresses",
    "routes",
];

fn crash_then(cleanup: &str) {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let conf = l
        .network(1)
        .plugin_config(0, None)
        .expect("plugin config")
        .to_string();
    for (i, step) in STEPS.iter().enumerate() {
        let ns = l.lab.add_pod_netns(1, &format!("k{i}")).expect("netns");
        let netns = ns.path().display().to_string();
        let cid = format!("crash-{i}");
        let env = |cmd: &'static str| {
            vec![
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid.as_str()),
                ("CNI_NETNS", netns.as_str()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ]
        };
        let mut add = env("ADD");
        add.push(("FLATLAN_TEST_CRASH_AFTER", step));
        let run = run_raw(node, &add, conf.as_bytes());
        assert_eq!(
            run.code, None,
            "step {step}: expected death by SIGKILL, got {:?} {}\n(a flatlan without the \
             crash hook? It is built only with flatlan-cni's `test-hooks` feature, which \
             `cargo build --workspace --bins` turns on through this crate)",
            run.code, run.stdout
        );
        // The store must be intact whatever the moment of death, and the
        // crash must have left something to clean up, or the checks below
        // would pass without DEL or GC doing anything.
        let state = store_state(&l.data_dir(1));
        assert!(
            state["allocations"].is_array(),
            "step {step}: store unreadable: {state}"
        );
        assert_eq!(
            allocation_count(&l.data_dir(1)),
            1,
            "step {step}: nothing was allocated"
        );
        let veth_step = STEPS
            .iter()
            .position(|s| *s == "veth")
            .expect("STEPS has a veth step");
        if i >= veth_step {
            assert_eq!(pod_veths(node).len(), 1, "step {step}: no veth to clean up");
        }

        match cleanup {
            "DEL" => {
                let run = run_raw(node, &env("DEL"), conf.as_bytes());
                assert_eq!(
                    run.code,
                    Some(0),
                    "step {step}: DEL after crash: {} {}",
                    run.stdout,
                    run.stderr
                );
            }
            _ => {
                let mut gc: serde_json::Value = serde_json::from_str(&conf).expect("json");
                gc["cni.dev/valid-attachments"] = serde_json::json!([]);
                let gc_env = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")];
                let run = run_raw(node, &gc_env, gc.to_string().as_bytes());
                assert_eq!(
                    run.code,
                    Some(0),
                    "step {step}: GC after crash: {} {}",
                    run.stdout,
                    run.stderr
                );
            }
        }
        assert_eq!(
            allocation_count(&l.data_dir(1)),
            0,
            "step {step}: leaked an address"
        );
        assert!(
            pod_veths(node).is_empty(),
            "step {step}: leaked a host veth"
        );
        // A pod interface dies with its veth pair; nothing else may remain.
        assert_eq!(links(&ns), ["lo"], "step {step}: leaked a pod interface");
    }
    settle_store(&l.data_dir(1));
    assert_eq!(
        store_files(&l.data_dir(1)),
        STORE_FILES,
        "leaked store files"
    );
}

#[test]
fn del_cleans_up_after_a_crash_at_every_add_step() {
    crash_then("DEL");
}

#[test]
fn gc_cleans_up_after_a_crash_at_every_add_step() {
    crash_then("GC");
}

#[test]
fn a_torn_store_is_detected_moved_aside_and_add_still_works() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let first = l.pod(1, "first");
    let state = l.data_dir(1).join("lan").join("state.json");
    let bytes = std::fs::read(&state).expect("state");
    // What a torn write would leave: the document cut in half.
    std::fs::write(&state, &bytes[..bytes.len() / 2]).expect("tear");

    let second = l.pod(1, "second");
    // The live first pod still answers ARP for its address, so the conflict
    // probe keeps the fresh store from handing it out again.
    assert_ne!(
        second.ip, first.ip,
        "a lost store must not reuse a live pod's address"
    );
    let moved: Vec<_> = std::fs::read_dir(l.data_dir(1).join("lan"))
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the torn file is kept for inspection");
    settle_store(&l.data_dir(1));
}
