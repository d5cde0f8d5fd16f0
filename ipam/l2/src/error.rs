//! Why a MAC could not be parsed or a packet socket could not be used.
//! (A frame that does not parse is a [`crate::frame::FrameError`]: the
//! pure parsers' own small `Copy`-able error, which the fuzz checks and
//! proptests compare by value.)

use std::net::Ipv6Addr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid MAC address {input:?}: expected six colon-separated hex octets like aa:bb:cc:dd:ee:ff")]
    InvalidMac {
        /// The rejected input, truncated to 64 characters so logs stay sane.
        input: String,
    },
    /// No interface of that name in the current network namespace.
    #[error("no interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// ARP and NDP probes only make sense on Ethernet-like links.
    #[error("interface {ifname:?} is not Ethernet (ARP hardware type {hatype})")]
    NotEthernet { ifname: String, hatype: u16 },
    /// A socket system call failed.
    #[error("{op} on interface {ifname:?}: {source}")]
    Socket {
        op: &'static str,
        ifname: String,
        #[source]
        source: nix::errno::Errno,
    },
    /// Joining a multicast group failed.
    #[error("joining {group} on interface index {ifindex}: {source}")]
    Multicast {
        group: Ipv6Addr,
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    /// The interface name no longer has the index the caller looked up: it
    /// was deleted and created again in between.
    #[error("interface {ifname:?} has index {found}, not {expected}: it was recreated")]
    InterfaceChanged {
        ifname: String,
        expected: u32,
        found: u32,
    },
    /// The interface has no (or an all-zero) hardware address.
    #[error("interface {0:?} has no MAC address to probe from")]
    NoMac(String),
    /// The kernel packet filter asked for cannot be built.
    #[error("invalid packet filter: {0}")]
    InvalidFilter(&'static str),
}
