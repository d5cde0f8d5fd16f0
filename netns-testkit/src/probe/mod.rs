//! Reachability checks between namespaces. Each is bounded by a timeout
//! and fails with an error that says what did not answer.

mod mdns;
mod neigh;
mod ping;
mod ping_run;
mod tcp;
mod udp;

use std::time::Duration;

pub use mdns::{mdns_query, mdns_query_here, MdnsAnswer};
pub use neigh::{arp_neighbors, Neighbor};
pub use ping::{ping, PingReport};
pub use ping_run::{ping_background, ping_finish, PingRun};
pub use tcp::{tcp_echo, tcp_request, tcp_serve, TcpEcho, TcpReply, TcpServer};
pub use udp::udp_broadcast;

/// Deadline for probes whose signature has no timeout (TCP, UDP).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
