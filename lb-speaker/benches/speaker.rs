//! Speaker benchmarks in network namespaces (root; nothing touches the host
//! namespace). The measurements live in flatlan-lab
//! ([`flatlan_lab::speaker_bench`]), so `flatlan-lab speaker-bench`,
//! `flatlan-speaker bench`, `flatlan-lab bench` and this entry point report
//! the same figures. Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! `cargo bench -p flatlan-speaker --bench speaker -- [TRIALS]` (default 20).

use std::process::ExitCode;

use flatlan_lab::speaker_bench::{run, BenchOptions};

fn main() -> ExitCode {
    let mut opts = BenchOptions::new(env!("CARGO_BIN_EXE_flatlan-speaker").into());
    if let Some(t) = std::env::args().skip(1).find_map(|a| a.parse().ok()) {
        opts.trials = t;
    }
    match run(&opts) {
        Ok(r) => {
            print!("{}", r.render_markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("speaker bench: {e}");
            ExitCode::FAILURE
        }
    }
}
