//! An in-memory [`FrameSocket`] for tests without root or namespaces.
//!
//! It records what is sent and which solicited-node groups are joined and
//! left, delivers injected frames after a chosen delay, and can simulate
//! LAN hosts that answer ARP probes and DAD solicitations the way the Linux
//! kernel does (reply unicast to the prober for ARP; NA to ff02::1 with S=0
//! for DAD). Public so that the CNI plugin's and speaker's tests can use it
//! too.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Error, FrameSocket};
use crate::frame::{solicited_node_multicast, ArpOp, ArpPacket, NdpMessage, NeighborAdvertisement};
use crate::mac::MacAddr;

type Responder = Box<dyn FnMut(&[u8]) -> Vec<(Duration, Vec<u8>)> + Send>;

/// A fake raw socket.
pub struct FakeSocket {
    mac: MacAddr,
    ifindex: u32,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sent: Vec<Vec<u8>>,
    inbox: Vec<(Instant, u64, Vec<u8>)>,
    seq: u64,
    hosts: Vec<Host>,
    responders: Vec<Responder>,
    /// Solicited-node groups currently joined.
    groups: Vec<Ipv6Addr>,
    group_events: Vec<GroupEvent>,
    fail_send: bool,
}

/// One call to join or leave a solicited-node group, with the group
/// address (ff02::1:ffXX:XXXX) it concerns, whether or not it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEvent {
    /// [`FrameSocket::join_solicited_node`].
    Join(Ipv6Addr),
    /// [`FrameSocket::leave_solicited_node`].
    Leave(Ipv6Addr),
}

#[derive(Clone, Copy)]
struct Host {
    ip: IpAddr,
    mac: MacAddr,
    delay: Duration,
}

impl State {
    fn push(&mut self, at: Instant, frame: Vec<u8>) {
        self.seq += 1;
        self.inbox.push((at, self.seq, frame));
    }
}

impl FakeSocket {
    /// A fake socket on an interface with this MAC and index.
    pub fn new(mac: MacAddr, ifindex: u32) -> Self {
        FakeSocket {
            mac,
            ifindex,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the frames from the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error a real socket reports for a refused join or leave.
    fn group_error(&self, group: Ipv6Addr, errno: i32) -> Error {
        Error::Multicast {
            group,
            ifindex: self.ifindex,
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Simulates a LAN host owning `ip` at `mac` that answers probes for it
    /// after `delay`.
    pub fn add_host(&self, ip: IpAddr, mac: MacAddr, delay: Duration) {
        self.state().hosts.push(Host { ip, mac, delay });
    }

    /// Calls `f` for every frame sent; it returns frames to deliver, each
    /// after its delay.
    pub fn respond_with(&self, f: impl FnMut(&[u8]) -> Vec<(Duration, Vec<u8>)> + Send + 'static) {
        self.state().responders.push(Box::new(f));
    }

    /// Delivers `frame` to the receiver `after` from now.
    pub fn inject(&self, frame: &[u8], after: Duration) {
        self.state().push(Instant::now() + after, frame.to_vec());
    }

    /// Every frame sent so far.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.state().sent.clone()
    }

    /// The solicited-node groups currently joined.
    pub fn joined(&self) -> Vec<Ipv6Addr> {
        self.state().groups.clone()
    }

    /// Every join and leave so far, in order. Tests compare this with the
    /// exact groups expected: "nothing is joined now" alone would also hold
    /// for a probe that never joined anything.
    pub fn group_events(&self) -> Vec<GroupEvent> {
        self.state().group_events.clone()
    }

    /// Makes every later `send` fail, as on an interface that went down.
    pub fn fail_sends(&self) {
        self.state().fail_send = true;
    }
}

/// How a Linux host answers a frame, if it is a probe for its address.
fn host_answer(host: &Host, frame: &[u8]) -> Option<Vec<u8>> {
    if let Ok((_, p)) = ArpPacket::parse_frame(frame) {
        if p.op == ArpOp::Request && IpAddr::V4(p.tpa) == host.ip {
            let reply = ArpPacket::reply(host.mac, p.tpa, p.sha, p.spa);
            return Some(reply.to_frame().to_vec());
        }
        return None;
    }
    if let Ok((hdr, NdpMessage::Solicitation(ns))) = NdpMessage::parse_frame(frame) {
        if IpAddr::V6(ns.target) != host.ip {
            return None;
        }
        let link_local = link_local_of(host.mac);
        let na = NeighborAdvertisement::solicited_reply(link_local, host.mac, ns.target, ns.src);
        let dst = na.multicast_eth_dst().unwrap_or(hdr.src);
        return na.to_frame(host.mac, dst).ok().map(|f| f.to_vec());
    }
    None
}

/// The EUI-64 link-local address of `mac` (RFC 4291 Appendix A).
fn link_local_of(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

impl FrameSocket for FakeSocket {
    fn send(&self, frame: &[u8]) -> Result<(), Error> {
        let mut st = self.state();
        if st.fail_send {
            return Err(Error::Socket {
                op: "send",
                ifname: "fake0".into(),
                source: nix::errno::Errno::ENETDOWN,
            });
        }
        st.sent.push(frame.to_vec());
        let now = Instant::now();
        let hosts = st.hosts.clone();
        for h in &hosts {
            if let Some(answer) = host_answer(h, frame) {
                st.push(now + h.delay, answer);
            }
        }
        let mut responders = std::mem::take(&mut st.responders);
        for r in &mut responders {
            for (delay, f) in r(frame) {
                st.push(now + delay, f);
            }
        }
        st.responders = responders;
        Ok(())
    }

    fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let next_ready = {
                let mut st = self.state();
                let earliest = st
                    .inbox
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (at, seq, _))| (*at, *seq))
                    .map(|(i, (at, _, _))| (i, *at));
                match earliest {
                    Some((i, at)) if at <= now => {
                        let (_, _, frame) = st.inbox.swap_remove(i);
                        let n = frame.len().min(buf.len());
                        buf[..n].copy_from_slice(&frame[..n]);
                        return Ok(Some(n));
                    }
                    Some((_, at)) => Some(at),
                    None => None,
                }
            };
            if now >= deadline {
                return Ok(None);
            }
            let until = next_ready.map_or(deadline, |at| at.min(deadline));
            std::thread::sleep(until.saturating_duration_since(now));
        }
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Fails like the kernel does on a second join of the same group
    /// (`EADDRINUSE`), so a probe that joins a shared group twice is caught.
    fn join_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let group = solicited_node_multicast(target);
        let mut st = self.state();
        st.group_events.push(GroupEvent::Join(group));
        if st.groups.contains(&group) {
            return Err(self.group_error(group, libc::EADDRINUSE));
        }
        st.groups.push(group);
        Ok(())
    }

    /// Fails like the kernel does for a group not joined (`EADDRNOTAVAIL`).
    fn leave_solicited_node(&self, target: Ipv6Addr) -> Result<(), Error> {
        let group = solicited_node_multicast(target);
        let mut st = self.state();
        st.group_events.push(GroupEvent::Leave(group));
        let Some(i) = st.groups.iter().position(|g| *g == group) else {
            return Err(self.group_error(group, libc::EADDRNOTAVAIL));
        };
        st.groups.swap_remove(i);
        Ok(())
    }
}
