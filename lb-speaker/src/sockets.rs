//! The engine's raw sockets on one interface: flatlan-ipam's `AF_PACKET`
//! socket (the one the IPAM probe uses), registered with tokio
//! ([`AsyncPacketSocket`]), each with a reader task that forwards received
//! frames to the engine's loop.
//!
//! An interface gets an ARP socket on the first claim on it, and an NDP
//! socket once an IPv6 VIP is claimed there. The NDP socket's kernel filter
//! lets only Neighbor Solicitations and Advertisements through (see
//! `flatlan_l2::socket::bpf`), which is all the announcer reads, so the
//! host's IPv6 traffic is not copied into the speaker.
//!
//! [`Sockets`] keeps them per interface, for as long as a VIP is claimed
//! there: [`Sockets::sync`] closes those of interfaces with no claimed VIP,
//! of vanished or recreated devices, and replaces those whose reader died
//! (re-joining their solicited-node groups), so no socket outlives what it
//! is for and no dead one stays behind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

use flatlan_l2::frame::ether::peek_ethertype;
use flatlan_l2::frame::{solicited_node_multicast, EtherType};
use flatlan_l2::socket::{AsyncPacketSocket, FrameSocket, PacketSocket};
use flatlan_l2::Error as L2Error;
use nix::errno::Errno;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::iface::IfaceInfo;

/// Frames from the reader tasks: (interface name, whole Ethernet frame).
pub type FrameTx = mpsc::Sender<(String, Vec<u8>)>;
/// Where the engine receives them.
pub type FrameRx = mpsc::Receiver<(String, Vec<u8>)>;

type Sock = Arc<AsyncPacketSocket>;

/// The sockets of one interface; dropping it stops the readers and closes
/// the sockets, which also ends their multicast memberships.
pub struct IfaceSockets {
    /// The interface index the sockets are bound to.
    pub ifindex: u32,
    arp: Sock,
    v6: Option<Sock>,
    readers: Vec<JoinHandle<()>>,
    groups: Groups,
}

/// Every interface's sockets, and where their frames go.
pub struct Sockets {
    by_iface: BTreeMap<String, IfaceSockets>,
    tx: FrameTx,
}

impl Sockets {
    /// No sockets yet; readers will forward frames to `tx`.
    pub fn new(tx: FrameTx) -> Self {
        Sockets {
            by_iface: BTreeMap::new(),
            tx,
        }
    }

    /// The interfaces with sockets open.
    pub fn ifaces(&self) -> impl Iterator<Item = &str> {
        self.by_iface.keys().map(String::as_str)
    }

    /// Opens the ARP socket of `i` unless it is open, and the NDP socket
    /// too when `v6` (a reload may add the first IPv6 VIP to a running
    /// speaker).
    pub fn ensure(&mut self, i: &IfaceInfo, v6: bool) -> Result<()> {
        if !self.by_iface.contains_key(&i.name) {
            let s = IfaceSockets::open(i, &self.tx)?;
            self.by_iface.insert(i.name.clone(), s);
        }
        if v6 {
            if let Some(s) = self.by_iface.get_mut(&i.name) {
                s.ensure_v6(i, &self.tx)?;
            }
        }
        Ok(())
    }

    /// Sends `frame` on `iface`'s socket; `None` if it has none.
    pub fn send(&self, iface: &str, frame: &[u8]) -> Option<Result<()>> {
        Some(self.by_iface.get(iface)?.send(frame))
    }

    /// Joins (`join`) or leaves `vip`'s solicited-node group on `iface`.
    pub fn group(&mut self, iface: &str, vip: Ipv6Addr, join: bool) {
        let Some(s) = self.by_iface.get_mut(iface) else {
            return;
        };
        let r = if join { s.join(vip) } else { s.leave(vip) };
        if let Err(e) = r {
            tracing::warn!(%iface, %vip, join, "multicast membership: {e}");
        }
    }

