//! flatlan-speaker: the L2 load-balancer engine.
//!
//! One node announces each VIP on the LAN (ARP for IPv4, NDP for IPv6), and
//! another takes over in well under a second when it dies. The decisions
//! are pure and unit-tested ([`config`], [`wire`], [`freshness`], [`membership`],
//! [`ownership`], [`announcer`]); the [`engine`] only feeds them with time,
//! heartbeats and frames, and carries out what they decide.
//!
//! The crate has no `unsafe`: its raw sockets are flatlan-ipam's
//! `AF_PACKET` [`flatlan_l2::socket::PacketSocket`] (see [`sockets`]),
//! and its frames flatlan-ipam's pure builders and parsers.
#![forbid(unsafe_code)]

pub mod announcer;
pub mod assign;
pub mod config;
pub mod controller;
pub mod detector;
pub mod engine;
pub mod error;
pub mod execute;
pub mod freshness;
pub mod heartbeat;
pub mod http;
pub mod iface;
pub mod inbox;
pub mod kube_source;
pub mod link_events;
pub mod log_limit;
pub mod membership;
pub mod metrics;
pub mod netlink;
pub mod node_agent;
pub mod outgoing;
pub mod ownership;
pub mod plan;
pub mod privileges;
pub mod reload;
pub mod snapshot;
pub mod sockets;
pub mod source;
pub mod status;
pub mod sysctls;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
