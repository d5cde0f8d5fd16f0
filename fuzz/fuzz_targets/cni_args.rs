//! cargo-fuzz target `cni_args`; the check itself is in `fuzz/checks/cni_args.rs`,
//! which the workspace tests also run over the committed corpus.
#![no_main]

#[path = "../checks/cni_args.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
