//! The L2 load-balancer part of `flatlan-lab demo`: `flatlan-speaker
//! static` on both lab nodes announcing one VIP, checked from the LAN
//! client the way a phone on the LAN would see it.
//!
//! The speaker is driven through its binary only (config file, status
//! file, signals), so netns-testkit does not depend on the speaker crate.
//! Every speaker is a [`ProcHandle`]: it is signalled by PID, and the
//! handles drop (stopping whatever still runs) before the lab deletes the
//! namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::demo::Report;
use netns_testkit::probe::{arp_neighbors, ping, ping_background, ping_finish};
use netns_testkit::speaker_fleet::{arping, FleetOptions, SpeakerFleet};
use netns_testkit::Lab;
use netns_testkit::ProcHandle;
use netns_testkit::{Error, Result};

/// The demo's VIP: on the LAN, outside the router's DHCP pool and outside
/// both nodes' pod slices (.208/28, .224/28).
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 2, 240);
const HEARTBEAT_MS: u64 = 100;
const DEAD_AFTER: u32 = 3;
/// The client pings every 20 ms, so a lost ping is 20 ms of outage.
const PING_INTERVAL_MS: u64 = 20;

/// Generous bounds: the demo runs on shared 2-core machines, and a slow
/// step must not turn into a failed check. The real figures come from the
/// bench.
const START: Duration = Duration::from_secs(15);
const OWNER: Duration = Duration::from_secs(10);
const EXIT: Duration = Duration::from_secs(5);
/// A graceful handoff that loses more pings than this did not work as
/// make-before-break: a hard failover (3 missed heartbeats, then a claim)
/// loses ~15 or more, so 10 (200 ms) separates the two cleanly while
/// tolerating scheduling hiccups on a busy machine. The target is 0.
const GRACEFUL_MAX_LOST: u32 = 10;

/// The br0 MAC of the node at position `i`.
fn br0_mac(sp: &SpeakerFleet, i: usize) -> Result<String> {
    sp.node(i)?.ns.link_mac("br0")
}

/// The MAC `ns` (the client or the router) has cached for the VIP on
/// its LAN interface, `eth0`.
fn neighbour_mac(ns: &netns_testkit::Netns) -> Result<Option<String>> {
    Ok(arp_neighbors(ns, "eth0")?
        .into_iter()
        .find(|n| n.ip == IpAddr::V4(VIP))
        .and_then(|n| n.mac))
}

/// A ping from the LAN client to the VIP every 20 ms for `secs`, in the
/// background.
fn ping_vip(lab: &Lab, secs: u32) -> Result<ProcHandle> {
    ping_background(
        &lab.client,
        IpAddr::V4(VIP),
        Duration::from_millis(PING_INTERVAL_MS),
        secs,
    )
}

