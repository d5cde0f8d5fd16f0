//! cargo-fuzz target `arp_frame`; the check itself is in `fuzz/checks/arp_frame.rs`,
//! which the workspace tests also run over the committed corpus.
#![no_main]

#[path = "../checks/arp_frame.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
