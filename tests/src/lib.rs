//! Shared helpers for flatlan's end-to-end tests.
#![forbid(unsafe_code)]