/// Runs the speaker checks on `lab`'s first two nodes and adds them to
/// `report`. Every check runs even if an earlier one failed.
pub(crate) fn run(lab: &Lab, bin: Result<PathBuf>, report: &mut Report) {
    let bin = match bin {
        Ok(b) => b,
        Err(e) => {
            report.check("speaker: flatlan-speaker binary", || Err(e));
            return;
        }
    };
    let fleet = SpeakerFleet::with_options(
        lab,
        bin,
        vec![IpAddr::V4(VIP)],
        FleetOptions {
            heartbeat_ms: HEARTBEAT_MS,
            dead_after: DEAD_AFTER,
            assign: true,
        },
    );
    let mut sp = match fleet {
        Ok(s) => s,
        Err(e) => {
            report.check("speaker: scratch directory", || Err(e));
            return;
        }
    };
    report.speaker.push(format!(
        "flatlan-speaker static on node1 and node2: VIP {VIP} on br0, unicast heartbeats \
         every {HEARTBEAT_MS} ms (HMAC, shared secret), dead after {DEAD_AFTER} missed"
    ));
    let mut owner: Option<usize> = None;

    report.check(
        format!("speaker: node1 and node2 elect one owner of {VIP}"),
        || {
            let started = Instant::now();
            sp.start_all(START)?;
            let o = sp.wait_owner(IpAddr::V4(VIP), OWNER)?;
            owner = Some(o);
            let mac = sp
                .status(o)?
                .vips
                .get(&IpAddr::V4(VIP))
                .and_then(|v| v.mac.clone())
                .unwrap_or_default();
            Ok(format!(
                "{} announces it on br0 as {mac}, {:.0?} after the speakers started",
                sp.name(o),
                started.elapsed()
            ))
        },
    );

    report.check(
        "speaker: client pings the VIP; its ARP entry is the owner's br0 MAC",
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = br0_mac(&sp, o)?;
            let r = ping(&lab.client, VIP.into(), 3, Duration::from_secs(10))?;
            let got = neighbour_mac(&lab.client)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("client's neighbour entry for {VIP}"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(o)),
                });
            }
            Ok(format!(
                "{}/{} replies; {VIP} lladdr {want} ({} br0)",
                r.received,
                r.transmitted,
                sp.name(o)
            ))
        },
    );

    report.check(
        format!("speaker: arping {VIP} from the client: exactly one responder"),
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = br0_mac(&sp, o)?;
            let r = arping(
                &lab.client,
                "eth0",
                IpAddr::V4(VIP),
                &["-c", "3", "-w", "5"],
            )?;
            if r.macs != [want.clone()] {
                return Err(Error::Probe {
                    what: "arping responders".into(),
                    detail: format!("{:?}, expected only {want}", r.macs),
                });
            }
            Ok(format!(
                "`arping -b -c 3 -I eth0 {VIP}`: {} replies, all from {want} ({})",
                r.replies,
                sp.name(o)
            ))
        },
    );

    report.check(
        "speaker: the router's ARP entry for the VIP is the owner's br0 MAC",
        || {
            let o = owner.ok_or_else(no_owner)?;
            let want = br0_mac(&sp, o)?;
            // The router resolves the VIP like any LAN host would when it
            // has traffic for it (replies to the internet come back this way).
            let r = ping(&lab.router, VIP.into(), 2, Duration::from_secs(10))?;
            let got = neighbour_mac(&lab.router)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("router's neighbour entry for {VIP}"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(o)),
                });
            }
            Ok(format!(
                "{}/{} replies; router eth0: {VIP} lladdr {want} ({})",
                r.received,
                r.transmitted,
                sp.name(o)
            ))
        },
    );

    report.check(
        "speaker: owner crashes (SIGKILL, cable out): failover seen by the client",
        || {
            let old = owner.ok_or_else(no_owner)?;
            let old_node = sp.node(old)?;
            const SECS: u32 = 6;
            let pinger = ping_vip(lab, SECS)?;
            thread::sleep(Duration::from_secs(1));
            sp.crash(old)?;
            // A dead machine neither answers nor forwards: pull its cable,
            // and take the VIP off its `lo` as a crash would (a SIGKILLed
            // speaker leaves it there, and the node would keep answering
            // pings for it until the GARP moves the client, hiding the
            // failover time; lb-speaker/tests/lab.rs does the same).
            let vip_host = format!("{VIP}/32");
            sp.set_uplink(old, false)?;
            old_node
                .ns
                .exec_ok(&["ip", "addr", "del", vip_host.as_str(), "dev", "lo"])?;
            let run = ping_finish(pinger, SECS)?;
            let new = sp.wait_owner(IpAddr::V4(VIP), OWNER)?;
            owner = Some(new);
            if new == old {
                return Err(Error::Probe {
                    what: "failover".into(),
                    detail: format!("{} still owns {VIP}", sp.name(old)),
                });
            }
            // Resumed: the last answered ping is near the end of the run.
            if !run.resumed() {
                return Err(Error::Probe {
                    what: "pings to the VIP after the crash".into(),
                    detail: format!(
                        "did not resume: {} of {} answered, last seq {:?}\n{}",
                        run.received(),
                        run.sent,
                        run.replies.last().map(|r| r.0),
                        sp.log_tails(8)
                    ),
                });
            }
            let want = br0_mac(&sp, new)?;
            let got = neighbour_mac(&lab.client)?;
            if got.as_deref() != Some(want.as_str()) {
                return Err(Error::Probe {
                    what: format!("client's neighbour entry for {VIP} after the failover"),
                    detail: format!("{got:?}, but {} owns it with {want}", sp.name(new)),
                });
            }
            let ms = run.longest_silence_ms();
            Ok(format!(
                "{} -> {}: {:.0} ms without replies ({} pings lost in a row; \
                 target <= 1000 ms: {}); {}/{} answered; client now caches {want}",
                sp.name(old),
                sp.name(new),
                ms,
                run.longest_gap(),
                if ms <= 1000.0 { "met" } else { "missed" },
                run.received(),
                run.sent,
            ))
        },
    );

    report.check(
        "speaker: graceful handoff (SIGTERM the owner): lost pings",
        || {
            // The crashed node comes back: cable in, speaker restarted. It
            // may win the VIP back (rendezvous hashing), itself a
            // make-before-break move; let that settle first.
            let cur = owner.ok_or_else(no_owner)?;
            for i in 0..sp.len() {
                if !sp.is_running(i) {
                    sp.set_uplink(i, true)?;
                    sp.start(i, START)?;
                }
            }
            // Two heartbeats of listening, the takeover, then the status
            // file; 2 s covers it with room to spare.
            thread::sleep(Duration::from_secs(2));
            let from = sp.wait_owner(IpAddr::V4(VIP), OWNER)?;
            owner = Some(from);
            const SECS: u32 = 4;
            let pinger = ping_vip(lab, SECS)?;
            thread::sleep(Duration::from_secs(1));
            let st = sp.terminate(from, EXIT)?;
            let run = ping_finish(pinger, SECS)?;
            let to = sp.wait_owner(IpAddr::V4(VIP), OWNER)?;
            owner = Some(to);
            let (lost, sent) = (run.lost(), run.sent);
            let handed_over = sp.log(from).contains("handed_over=true");
            let back = if cur == from {
                String::new()
            } else {
                format!("{} took the VIP back on restart; ", sp.name(from))
            };
            let detail = format!(
                "{back}{} -> {}: {lost} of {sent} pings lost (target 0), longest silence \
                 {:.0} ms; old owner exited with {st}, make-before-break: {handed_over}",
                sp.name(from),
                sp.name(to),
                run.longest_silence_ms(),
            );
            if to == from || !st.success() || !handed_over || lost > GRACEFUL_MAX_LOST {
                return Err(Error::Probe {
                    what: "graceful handoff".into(),
                    detail: format!("{detail}\n{}", sp.log_tails(8)),
                });
            }
            Ok(detail)
        },
    );

    sp.stop_all(EXIT);
}

fn no_owner() -> Error {
    Error::Probe {
        what: format!("owner of {VIP}"),
        detail: "no speaker announces it (see the first speaker check)".into(),
    }
}
