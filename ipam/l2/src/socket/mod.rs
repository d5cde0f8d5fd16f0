//! Raw Ethernet sockets: the [`FrameSocket`] trait the conflict probes and
//! the speaker are written against, the real `AF_PACKET` implementation
//! [`PacketSocket`] with its classic-BPF kernel filter (`bpf`), its tokio
//! registration [`AsyncPacketSocket`] (feature `tokio`), and the in-memory
//! `FakeSocket` for tests without root (STYLE rule 9), compiled only for
//! tests (`cfg(test)` or the `test-fakes` feature).

#[cfg(feature = "tokio")]
pub mod async_socket;
pub(crate) mod bpf;
#[cfg(any(test, feature = "test-fakes"))]
pub mod fake;
pub mod packet_socket;

#[cfg(feature = "tokio")]
pub use async_socket::AsyncPacketSocket;
#[cfg(any(test, feature = "test-fakes"))]
pub use fake::{FakeSocket, GroupEvent};
pub use packet_socket::PacketSocket;

use std::net::Ipv6Addr;
use std::time::Duration;

pub use crate::error::Error;
use crate::mac::MacAddr;

/// A raw Ethernet socket bound to one interface.
///
/// Every method takes `&self`, so one thread can send while another
/// receives on the same socket. The trait itself promises no thread
/// safety (it has no `Send`/`Sync` bound, and a test double may be
/// `!Sync`); [`PacketSocket`] and `FakeSocket` are both `Send + Sync`,
/// which is checked at compile time below. The fake locks a mutex;
/// [`PacketSocket`] locks nothing: each call is one system call on one
/// file descriptor, and the kernel sends and dequeues whole frames, so
/// concurrent calls never see or write half a frame.
///
/// What sharing does not give: each received frame goes to exactly one
/// [`Self::recv_timeout`] caller, so two threads receiving on one socket
/// split the traffic and each misses answers meant for it. A probe must be
/// the only receiver on its socket while it runs; concurrent probes need a
/// socket each (every `AF_PACKET` socket gets its own copy of each frame).
/// Two concurrent probes for the same IPv6 target on one socket would also
/// share one solicited-node membership, which the first to finish leaves.
pub trait FrameSocket {
    /// Sends one whole Ethernet frame (header included, FCS excluded).
    fn send(&self, frame: &[u8]) -> Result<(), Error>;

    /// Waits up to `timeout` for the next frame received on the interface
    /// (never frames this socket itself sent) and copies it into `buf`,
    /// truncating if needed. `Ok(None)` on timeout.
    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, Error>;

    /// The interface's MAC: the source of our frames, and how our own
    /// frames are recognised if the network reflects them.
    fn mac(&self) -> MacAddr;

    /// The interface index.
    fn ifindex(&self) -> u32;

    /// Makes the interface receive frames sent to `target`'s solicited-node
    /// multicast group, so a simultaneous DAD probe from another host
    /// (RFC 4862 §5.4.3) is seen even through NICs that filter multicast
    /// and MLD-snooping switches. Sockets that see everything (the fake) need
    /// not do anything.
    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let _ = target;
        Ok(())
    }

    /// Undoes [`Self::join_solicited_node`].
    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let _ = target;
        Ok(())
    }
}

// The sharing described on `FrameSocket`, held to: both implementations
// can be used from several threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PacketSocket>();
    #[cfg(any(test, feature = "test-fakes"))]
    assert_send_sync::<FakeSocket>();
};

impl<T: FrameSocket + ?Sized> FrameSocket for &T {
    fn send(&self, frame: &[u8]) -> Result<(), Error> {
        (**self).send(frame)
    }
    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, Error> {
        (**self).recv_timeout(buf, timeout)
    }
    fn mac(&self) -> MacAddr {
        (**self).mac()
    }
    fn ifindex(&self) -> u32 {
        (**self).ifindex()
    }
    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        (**self).join_solicited_node(target)
    }
    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        (**self).leave_solicited_node(target)
    }
}
