//! Speaker benchmarks in network namespaces (root; nothing touches the host
//! namespace): failover p50/p95 after a crash of the owner, lost pings on a
//! graceful handoff, config-to-first-GARP, ARP reply latency, and RSS with
//! 1,000 VIPs. Prints a Markdown table for docs/BENCHMARKS.md.
//!
//! `cargo bench -p flatlan-speaker --bench speaker -- [TRIALS]` (default 20).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ping_bg(lab: &Lab, secs: u32) -> std::process::Child {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client.name,
            "ping",
            "-n",
            "-i",
            "0.02",
            "-W",
            "0.5",
            "-w",
        ])
        .arg(secs.to_string())
        .arg(VIP4)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// One crash trial: client-observed outage in ms (20 ms resolution).
fn crash_trial(lab: &mut Lab) -> f64 {
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    lab.client.ok(&["ping", "-c", "1", "-W", "1", VIP4]);
    let ping = ping_bg(lab, 3);
    std::thread::sleep(Duration::from_millis(800));
    lab.speaker(owner).signal(Signal::SIGKILL);
    lab.nodes[owner].ok(&["ip", "addr", "del", &format!("{VIP4}/32"), "dev", "lo"]);
    lab.speaker(owner).wait(Duration::from_secs(2));
    let out = ping.wait_with_output().unwrap();
    let (_, seqs) = ping_seqs(&String::from_utf8_lossy(&out.stdout));
    lab.start(owner, &[VIP4], "");
    std::thread::sleep(Duration::from_millis(1200));
    f64::from(longest_gap(&seqs) * 20)
}

fn handoff_trial(lab: &mut Lab) -> u32 {
    let owner = lab.wait_owner(VIP4, Duration::from_secs(5));
    lab.client.ok(&["ping", "-c", "1", "-W", "1", VIP4]);
    let ping = ping_bg(lab, 3);
    std::thread::sleep(Duration::from_millis(800));
    lab.speaker(owner).signal(Signal::SIGTERM);
    lab.speaker(owner).wait(Duration::from_secs(3));
    let out = ping.wait_with_output().unwrap();
    let (sent, seqs) = ping_seqs(&String::from_utf8_lossy(&out.stdout));
    lab.start(owner, &[VIP4], "");
    std::thread::sleep(Duration::from_millis(1200));
    sent.saturating_sub(seqs.len() as u32)
}

fn main() {
    let trials: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);

    let mut lab = Lab::new(2);
    lab.start(0, &[VIP4], "");
    lab.start(1, &[VIP4], "");
    let mut crash: Vec<f64> = (0..trials).map(|_| crash_trial(&mut lab)).collect();
    eprintln!("crash failover ms: {crash:?}");
    let mut lost: Vec<u32> = (0..trials).map(|_| handoff_trial(&mut lab)).collect();
    eprintln!("graceful handoff lost pings: {lost:?}");
    drop(lab);

    // Config to first GARP: spawn to the first GARP seen by the client.
    let mut first = Vec::new();
    for _ in 0..5.min(trials) {
        let mut lab = Lab::new(1);
        let cap = capture_timed(&lab.client, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        lab.start(0, &[VIP4], "");
        let vip: std::net::Ipv4Addr = VIP4.parse().unwrap();
        let at = cap.join().unwrap().into_iter().find_map(|(t, f)| {
            let (_, a) = flatlan_ipam::frame::ArpPacket::parse_frame(&f).ok()?;
            (a.is_gratuitous() && a.spa == vip).then_some(t)
        });
        if let Some(t) = at {
            first.push(t.duration_since(t0).as_secs_f64() * 1000.0);
        }
    }

    // ARP reply latency, as arping sees it.
    let mut lab = Lab::new(1);
    lab.start(0, &[VIP4], "");
    lab.wait_owner(VIP4, Duration::from_secs(5));
    let mut arp_us: Vec<f64> = lab
        .client
        .run(|| {
            use flatlan_ipam::frame::{ArpOp, ArpPacket};
            let ifs = flatlan_speaker::iface::discover().unwrap();
            let eth0 = &ifs["eth0"];
            let sock = flatlan_speaker::packet::PacketSocket::open(eth0.index, 0x0806).unwrap();
            let vip: std::net::Ipv4Addr = VIP4.parse().unwrap();
            let me: std::net::Ipv4Addr = CLIENT_IP.parse().unwrap();
            let req = ArpPacket::request(eth0.mac, me, vip).to_frame();
            let mut buf = [0u8; 256];
            let mut out = Vec::new();
            for _ in 0..200 {
                let t = Instant::now();
                sock.send(&req).unwrap();
                while t.elapsed() < Duration::from_millis(100) {
                    if let Ok(Some(n)) = sock.recv(&mut buf) {
                        if let Ok((_, a)) = ArpPacket::parse_frame(&buf[..n]) {
                            if a.op == ArpOp::Reply && a.spa == vip {
                                out.push(t.elapsed().as_secs_f64() * 1e6);
                                break;
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            out
        })
        .join()
        .unwrap();
    let rss1 = rss_mb(lab.speaker(0).pid());
    drop(lab);

    // RSS with 1,000 VIPs.
    let mut lab = Lab::new(1);
    lab.nodes[0].ok(&["ip", "addr", "add", "10.78.0.1/16", "dev", "eth0"]);
    let vips: Vec<String> = (0..1000)
        .map(|i| format!("10.78.{}.{}", 1 + i / 250, 1 + i % 250))
        .collect();
    let refs: Vec<&str> = vips.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    lab.start(0, &refs, "");
    let deadline = Instant::now() + Duration::from_secs(60);
    let all_owned = loop {
        let n = lab.speaker(0).status().map(|s| {
            s["vips"].as_array().map_or(0, |v| {
                v.iter().filter(|x| x["state"] == "announcing").count()
            })
        });
        if n == Some(1000) {
            break t0.elapsed();
        }
        assert!(Instant::now() < deadline, "1000 VIPs not announced in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2));
    let rss1000 = rss_mb(lab.speaker(0).pid());
    drop(lab);

    let lost_f: Vec<f64> = lost.iter().map(|l| f64::from(*l)).collect();
    lost.sort();
    println!("| metric | value | target |");
    println!("|---|---|---|");
    println!("| failover after owner crash, client-observed (n={trials}) | p50 {:.0} ms, p95 {:.0} ms | p95 ≤ 1 s |", pct(&mut crash.clone(), 0.5), pct(&mut crash, 0.95));
    println!(
        "| graceful handoff, lost 20 ms pings (n={trials}) | {:?} (mean {:.2}) | 0 |",
        lost,
        lost_f.iter().sum::<f64>() / lost_f.len().max(1) as f64
    );
    println!(
        "| start to first GARP (n={}) | p50 {:.0} ms | ≤ 100 ms |",
        first.len(),
        pct(&mut first, 0.5)
    );
    println!(
        "| ARP reply latency, request-to-reply RTT from the client (AF_PACKET) (n={}) | p50 {:.0} µs, p99 {:.0} µs | p99 ≤ 1 ms |",
        arp_us.len(),
        pct(&mut arp_us.clone(), 0.5),
        pct(&mut arp_us, 0.99)
    );
    println!(
        "| 1,000 VIPs | all announced after {:.1} s, RSS {rss1000:.1} MB (1 VIP: {rss1:.1} MB) | RSS ≤ 20 MB |",
        all_owned.as_secs_f64()
    );
}

fn rss_mb(pid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}
