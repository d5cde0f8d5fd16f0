//! Everything flatlan knows about addresses on the LAN: pools and ranges,
//! pure allocation, the crash-safe on-disk store, and (in later modules)
//! ARP/NDP frames, conflict probes and passive watching. Both binaries use it.
//!
//! `unsafe` is denied (workspace lint) and allowed in one module,
//! `probe::async_socket` (feature `tokio`), for tokio's registration of a
//! raw socket, which tokio offers only as an `unsafe fn`.
#![deny(unsafe_code)]

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
pub mod frame;
pub mod mac;
pub mod probe;
pub mod watch;
