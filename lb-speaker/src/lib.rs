//! flatlan-speaker: the L2 load-balancer engine.
//!
//! One node announces each VIP on the LAN (ARP for IPv4, NDP for IPv6), and
//! another takes over in well under a second when it dies. The decisions
//! are pure and unit-tested ([`config`], [`wire`], [`membership`],
//! [`ownership`], [`announcer`]); the [`engine`] only feeds them with time,
//! heartbeats and frames, and carries out what they decide.
//!
//! `unsafe` is denied crate-wide (workspace lint) and allowed in exactly one
//! module, [`packet`], for the `AF_PACKET` socket calls nix does not wrap.

pub mod announcer;
pub mod assign;
pub mod bench;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod iface;
pub mod membership;
pub mod metrics;
pub mod node_agent;
pub mod ownership;
pub mod packet;
pub mod reload;
pub mod status;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
