//! flatlan's layer 2, shared by the CNI plugin's conflict probes and the
//! speaker: MAC addresses ([`mac`]), Ethernet/ARP/NDP frames as pure byte
//! functions ([`frame`]), what a received frame proves about an address
//! ([`evidence`]), and the `AF_PACKET` socket with its kernel filter, its
//! tokio wrapper and its in-memory fake ([`socket`]).
//!
//! Nothing here knows about pools, stores or VIPs: flatlan-ipam's probes and
//! the speaker's announcer are built on it.
//!
//! `unsafe` is denied (workspace lint) and allowed in one module,
//! `socket::async_socket` (feature `tokio`), for tokio's registration of a
//! raw socket, which tokio offers only as an `unsafe fn`.
#![deny(unsafe_code)]

pub mod error;
pub mod evidence;
pub mod frame;
pub mod mac;
pub mod socket;

pub use error::Error;
pub use mac::MacAddr;
