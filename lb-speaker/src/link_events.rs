//! The interfaces of the speaker's network namespace, kept current by
//! rtnetlink events instead of a poll.
//!
//! A task subscribes to `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and
//! `RTNLGRP_IPV6_IFADDR` and, whenever something arrives, reads the links
//! and addresses again (one dump each) and publishes the whole table on a
//! [`watch`] channel: a link that comes back, a MAC that changes or an
//! address (the announcing subnet's, or a VIP on `lo`) that someone
//! removes reaches the engine within a dump's time, not a poll interval's.
//! Events that arrive together are read as one (the channel is drained
//! before the dump), and a table equal to the last is not published, so a
//! claim burst that adds 1,000 VIPs to `lo` wakes the engine a few times,
//! not 1,000.
//!
//! Why a dump per burst rather than applying each event: netlink multicast
//! is lossy by design. When the socket's receive buffer overflows (our own
//! 1,000-VIP claim burst can do it) the kernel drops events and says only
//! ENOBUFS; a dump is the one way back to the truth, so it is also the one
//! way the table is built.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use flatlan_l2::mac::MacAddr;
use futures_util::stream::{StreamExt as _, TryStreamExt as _};
use futures_util::FutureExt as _;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::iface::IfaceInfo;

/// The table: interfaces by name.
pub type Ifaces = BTreeMap<String, IfaceInfo>;

/// The safety net: the table is read again this often even with no event.
/// Events cover every change, but a multicast socket that overflowed may
/// have lost the last ones of a burst after we drained it, and a
/// connection that failed is reopened only here; a few seconds bound how
/// long either can leave the table stale. It is not the reaction time.
pub const SAFETY_POLL: Duration = Duration::from_secs(5);

/// Subscribes, reads the table once and returns it on a channel that a
/// background task keeps current (until every receiver is gone). Must be
/// called on a tokio runtime.
pub async fn watch_ifaces() -> Result<watch::Receiver<Ifaces>> {
    let (handle, events) = subscribe()?;
    let first = dump(&handle).await?;
    let (tx, rx) = watch::channel(first);
    tokio::spawn(follow(tx, handle, events));
    Ok(rx)
}

/// The connection's unsolicited messages: the events.
type Events = futures_util::stream::BoxStream<
    'static,
    (
        rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    ),
>;

/// A connection bound to the link and address groups; its task runs on
/// the current runtime.
fn subscribe() -> Result<(Handle, Events)> {
    let (conn, handle, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])
    .map_err(|e| Error::sys("subscribe to rtnetlink link and address events", e))?;
    tokio::spawn(conn);
    Ok((handle, events.boxed()))
}

/// Publishes a fresh table after every burst of events and every
/// [`SAFETY_POLL`]; reopens the connection if it ends.
async fn follow(tx: watch::Sender<Ifaces>, mut handle: Handle, mut events: Events) {
    let mut safety = tokio::time::interval(SAFETY_POLL);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    safety.tick().await;
    let mut connected = true;
    loop {
        tokio::select! {
            ev = events.next(), if connected => match ev {
                // Whatever it is (a link, an address, an overrun), the
                // dump below tells what changed. Read what else is queued
                // first: one dump for the whole burst.
                Some(_) => while let Some(Some(_)) = events.next().now_or_never() {},
                None => {
                    tracing::warn!("rtnetlink event socket closed; reopening it at the next safety poll");
                    connected = false;
                    continue;
                }
            },
            _ = safety.tick() => {
                if !connected {
                    match subscribe() {
                        Ok((h, e)) => {
                            (handle, events, connected) = (h, e, true);
                            tracing::info!("rtnetlink event socket reopened");
                        }
                        Err(e) => {
                            tracing::warn!("{e}; interfaces are read every {SAFETY_POLL:?} meanwhile");
                            continue;
                        }
                    }
                }
            }
            _ = tx.closed() => return,
        }
        match dump(&handle).await {
            Ok(fresh) => {
                tx.send_if_modified(|cur| {
                    let changed = *cur != fresh;
                    if changed {
                        *cur = fresh;
                    }
                    changed
                });
            }
            Err(e) => tracing::warn!("reading the interfaces: {e}"),
        }
    }
}

/// Reads every link and every address.
async fn dump(handle: &Handle) -> Result<Ifaces> {
    let err = |what: &str, e: rtnetlink::Error| {
        Error::sys(
            format!("rtnetlink dump of the {what}"),
            std::io::Error::other(e.to_string()),
        )
    };
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| err("links", e))?;
    let addrs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| err("addresses", e))?;
    Ok(table(&links, &addrs))
}