    /// Keeps the sockets of the interfaces in `claimed` (each with whether
    /// an IPv6 VIP is claimed on it) that still exist as the same device;
    /// closes the others. A socket whose reader ended (a socket error) is
    /// opened again, with its groups, so the interface is not left deaf.
    pub fn sync(&mut self, claimed: &BTreeMap<String, bool>, ifaces: &BTreeMap<String, IfaceInfo>) {
        let open: Vec<Open> = self
            .by_iface
            .iter()
            .map(|(name, s)| Open {
                name: name.clone(),
                ifindex: s.ifindex,
                dead: s.readers.iter().any(JoinHandle::is_finished),
            })
            .collect();
        let (close, reopen) = stale(&open, claimed, ifaces);
        for name in close {
            self.by_iface.remove(&name);
        }
        for name in reopen {
            let (Some(old), Some(i)) = (self.by_iface.remove(&name), ifaces.get(&name)) else {
                continue;
            };
            tracing::warn!(iface = %name, "packet socket reader stopped: opening the sockets again");
            let groups: Vec<Ipv6Addr> = old.groups.0.values().flatten().copied().collect();
            drop(old);
            let v6 = claimed.get(&name).copied().unwrap_or(false) || !groups.is_empty();
            match self.ensure(i, v6) {
                Ok(()) => {
                    for vip in groups {
                        self.group(&name, vip, true);
                    }
                }
                Err(e) => tracing::warn!(iface = %name, "cannot open packet socket again: {e}"),
            }
        }
    }
}

/// One interface's open sockets, as [`stale`] sees them.
#[derive(Debug)]
struct Open {
    name: String,
    ifindex: u32,
    /// A reader task ended (a socket error other than ENETDOWN).
    dead: bool,
}

/// Which interfaces' sockets to close (no VIP claimed there, or the device
/// is gone or another one now) and which to open again (a reader died).
fn stale(
    open: &[Open],
    claimed: &BTreeMap<String, bool>,
    ifaces: &BTreeMap<String, IfaceInfo>,
) -> (Vec<String>, Vec<String>) {
    let mut close = Vec::new();
    let mut reopen = Vec::new();
    for o in open {
        let same_device = ifaces.get(&o.name).is_some_and(|i| i.index == o.ifindex);
        if !claimed.contains_key(&o.name) || !same_device {
            close.push(o.name.clone());
        } else if o.dead {
            reopen.push(o.name.clone());
        }
    }
    (close, reopen)
}

impl Drop for IfaceSockets {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// The joined solicited-node groups and the owned VIPs that need each.
/// Distinct VIPs may share a group (same low 24 bits), and the kernel
/// refuses a second join of a group on one socket (`EADDRINUSE`) and drops
/// it on the first leave, so the count is kept here.
#[derive(Debug, Default)]
struct Groups(BTreeMap<Ipv6Addr, BTreeSet<Ipv6Addr>>);

impl Groups {
    /// True if no VIP has `vip`'s group yet: it must be joined first.
    fn first(&self, vip: Ipv6Addr) -> bool {
        !self.0.contains_key(&solicited_node_multicast(vip))
    }

    /// Records that `vip` has its group.
    fn add(&mut self, vip: Ipv6Addr) {
        self.0
            .entry(solicited_node_multicast(vip))
            .or_default()
            .insert(vip);
    }

    /// Forgets `vip`; true if it was the last VIP of its group, which
    /// must be left now.
    fn remove(&mut self, vip: Ipv6Addr) -> bool {
        let group = solicited_node_multicast(vip);
        let Some(vips) = self.0.get_mut(&group) else {
            return false;
        };
        if !vips.remove(&vip) || !vips.is_empty() {
            return false;
        }
        self.0.remove(&group);
        true
    }
}

impl IfaceSockets {
    /// Opens the ARP socket on `i` and starts its reader.
    pub fn open(i: &IfaceInfo, tx: &FrameTx) -> Result<IfaceSockets> {
        let arp = open(i, EtherType::ARP)?;
        let readers = vec![reader(i.name.clone(), arp.clone(), tx.clone())];
        Ok(IfaceSockets {
            ifindex: i.index,
            arp,
            v6: None,
            readers,
            groups: Groups::default(),
        })
    }

    /// Opens the NDP socket on `i` unless it is open already.
    pub fn ensure_v6(&mut self, i: &IfaceInfo, tx: &FrameTx) -> Result<()> {
        if self.v6.is_none() {
            let s = open(i, EtherType::IPV6)?;
            self.readers
                .push(reader(i.name.clone(), s.clone(), tx.clone()));
            self.v6 = Some(s);
        }
        Ok(())
    }

