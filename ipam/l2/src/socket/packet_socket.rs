//! The real [`FrameSocket`]: an `AF_PACKET`/`SOCK_RAW` socket bound to one
//! interface, written entirely with safe wrappers (nix, socket2; no
//! `unsafe`). The CNI plugin probes with it; the speaker announces, answers
//! and watches with it from its tokio loop, through
//! `super::async_socket::AsyncPacketSocket` (feature `tokio`), which needs
//! sends that never block ([`PacketSocket::set_nonblocking`]) and reads
//! that never wait ([`PacketSocket::try_recv`]).
//!
//! * **Binding without unsafe.** nix 0.30 has no safe constructor for a
//!   `sockaddr_ll`, but `getifaddrs()` returns one per interface (family
//!   `AF_PACKET`, with the index, hardware type and MAC filled in, protocol
//!   0). Binding to it works because the kernel's `packet_bind` keeps the
//!   socket's own protocol when `sll_protocol` is 0. Sends then use plain
//!   `send()` on the bound socket, which the kernel routes to the bound
//!   interface. Callers that looked the interface up earlier (the speaker)
//!   pass the index they saw, and [`PacketSocket::open_checked`] refuses a
//!   name that now has another index (the interface was recreated) before
//!   binding to it.
//! * **Filtering in the kernel.** A socket for one EtherType is opened for
//!   that protocol (socket2, as nix has no `ETH_P_ARP`), one for several
//!   for `ETH_P_ALL`. Either way the classic BPF program of `super::bpf`
//!   is attached before `bind`, so of IPv6 only Neighbor Solicitations and
//!   Advertisements reach userspace, not the host's whole IPv6 traffic.
//! * **Filtering in userspace.** [`PacketSocket::try_recv`] still drops
//!   frames the host itself sent (`PACKET_OUTGOING`, including our own
//!   probes) and frames from other interfaces: a packet socket receives
//!   from every interface between `socket()` and `bind()`, and those frames
//!   stay queued. The EtherType is checked again too, which costs nothing.
//! * **Multicast reception for DAD.** To see another host's simultaneous
//!   DAD probe, sent to `target`'s solicited-node group
//!   (33:33:ff:xx:xx:xx), the NIC must accept that MAC; the speaker needs
//!   the same for the NS asking for a VIP it announces. We join the IPv6
//!   group with `IPV6_JOIN_GROUP` on a UDPv6 socket owned by this socket,
//!   instead of `PACKET_ADD_MEMBERSHIP`/`PACKET_MR_MULTICAST`: std exposes
//!   it safely, the membership lives exactly as long as the probe (the
//!   socket closes or leaves), and, unlike a packet-level membership, the
//!   kernel sends an MLD report, so MLD-snooping switches forward the group
//!   to us at all, which RFC 4862 §5.4.2 requires of a DAD-ing node anyway
//!   (and RFC 4861 §7.2.1 of a node answering for an address).
//!   `PACKET_MR_PROMISC` was rejected: it needs raw `setsockopt` (unsafe)
//!   and flips the whole NIC into promiscuous mode. The main check needs
//!   none of this: answers to DAD go to ff02::1, which every IPv6-enabled
//!   interface receives.

use std::io::IoSliceMut;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{bind, recvmsg, send, setsockopt, sockopt, LinkAddr, MsgFlags};
use nix::sys::time::TimeVal;

use super::{bpf, Error, FrameSocket};
use crate::frame::ether::peek_ethertype;
use crate::frame::{solicited_node_multicast, EtherType};
use crate::mac::MacAddr;

/// `sll_pkttype` of frames the host sent (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;
/// `ARPHRD_ETHER` (linux/if_arp.h); veth, bridge, macvlan and VLAN
/// interfaces all report it.
const ARPHRD_ETHER: u16 = 1;
/// `ETH_P_ALL` (linux/if_ether.h): every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// An `AF_PACKET` raw socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    mac: MacAddr,
    ethertypes: Vec<EtherType>,
    /// Holds solicited-node memberships; `None` when IPv6 is unavailable in
    /// this namespace (then joins fail and the probe logs it).
    mcast: Option<UdpSocket>,
}

impl std::fmt::Debug for PacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSocket")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("mac", &self.mac)
            .field("ethertypes", &self.ethertypes)
            .finish_non_exhaustive()
    }
}

impl PacketSocket {
    /// Opens a socket on `ifname` receiving ARP and NDP (NS/NA) frames.
    ///
    /// The socket belongs to the network namespace of the calling thread:
    /// to probe inside a pod or test namespace, call this on a dedicated
    /// thread that has `setns`'d into it (STYLE rule 4). Needs
    /// `CAP_NET_RAW`.
    pub fn open(ifname: &str) -> Result<Self, Error> {
        Self::open_filtered(ifname, &[EtherType::ARP, EtherType::IPV6])
    }

