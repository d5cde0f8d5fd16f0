//! cargo-fuzz target `heartbeat`; the check itself is in `fuzz/checks/heartbeat.rs`,
//! which the workspace tests also run over the committed corpus.
#![no_main]

#[path = "../checks/heartbeat.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
