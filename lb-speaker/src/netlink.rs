//! rtnetlink for `assign`: VIPs added to and removed from `lo` in one
//! pipelined netlink round per batch, with no process spawned.
//!
//! The engine's turn is synchronous (it never awaits: a turn decides and
//! acts, and nothing external may hold a heartbeat back), so the rtnetlink
//! connection lives on a thread of its own with a small runtime, and the
//! engine hands it a whole batch and waits for the batch's answer, as it
//! waited for `ip -batch` before. The kernel answers an address request
//! within microseconds; what a batch costs is the round trips, so they are
//! pipelined: up to [`WINDOW`] requests are in flight at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use rtnetlink::packet_route::address::{AddressHeaderFlags, AddressMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Requests in flight at once. Each unread ack takes about 1 KiB of the
/// socket's receive buffer (its skb), and the default buffer (212 KiB)
/// holds about 200 of them: a kernel that finds it full drops the ack
/// (ENOBUFS) and that request would never be answered. 128 leaves room,
/// and a 1,000-VIP failover still needs only a few round trips' worth of
/// waiting, not 1,000.
const WINDOW: usize = 128;
/// How long a batch may take before every VIP in it counts as failed. The
/// kernel answers in microseconds; this only bounds a wedged connection,
/// which must not wedge the engine (and silence its heartbeats) with it.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Add or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Del,
}

/// One batch for the netlink thread, and where its failures go.
struct Job {
    op: Op,
    vips: Vec<IpAddr>,
    done: std_mpsc::Sender<Vec<(IpAddr, Error)>>,
}

/// Adds and removes host addresses (`/32`, `/128`) on one interface (`lo`)
/// through an rtnetlink connection on its own thread.
#[derive(Debug)]
pub struct HostRoutes {
    jobs: mpsc::UnboundedSender<Job>,
    ifindex: u32,
}

impl HostRoutes {
    /// Opens the connection (on its thread) for interface `ifname`.
    pub fn open(ifname: &str) -> Result<HostRoutes> {
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .map_err(|e| Error::sys(format!("ifindex of {ifname}"), e.into()))?;
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let (opened, open_rx) = std_mpsc::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name("rtnetlink".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (conn, handle, _) = match rtnetlink::new_connection() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = opened.send(Err(e));
                            return;
                        }
                    };
                    tokio::spawn(conn);
                    let _ = opened.send(Ok(()));
                    while let Some(job) = rx.recv().await {
                        let failed = run(&handle, ifindex, job.op, &job.vips).await;
                        let _ = job.done.send(failed);
                    }
                });
            })
            .map_err(|e| Error::sys("spawn the rtnetlink thread", e))?;
        match open_rx.recv() {
            Ok(Ok(())) => Ok(HostRoutes { jobs, ifindex }),
            Ok(Err(e)) => Err(Error::sys("open an rtnetlink socket", e)),
            Err(_) => Err(Error::sys(
                "open an rtnetlink socket",
                io::Error::other("the rtnetlink thread ended"),
            )),
        }
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Adds (or replaces, so an address already there is no error) each
    /// VIP as a host address; returns the ones that failed.
    pub fn add_many(&self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        self.batch(Op::Add, vips)
    }

    /// Removes each VIP; an absent one is no failure. Returns the ones
    /// that failed.
    pub fn del_many(&self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        self.batch(Op::Del, vips)
    }

    fn batch(&self, op: Op, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        // Nothing to do is no round trip: the engine's turns and every
        // received frame end here.
        if vips.is_empty() {
            return Vec::new();
        }
        let all_failed = |why: &str| {
            vips.iter()
                .map(|v| {
                    (
                        *v,
                        Error::sys(what(op, *v), io::Error::other(why.to_owned())),
                    )
                })
                .collect()
        };
        let (done, answer) = std_mpsc::channel();
        let job = Job {
            op,
            vips: vips.to_vec(),
            done,
        };
        if self.jobs.send(job).is_err() {
            return all_failed("the rtnetlink thread ended");
        }
        match answer.recv_timeout(BATCH_TIMEOUT) {
            Ok(failed) => failed,
            Err(_) => all_failed("rtnetlink did not answer in time"),
        }
    }
}

/// `ip addr`-like wording for logs: "add 10.0.0.1/32 to lo".
fn what(op: Op, vip: IpAddr) -> String {
    match op {
        Op::Add => format!("rtnetlink: add {} to lo", host_net(vip)),
        Op::Del => format!("rtnetlink: remove {} from lo", host_net(vip)),
    }
}

/// The VIP as a host address.
pub fn host_net(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The `RTM_NEWADDR`/`RTM_DELADDR` body for `vip` on `ifindex`. IPv6 gets
/// NODAD: a VIP on `lo` has nobody to detect a duplicate with, and a
/// tentative address would not accept traffic for a second.
fn host_addr(ifindex: u32, vip: IpAddr) -> AddressMessage {
    match vip {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(ifindex)
            .address(a, 32)
            .build(),
        IpAddr::V6(a) => {
            let mut m = AddressMessageBuilder::<Ipv6Addr>::new()
                .index(ifindex)
                .address(a, 128)
                .build();
            m.header.flags |= AddressHeaderFlags::Nodad;
            m
        }
    }
}

/// True if a delete failed only because the address was not there.
fn is_absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.raw_code().abs() == nix::errno::Errno::EADDRNOTAVAIL as i32)
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// Sends every request of the batch, [`WINDOW`] at a time, and collects
/// the failures.
async fn run(handle: &Handle, ifindex: u32, op: Op, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
    stream::iter(vips.iter().copied())
        .map(|vip| {
            let h = handle.address();
            let msg = host_addr(ifindex, vip);
            async move {
                let r = match op {
                    Op::Add => {
                        let mut req = h.add(ifindex, vip, msg.header.prefix_len).replace();
                        *req.message_mut() = msg;
                        req.execute().await
                    }
                    Op::Del => match h.del(msg).execute().await {
                        Err(e) if is_absent(&e) => Ok(()),
                        r => r,
                    },
                };
                r.err().map(|e| (vip, Error::sys(what(op, vip), to_io(e))))
            }
        })
        .buffer_unordered(WINDOW)
        .filter_map(|r| async move { r })
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressAttribute;

    #[test]
    fn host_addresses_are_full_length_and_v6_skips_dad() {
        let v4 = host_addr(1, "10.0.0.7".parse().unwrap());
        assert_eq!(v4.header.prefix_len, 32);
        assert_eq!(v4.header.index, 1);
        assert!(v4
            .attributes
            .contains(&AddressAttribute::Local("10.0.0.7".parse().unwrap())));
        assert!(!v4.header.flags.contains(AddressHeaderFlags::Nodad));
        let v6 = host_addr(1, "fd00::7".parse().unwrap());
        assert_eq!(v6.header.prefix_len, 128);
        assert!(v6.header.flags.contains(AddressHeaderFlags::Nodad));
        assert_eq!(host_net("fd00::7".parse().unwrap()), "fd00::7/128");
    }

    #[test]
    fn only_eaddrnotavail_means_absent() {
        let err = |code: i32| {
            let mut m = rtnetlink::packet_core::ErrorMessage::default();
            m.code = std::num::NonZeroI32::new(code);
            rtnetlink::Error::NetlinkError(m)
        };
        assert!(is_absent(&err(-libc::EADDRNOTAVAIL)));
        assert!(!is_absent(&err(-libc::EPERM)));
        assert!(!is_absent(&rtnetlink::Error::RequestFailed));
        assert_eq!(to_io(err(-libc::EPERM)).raw_os_error(), Some(libc::EPERM));
    }
}
