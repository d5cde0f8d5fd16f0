//! cargo-fuzz target `store_file`; the check itself is in `fuzz/checks/store_file.rs`,
//! which the workspace tests also run over the committed corpus.
#![no_main]

#[path = "../checks/store_file.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
