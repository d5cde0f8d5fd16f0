//! Everything flatlan knows about addresses on the LAN: pools and ranges,
//! pure allocation, the crash-safe on-disk store, remembered pod
//! identities, conflict probes and passive watching. The CNI plugin uses
//! it; frames, MACs and packet sockets are flatlan-l2's.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod error;
pub mod node_range;
pub mod policy;
pub mod pool;
pub mod range;
pub mod sticky;
pub mod store;

pub use alloc::{allocate, Want};
pub use error::{Error, Result};
pub use policy::{Policy, Request, Reserved};
pub use pool::Pool;
pub use range::IpRange;
pub use store::{Allocation, Locked, PodRef, State, Store};
pub mod probe;
pub mod watch;
