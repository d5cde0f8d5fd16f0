//! cargo-fuzz target `ndp_frame`; the check itself is in `fuzz/checks/ndp_frame.rs`,
//! which the workspace tests also run over the committed corpus.
#![no_main]

#[path = "../checks/ndp_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