    /// Opens a socket on `ifname` receiving only the given EtherTypes;
    /// [`EtherType::IPV6`] means Neighbor Solicitations and Advertisements
    /// only (see `super::bpf`).
    pub fn open_filtered(ifname: &str, ethertypes: &[EtherType]) -> Result<Self, Error> {
        Self::open_inner(ifname, None, ethertypes)
    }

    /// [`Self::open_filtered`] for a caller that looked the interface up
    /// earlier: fails with [`Error::InterfaceChanged`], before
    /// binding, if `ifname` no longer has index `ifindex`.
    pub fn open_checked(
        ifname: &str,
        ifindex: u32,
        ethertypes: &[EtherType],
    ) -> Result<Self, Error> {
        Self::open_inner(ifname, Some(ifindex), ethertypes)
    }

    fn open_inner(
        ifname: &str,
        expect_ifindex: Option<u32>,
        ethertypes: &[EtherType],
    ) -> Result<Self, Error> {
        let filter = bpf::program(ethertypes)?;
        let link = find_link(ifname)?;
        if link.hatype() != ARPHRD_ETHER {
            return Err(Error::NotEthernet {
                ifname: ifname.to_owned(),
                hatype: link.hatype(),
            });
        }
        let sys = |op: &'static str| {
            move |source: Errno| Error::Socket {
                op,
                ifname: ifname.to_owned(),
                source,
            }
        };
        let ifindex = u32::try_from(link.ifindex()).map_err(|_| sys("ifindex")(Errno::ERANGE))?;
        if let Some(expected) = expect_ifindex.filter(|e| *e != ifindex) {
            return Err(Error::InterfaceChanged {
                ifname: ifname.to_owned(),
                expected,
                found: ifindex,
            });
        }
        // Probing from 00:00:00:00:00:00 would draw answers nobody can
        // route back to us; refuse rather than probe blind.
        let mac = MacAddr(link.addr().unwrap_or_default());
        if mac.is_zero() {
            return Err(Error::NoMac(ifname.to_owned()));
        }

        let mut wanted = ethertypes.to_vec();
        wanted.sort_unstable_by_key(|t| t.0);
        wanted.dedup();
        let protocol = match wanted.as_slice() {
            [one] => one.0,
            _ => ETH_P_ALL,
        };
        // socket2 sets SOCK_CLOEXEC.
        let sock = socket2::Socket::new(
            socket2::Domain::PACKET,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(i32::from(protocol.to_be()))),
        )
        .map_err(|e| sys("socket(AF_PACKET)")(errno(&e)))?;
        // Before bind: nothing the filter rejects is queued after this.
        sock.attach_filter(&bpf::to_sock_filters(&filter))
            .map_err(|e| sys("setsockopt(SO_ATTACH_FILTER)")(errno(&e)))?;
        let fd = OwnedFd::from(sock);
        bind(fd.as_raw_fd(), &link).map_err(sys("bind"))?;
        // A probe must never hang on a full transmit queue.
        setsockopt(&fd, sockopt::SendTimeout, &timeval(SEND_TIMEOUT))
            .map_err(sys("setsockopt(SO_SNDTIMEO)"))?;

        // Only an NDP socket joins solicited-node groups.
        let mcast = if wanted.contains(&EtherType::IPV6) {
            match UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "no IPv6 in this namespace; DAD group joins disabled");
                    None
                }
            }
        } else {
            None
        };
        tracing::debug!(ifname, ifindex, %mac, ?wanted, "opened AF_PACKET socket");
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_owned(),
            ifindex,
            mac,
            ethertypes: wanted,
            mcast,
        })
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Switches `O_NONBLOCK`. An event loop wants it: a send then fails
    /// with `EAGAIN` on a full transmit queue instead of blocking the loop
    /// for up to the send timeout. Receiving never blocks either way
    /// ([`Self::try_recv`] uses `MSG_DONTWAIT`).
    pub fn set_nonblocking(&self, on: bool) -> Result<(), Error> {
        let flags = fcntl(&self.fd, FcntlArg::F_GETFL).map_err(self.err("fcntl(F_GETFL)"))?;
        let mut flags = OFlag::from_bits_retain(flags);
        flags.set(OFlag::O_NONBLOCK, on);
        fcntl(&self.fd, FcntlArg::F_SETFL(flags)).map_err(self.err("fcntl(F_SETFL)"))?;
        Ok(())
    }

    /// Reads the next wanted frame into `buf` (truncating if needed)
    /// without waiting: `Ok(None)` once nothing is queued. Unwanted frames
    /// (see the module docs) are read and skipped.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        loop {
            match self.recv_once(buf)? {
                Recv::Wanted(n) => return Ok(Some(n)),
                Recv::Unwanted => continue,
                Recv::Empty => return Ok(None),
            }
        }
    }

    fn err(&self, op: &'static str) -> impl Fn(Errno) -> Error + '_ {
        move |source| Error::Socket {
            op,
            ifname: self.ifname.clone(),
            source,
        }
    }

    /// One non-blocking `recvmsg`.
    fn recv_once(&self, buf: &mut [u8]) -> Result<Recv, Error> {
        let (n, from) = {
            let mut iov = [IoSliceMut::new(buf)];
            match recvmsg::<LinkAddr>(self.fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT) {
                Ok(msg) => (msg.bytes, msg.address),
                Err(Errno::EAGAIN) => return Ok(Recv::Empty),
                Err(Errno::EINTR) => return Ok(Recv::Unwanted),
                Err(e) => return Err(self.err("recvmsg")(e)),
            }
        };
        let n = n.min(buf.len());
        Ok(if self.wanted(from.as_ref(), &buf[..n]) {
            Recv::Wanted(n)
        } else {
            Recv::Unwanted
        })
    }

    fn wanted(&self, from: Option<&LinkAddr>, frame: &[u8]) -> bool {
        let Some(from) = from else {
            return false;
        };
        if from.pkttype() == PACKET_OUTGOING
            || u32::try_from(from.ifindex()).ok() != Some(self.ifindex)
        {
            return false;
        }
        peek_ethertype(frame).is_some_and(|t| self.ethertypes.contains(&t))
    }
}

