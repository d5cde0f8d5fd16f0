//! `flatlan-crdgen [DIR]`: writes the CRDs (default deploy/crds).
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "deploy/crds".into());
    match flatlan_k8s::crdgen::write(std::path::Path::new(&dir)) {
        Ok(names) => {
            for n in names {
                println!("{dir}/{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flatlan-crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}
