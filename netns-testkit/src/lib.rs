//! A simulated home LAN built from network namespaces.
#![forbid(unsafe_code)]
