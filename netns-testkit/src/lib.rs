//! A simulated home LAN built from network namespaces: the primitives of
//! flatlan's privileged tests, and of the `flatlan-lab` demo and bench
//! (the `flatlan-lab` crate in `lab/`, which sits on top of this one).
//!
//! ```no_run
//! use std::time::Duration;
//! use netns_testkit::{probe, LabConfig, CLIENT_IP};
//!
//! # fn main() -> netns_testkit::Result<()> {
//! let lab = LabConfig::new().nodes(2).with_avahi_device(true).build()?;
//! probe::ping(&lab.nodes[0].ns, CLIENT_IP.into(), 1, Duration::from_secs(2))?;
//! let pod = lab.add_pod_netns(1, "web")?; // empty; attach it with a CNI plugin
//! let found = probe::mdns_query(&lab.client, CLIENT_IP, "_http._tcp.local", Duration::from_secs(5))?;
//! assert!(!found.is_empty());
//! # drop(pod);
//! # Ok(()) }
//! // Dropping `lab` kills its daemons and deletes every namespace.
//! ```
//!
//! Everything runs inside namespaces the lab creates; the host's own
//! interfaces, routes, firewall and sysctls are never touched. All names
//! start with `fl<pid>l<n>` so parallel tests do not collide and
//! [`cleanup_stale`] can remove what a killed test left behind.
#![forbid(unsafe_code)]

mod addresses;
pub mod avahi;
mod cleanup;
pub mod cni;
pub mod command;
pub mod dns;
mod dnsmasq;
mod error;
pub mod fake_api;
pub mod flatlan;
pub mod kube_lab;
mod lab;
mod names;
mod netns;
pub mod podman;
pub mod probe;
mod process;
mod scratch;
pub mod segment;
pub mod speaker;
pub mod speaker_fleet;
mod topology;

pub use addresses::*;
pub use cleanup::{cleanup_stale, processes_in};
pub use dnsmasq::LAN_DOMAIN;
pub use error::{Error, Result};
pub use lab::{device_service, Lab, LabConfig, Node};
pub use names::{require_root, NAME_PREFIX};
pub use netns::{reset_inherited_sysctls, Netns};
pub use process::{deadline_after, ProcHandle};
pub use scratch::ScratchDir;
pub use topology::{NODE_BRIDGE, NODE_UPLINK, SWITCH_BRIDGE};
