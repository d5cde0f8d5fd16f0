//! Test-side helpers (not a fuzz target): the workspace tests include this
//! file to replay the committed corpus and regressions through the checks
//! and to keep generated seeds current.
#![allow(dead_code)] // not every including test uses every helper

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `fuzz/` of the repository; every including crate sits one level below.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `check` over every file of the target's corpus and regressions;
/// returns how many corpus files there were.
pub fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut corpus = 0;
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_eq!(kind, "regressions", "{} is missing", dir.display());
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for p in &paths {
            let bytes = std::fs::read(p).expect("readable corpus file");
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{target}: {} fails the fuzz check: {why}", p.display());
            }
        }
        if kind == "corpus" {
            corpus = paths.len();
        }
    }
    corpus
}

/// Writes (with FLATLAN_WRITE_FUZZ_SEEDS set) or compares the seeds.
pub fn seeds(target: &str, seeds: &[(&str, Vec<u8>)], check: fn(&[u8])) {
    let dir = fuzz_dir().join("corpus").join(target);
    for (name, bytes) in seeds {
        check(bytes);
        let path = dir.join(format!("seed-{name}"));
        if std::env::var_os("FLATLAN_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).expect("create the corpus directory");
            std::fs::write(&path, bytes).expect("write a seed");
        } else {
            let committed = std::fs::read(&path).unwrap_or_default();
            assert_eq!(
                &committed,
                bytes,
                "{} is stale; rerun with FLATLAN_WRITE_FUZZ_SEEDS=1",
                path.display()
            );
        }
    }
}