    /// Sends a whole frame on the socket of its EtherType, so the kernel
    /// tags the skb with the right protocol.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let sock = match (&self.v6, peek_ethertype(frame)) {
            (Some(v6), Some(EtherType::IPV6)) => v6,
            _ => &self.arp,
        };
        Ok(sock.get_ref().send(frame)?)
    }

    /// Starts receiving the NS for `vip`: joins its solicited-node group
    /// (which also sends an MLD report, so snooping switches forward the
    /// group here) unless another owned VIP already did. No-op without an
    /// NDP socket.
    pub fn join(&mut self, vip: Ipv6Addr) -> Result<()> {
        let Some(v6) = &self.v6 else {
            return Ok(());
        };
        if self.groups.first(vip) {
            v6.get_ref().join_solicited_node(vip)?;
        }
        self.groups.add(vip);
        Ok(())
    }

    /// Undoes [`Self::join`] for `vip`; the group is left when no other
    /// VIP needs it.
    pub fn leave(&mut self, vip: Ipv6Addr) -> Result<()> {
        match &self.v6 {
            Some(v6) if self.groups.remove(vip) => Ok(v6.get_ref().leave_solicited_node(vip)?),
            _ => Ok(()),
        }
    }
}

/// Opens a socket on `i` for `ethertype`, registered with tokio. The index
/// check catches an interface recreated since `i` was read: its VIPs are
/// claimed again on the new device at the next interface poll.
fn open(i: &IfaceInfo, ethertype: EtherType) -> Result<Sock> {
    let s = PacketSocket::open_checked(&i.name, i.index, &[ethertype])?;
    Ok(Arc::new(AsyncPacketSocket::new(s)?))
}

/// Forwards every frame `sock` receives to the engine until the engine is
/// gone or the socket fails.
fn reader(ifname: String, sock: Sock, tx: FrameTx) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => {
                    if tx.send((ifname.clone(), buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                // A link going down reports ENETDOWN once (the kernel's
                // packet_notifier), and the socket receives again when the
                // link is back: keep reading, or the speaker would stay deaf
                // to ARP and NS on this interface after a link flap.
                Err(L2Error::Socket {
                    source: Errno::ENETDOWN,
                    ..
                }) => {
                    tracing::info!(iface = %ifname, "link down; still listening for when it is back");
                }
                Err(e) => {
                    tracing::warn!(iface = %ifname, "packet socket: {e}");
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("literal")
    }

    #[test]
    fn sockets_live_as_long_as_a_claim_on_their_device_and_a_dead_reader_is_replaced() {
        let iface = |name: &str, index| IfaceInfo {
            name: name.into(),
            index,
            mac: flatlan_l2::mac::MacAddr([2, 0, 0, 0, 0, 1]),
            running: true,
            nets: Vec::new(),
        };
        let ifaces = BTreeMap::from([
            ("eth0".to_owned(), iface("eth0", 2)),
            ("eth1".to_owned(), iface("eth1", 3)),
            ("eth2".to_owned(), iface("eth2", 9)),
            ("eth3".to_owned(), iface("eth3", 5)),
        ]);
        let open = |name: &str, ifindex, dead| Open {
            name: name.into(),
            ifindex,
            dead,
        };
        let open = [
            open("eth0", 2, false),
            // Its VIPs were released.
            open("eth1", 3, false),
            // Recreated: another device by that name.
            open("eth2", 4, false),
            // Its reader died.
            open("eth3", 5, true),
            // Gone.
            open("eth4", 6, false),
        ];
        let claimed = BTreeMap::from([
            ("eth0".to_owned(), false),
            ("eth2".to_owned(), false),
            ("eth3".to_owned(), true),
            ("eth4".to_owned(), false),
        ]);
        let (close, reopen) = stale(&open, &claimed, &ifaces);
        assert_eq!(close, vec!["eth1", "eth2", "eth4"]);
        assert_eq!(reopen, vec!["eth3"]);
    }

    #[test]
    fn vips_sharing_a_group_join_it_once_and_leave_it_last() {
        let mut g = Groups::default();
        // Same low 24 bits: one group, ff02::1:ff00:100.
        let (a, b, c) = (v6("fd00::100"), v6("fd01::100"), v6("fd00::200"));
        assert!(g.first(a));
        g.add(a);
        assert!(!g.first(b));
        g.add(b);
        assert!(g.first(c));
        g.add(c);
        assert!(!g.remove(a), "b still needs the group");
        assert!(!g.remove(a), "a second leave changes nothing");
        assert!(g.remove(b));
        assert!(g.remove(c));
        // A VIP whose join failed was never added: its leave is a no-op.
        assert!(!g.remove(v6("fd00::300")));
    }
}