/// The table from a link dump and an address dump: pure, so that what the
/// kernel's messages mean to the speaker is unit-tested.
///
/// - running: administratively up *and* `IFF_RUNNING` (carrier, and not
///   dormant), as the engine needs to announce;
/// - mac: `IFLA_ADDRESS` when it is 6 bytes (zero otherwise: `lo`, tunnels);
/// - nets: each address with its prefix length; IPv4's is `IFA_LOCAL` (on
///   a point-to-point link `IFA_ADDRESS` is the peer's), else
///   `IFA_ADDRESS`. Addresses of an index no link has are dropped (the
///   link went between the two dumps; the next event brings it back).
pub fn table(links: &[LinkMessage], addrs: &[AddressMessage]) -> Ifaces {
    let mut by_index: BTreeMap<u32, IfaceInfo> = BTreeMap::new();
    for l in links {
        let Some(name) = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }) else {
            continue;
        };
        let mac = l
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
                _ => None,
            })
            .map_or(MacAddr::ZERO, MacAddr);
        let f = l.header.flags;
        by_index.insert(
            l.header.index,
            IfaceInfo {
                name,
                index: l.header.index,
                mac,
                running: f.contains(LinkFlags::Up) && f.contains(LinkFlags::Running),
                nets: Vec::new(),
            },
        );
    }
    for a in addrs {
        let Some(i) = by_index.get_mut(&a.header.index) else {
            continue;
        };
        let find = |local: bool| -> Option<IpAddr> {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) if local => Some(*ip),
                AddressAttribute::Address(ip) if !local => Some(*ip),
                _ => None,
            })
        };
        let Some(ip) = find(true).or_else(|| find(false)) else {
            continue;
        };
        if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
            i.nets.push(net);
        }
    }
    by_index
        .into_values()
        .map(|i| (i.name.clone(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressHeaderFlags;
    use rtnetlink::AddressMessageBuilder;

    fn link(index: u32, name: &str, mac: &[u8], flags: LinkFlags) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.index = index;
        l.header.flags = flags;
        l.attributes.push(LinkAttribute::IfName(name.into()));
        l.attributes.push(LinkAttribute::Address(mac.to_vec()));
        l
    }

    fn addr(index: u32, ip: &str, prefix: u8) -> AddressMessage {
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                .index(index)
                .address(a, prefix)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(a, prefix)
                .build(),
        }
    }

    #[test]
    fn links_and_addresses_make_the_table() {
        let up = LinkFlags::Up | LinkFlags::Running | LinkFlags::LowerUp;
        let links = [
            link(1, "lo", &[0; 6], up | LinkFlags::Loopback),
            link(2, "eth0", &[2, 0, 0, 0, 0, 9], up),
            // Up without carrier: not running.
            link(3, "eth1", &[2, 0, 0, 0, 0, 10], LinkFlags::Up),
            link(4, "tun0", &[], up),
        ];
        let mut ptp = addr(4, "10.9.9.2", 32);
        // A point-to-point address: IFA_ADDRESS is the peer.
        ptp.attributes = vec![
            AddressAttribute::Address("10.9.9.1".parse().unwrap()),
            AddressAttribute::Local("10.9.9.2".parse().unwrap()),
        ];
        let mut v6 = addr(2, "fd00::2", 64);
        v6.header.flags |= AddressHeaderFlags::Permanent;
        let addrs = [
            addr(1, "127.0.0.1", 8),
            addr(1, "10.0.0.100", 32),
            addr(2, "10.0.0.2", 24),
            v6,
            ptp,
            // An address of a link that went between the dumps.
            addr(7, "10.7.0.1", 24),
        ];
        let t = table(&links, &addrs);
        assert_eq!(
            t.keys().map(String::as_str).collect::<Vec<_>>(),
            ["eth0", "eth1", "lo", "tun0"]
        );
        let eth0 = &t["eth0"];
        assert_eq!(eth0.index, 2);
        assert_eq!(eth0.mac, MacAddr([2, 0, 0, 0, 0, 9]));
        assert!(eth0.running);
        assert_eq!(
            eth0.nets,
            vec![
                "10.0.0.2/24".parse::<IpNet>().unwrap(),
                "fd00::2/64".parse().unwrap()
            ]
        );
        assert!(!t["eth1"].running);
        assert!(t["lo"].mac.is_zero());
        assert!(t["lo"].nets.contains(&"10.0.0.100/32".parse().unwrap()));
        assert!(t["tun0"].mac.is_zero());
        assert_eq!(
            t["tun0"].nets,
            vec!["10.9.9.2/32".parse::<IpNet>().unwrap()]
        );
    }
}
