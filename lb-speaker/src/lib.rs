//! flatlan-speaker: the L2 load-balancer engine.
#![forbid(unsafe_code)]
