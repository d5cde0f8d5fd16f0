//! Everything flatlan knows about addresses on the LAN.
#![forbid(unsafe_code)]
