//! A raw `AF_PACKET` socket bound to one interface: where the engine sends
//! the announcer's frames and receives the LAN's.
//!
//! This is the crate's only `unsafe`: nix 0.30 has no safe constructor for
//! `sockaddr_ll` (needed by `bind`) nor a wrapper for
//! `PACKET_ADD_MEMBERSHIP` (needed to receive the solicited-node multicast
//! MAC of an IPv6 VIP that is not assigned to the interface). Everything
//! else (socket, send, recvfrom) goes through nix's safe API. flatlan-ipam's
//! `probe::FrameSocket` is meant to replace this module once it lands.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use flatlan_ipam::mac::MacAddr;
use nix::sys::socket::{
    recvfrom, send, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
};

/// `PACKET_OUTGOING`: frames we sent ourselves, looped back to the socket.
const PACKET_OUTGOING: u8 = 4;

/// An `AF_PACKET`/`SOCK_RAW` socket on one interface for one ethertype.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a non-blocking socket on `ifindex` receiving `ethertype`
    /// frames (host order, e.g. 0x0806).
    pub fn open(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        let proto = ethertype.to_be() as i32;
        // The protocol only matters for bind below; open with EthAll and
        // narrow it there, so no frames slip in between.
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .map_err(io::Error::from)?;
        // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes
        // are a valid value; we fill the fields bind reads and pass its exact
        // size. The fd is a valid socket we own.
        let rc = unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto as u16;
            sll.sll_ifindex = ifindex as i32;
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Registers the socket with the tokio reactor.
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<PacketSocket>> {
        // SAFETY: `AsyncFd::register` requires that the fd stays open and is
        // not registered elsewhere while the AsyncFd lives. PacketSocket
        // owns its OwnedFd exclusively and only closes it on drop, which
        // AsyncFd performs after deregistering.
        unsafe { tokio::io::unix::AsyncFd::register(self).map_err(io::Error::from) }
    }

    fn membership(&self, mac: MacAddr, add: bool) -> io::Result<()> {
        // SAFETY: packet_mreq is plain data; all-zero is valid. We pass its
        // exact size to setsockopt on a socket we own.
        let rc = unsafe {
            let mut mreq: libc::packet_mreq = std::mem::zeroed();
            mreq.mr_ifindex = self.ifindex as i32;
            mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
            mreq.mr_alen = 6;
            mreq.mr_address[..6].copy_from_slice(&mac.0);
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                if add {
                    libc::PACKET_ADD_MEMBERSHIP
                } else {
                    libc::PACKET_DROP_MEMBERSHIP
                },
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the interface accept frames to a multicast MAC (the kernel
    /// programs the NIC filter; the membership ends with the socket).
    pub fn join(&self, mac: MacAddr) -> io::Result<()> {
        self.membership(mac, true)
    }

    /// Undoes [`Self::join`].
    pub fn leave(&self, mac: MacAddr) -> io::Result<()> {
        self.membership(mac, false)
    }

    /// Sends one whole Ethernet frame on the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send(self.fd.as_raw_fd(), frame, MsgFlags::empty())
            .map(|_| ())
            .map_err(io::Error::from)
    }

    /// Receives one frame into `buf`; `Ok(None)` for frames we sent
    /// ourselves. `WouldBlock` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let (n, from) = recvfrom::<LinkAddr>(self.fd.as_raw_fd(), buf).map_err(io::Error::from)?;
        if from.is_some_and(|a| a.pkttype() == PACKET_OUTGOING) {
            return Ok(None);
        }
        Ok(Some(n))
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
