//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and crash
//! regressions (`fuzz/regressions/<target>/`) of the CNI config and
//! environment parsers through the very checks the cargo-fuzz targets run
//! (`fuzz/checks/*.rs`), so a plain `cargo test` exercises them on stable.

#[path = "../../fuzz/checks/cni_args.rs"]
mod cni_args;
#[path = "../../fuzz/checks/cni_config.rs"]
mod cni_config;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

use std::collections::HashMap;

use flatlan_cni::config::NetConf;
use flatlan_cni::env::Env;
use replay::{fuzz_dir, replay};

fn read_seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("corpus").join(target).join(name))
        .unwrap_or_else(|e| panic!("{target}/{name}: {e}"))
}

#[test]
fn cni_config_corpus() {
    // The hand-written seeds are what they say they are.
    for name in [
        "seed-readme-k3s.json",
        "seed-dual-stack.json",
        "seed-range-file.json",
        "seed-runtime-del.json",
        "seed-v6-only.json",
    ] {
        NetConf::parse(&read_seed("cni_config", name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let bad = NetConf::parse(&read_seed("cni_config", "seed-invalid-gateway.json"));
    assert_eq!(bad.map(|_| ()).map_err(|e| e.code()), Err(7));
    assert!(replay("cni_config", cni_config::check) >= 6);
}

#[test]
fn cni_args_corpus() {
    for name in [
        "seed-add-k8s",
        "seed-add-ip",
        "seed-del-no-netns",
        "seed-check",
        "seed-version",
        "seed-status",
        "seed-gc",
    ] {
        let text = String::from_utf8(read_seed("cni_args", name)).expect("UTF-8 seed");
        let vars: HashMap<&str, String> = cni_args::VARS
            .iter()
            .copied()
            .zip(text.split('\n').map(str::to_string))
            .collect();
        Env::from_vars(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(replay("cni_args", cni_args::check) >= 7);
}