/// The socket, for an event loop to wait on (`poll`, tokio's `AsyncFd`).
/// Reading from it other than through [`PacketSocket::try_recv`] bypasses
/// the userspace filter.
impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What tokio's `AsyncFd` takes (see `super::async_socket`).
impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The errno of a failed socket2 or tokio call (always an OS error there).
pub(super) fn errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The `AF_PACKET` address `getifaddrs` reports for `ifname`.
fn find_link(ifname: &str) -> Result<LinkAddr, Error> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|source| Error::Socket {
        op: "getifaddrs",
        ifname: ifname.to_owned(),
        source,
    })?;
    addrs
        .filter(|a| a.interface_name == ifname)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .ok_or_else(|| Error::NoSuchInterface(ifname.to_owned()))
}

/// What one non-blocking read found.
enum Recv {
    Wanted(usize),
    /// A frame the filter drops (our own, another interface, another
    /// ethertype): keep reading, the queue may hold more.
    Unwanted,
    Empty,
}

/// `SO_SNDTIMEO` for probe sockets.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// A `timeval` for `SO_RCVTIMEO`/`SO_SNDTIMEO`, at least 1 µs: zero would
/// mean "block forever".
fn timeval(d: Duration) -> TimeVal {
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX);
    let micros = libc::suseconds_t::from(d.subsec_micros());
    if secs == 0 && micros == 0 {
        TimeVal::new(0, 1)
    } else {
        TimeVal::new(secs, micros)
    }
}

impl FrameSocket for PacketSocket {
    fn send(&self, frame: &[u8]) -> Result<(), Error> {
        loop {
            match send(self.fd.as_raw_fd(), frame, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.err("send")(e)),
            }
        }
    }

    /// Waits for a wanted frame until `timeout` has passed.
    ///
    /// Everything already queued is read first, without sleeping: on a
    /// busy bridge the socket sees every ARP packet and NS/NA on the LAN
    /// (and our own frames), and an answer queued behind those must not
    /// miss its deadline. Then one `poll()` waits
    /// for more (millisecond resolution, rounded up, so a deadline is never
    /// cut short).
    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, Error> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(n) = self.try_recv(buf)? {
                return Ok(Some(n));
            }
            let remaining = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if remaining.is_zero() {
                return Ok(None);
            }
            let ms = remaining.as_micros().div_ceil(1000);
            let wait = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(self.err("poll")(e)),
            }
        }
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let group = solicited_node_multicast(target);
        let Some(udp) = &self.mcast else {
            return Err(Error::Multicast {
                group,
                ifindex: self.ifindex,
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "IPv6 is not available in this network namespace",
                ),
            });
        };
        udp.join_multicast_v6(&group, self.ifindex)
            .map_err(|source| Error::Multicast {
                group,
                ifindex: self.ifindex,
                source,
            })
    }

    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let group = solicited_node_multicast(target);
        match &self.mcast {
            Some(udp) => udp
                .leave_multicast_v6(&group, self.ifindex)
                .map_err(|source| Error::Multicast {
                    group,
                    ifindex: self.ifindex,
                    source,
                }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_a_clear_error() {
        match PacketSocket::open("flatlan-nope0") {
            Err(Error::NoSuchInterface(name)) => assert_eq!(name, "flatlan-nope0"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn loopback_is_not_ethernet() {
        match PacketSocket::open("lo") {
            Err(Error::NotEthernet { hatype, .. }) => assert_eq!(hatype, 772),
            other => panic!("unexpected {other:?}"),
        }
    }
}
