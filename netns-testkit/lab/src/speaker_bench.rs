//! `flatlan-lab speaker-bench`: the speaker's figures, measured with the
//! real `flatlan-speaker` binary on netns-testkit's [`SpeakerLab`] (root;
//! nothing touches the host namespace). `flatlan-lab bench` (its speaker
//! figures), `flatlan-speaker bench` (which execs `flatlan-lab
//! speaker-bench`) and `cargo bench -p flatlan-speaker --bench speaker` all
//! run this.
//!
//! - **Failover after a crash**, client-observed: the client pings the VIP
//!   every 20 ms (`ping -D`); the owner is SIGKILLed and its VIP taken off
//!   `lo` (a dead machine stops answering; a bare SIGKILL would leave the
//!   kernel answering on the old MAC and hide the outage). The figure is
//!   the time from the kill to the first reply after the outage, with the
//!   ping interval (20 ms) as resolution.
//! - **Graceful handoff**: lost pings when the owner gets SIGTERM.
//! - **Config to first GARP**: a running speaker is given one more VIP
//!   (config rewritten, SIGHUP, as a Service getting an address will do);
//!   from the signal to the first GARP for it the client captures. This is
//!   the probe window plus the speaker's reaction.
//! - **Start to first GARP**: from spawning the daemon to the first GARP
//!   the client captures: a starting daemon first listens two heartbeat
//!   intervals for live peers, so it never claims a VIP a peer owns.
//! - **ARP reply latency**: request-to-reply round trip from the client
//!   over `AF_PACKET`.
//! - **RSS with 1,000 VIPs**, once all are announced.
//!
//! - **On a poor LAN** (5% heartbeat loss, a busy node): false failovers
//!   in a `--lossy-secs` run (10 minutes by default) and failover after a
//!   crash ([`crate::speaker_bench_lossy`]).
//!
//! Every lab runs the daemon's default timers.
//!
//! A trial that measures nothing (pings never resume, no GARP seen) is a
//! failure, not a missing sample: it is counted (`failed_trials`) and enters
//! the percentiles as its trial's timeout, the longest outage the trial
//! could observe (a lower bound on the real one). Dropping it would make
//! the p95 look better exactly when the speaker did worst.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flatlan_l2::frame::{ArpOp, ArpPacket, EtherType};
use flatlan_l2::socket::{FrameSocket, PacketSocket};
use flatlan_l2::Error as L2Error;
use netns_testkit::probe::{ping_background, ping_finish};
use netns_testkit::segment::SEGMENT_CLIENT_IP;
use netns_testkit::speaker::SpeakerLab;
use netns_testkit::speaker_fleet::rss_kib;
use netns_testkit::{Error, Netns, ProcHandle, Result};
use nix::sys::signal::Signal;
use serde::Serialize;

/// The VIP the trials fail over: on the segment, after its hosts.
pub(crate) const VIP4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub(crate) const VIP4_S: &str = "10.77.0.100";
/// The client pings every 20 ms, so a lost ping is 20 ms of outage.
const PING_INTERVAL: Duration = Duration::from_millis(20);

pub(crate) fn bench_err(detail: impl Into<String>) -> Error {
    Error::Probe {
        what: "speaker bench".into(),
        detail: detail.into(),
    }
}

fn sock_err(e: L2Error) -> Error {
    bench_err(format!("packet socket on the client's eth0: {e}"))
}

/// Runs `f` in `ns` on a thread of its own, so the trial goes on meanwhile.
pub(crate) fn in_background<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> thread::JoinHandle<Result<T>> {
    let ns = ns.clone();
    thread::spawn(move || ns.run(f)?)
}

/// Joins an [`in_background`] thread, turning a panic into an error.
pub(crate) fn join<T>(h: thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| bench_err("namespace thread panicked"))?
}

/// How long the client pings in a crash or handoff trial, in seconds.
const PING_SECS: u32 = 3;
/// From the start of the pings to the kill.
const BEFORE_KILL: Duration = Duration::from_millis(800);
/// A crash trial without recovery counts as this: the rest of the ping
/// window after the kill.
pub(crate) const CRASH_TIMEOUT_MS: f64 = (PING_SECS * 1000 - BEFORE_KILL.as_millis() as u32) as f64;
/// How long the client listens for the first GARP.
const GARP_CAPTURE: Duration = Duration::from_secs(3);
/// From opening the capture to spawning the daemon.
pub(crate) const GARP_LEAD: Duration = Duration::from_millis(100);
/// A GARP trial that saw no GARP counts as this: the capture window left
/// after the spawn.
pub(crate) const GARP_TIMEOUT_MS: f64 = (GARP_CAPTURE.as_millis() - GARP_LEAD.as_millis()) as f64;
/// How long the client listens for the GARP of a VIP added by a reload.
const RELOAD_CAPTURE: Duration = Duration::from_secs(1);
/// A reload trial that saw no GARP counts as this.
pub(crate) const RELOAD_TIMEOUT_MS: f64 =
    (RELOAD_CAPTURE.as_millis() - GARP_LEAD.as_millis()) as f64;
/// The subnet the reload trials' VIPs come from, added to the node's
/// `eth0` (so the speaker announces them there), and its address there.
const RELOAD_NET: &str = "10.79.0.1/16";
/// Reload trials' VIPs per /24 of `RELOAD_NET` (.1 to .250).
const RELOAD_VIPS_PER_24: usize = 250;
/// The most reload trials: one VIP each, never reused (a VIP the speaker
/// has probed once is claimed without a probe, and would measure less).
pub const MAX_RELOAD_TRIALS: usize = 254 * RELOAD_VIPS_PER_24;

/// Trial `i`'s VIP: 10.79.1.1, 10.79.1.2, ... 10.79.1.250, 10.79.2.1, ...
fn reload_vip(i: usize) -> Option<Ipv4Addr> {
    if i >= MAX_RELOAD_TRIALS {
        return None;
    }
    let third = u8::try_from(1 + i / RELOAD_VIPS_PER_24).ok()?;
    let fourth = u8::try_from(1 + i % RELOAD_VIPS_PER_24).ok()?;
    Some(Ipv4Addr::new(10, 79, third, fourth))
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `flatlan-speaker` binary to measure.
    pub speaker: PathBuf,
    /// Crash and handoff trials each (the issue asks for >= 20).
    pub trials: usize,
    /// Start-to-first-GARP trials (each builds a fresh lab).
    pub garp_trials: usize,
    /// Config-to-first-GARP trials (one running speaker, one new VIP each).
    pub reload_trials: usize,
    /// ARP requests for the reply latency.
    pub arp_requests: usize,
    /// Seconds of the poor-LAN run that counts false failovers
    /// ([`crate::speaker_bench_lossy`]); 0 skips the poor-LAN figures.
    pub lossy_secs: u64,
    /// Link-up-to-first-GARP trials ([`crate::speaker_bench_link`]).
    pub link_trials: usize,
    /// Timer lines for every speaker's config (YAML, e.g.
    /// `heartbeatInterval: 100ms` and `deadAfter: 3`, one per line); empty
    /// runs the daemon's defaults. Lets one tree be measured with another
    /// tree's timers, to tell a timer change from a code change.
    pub timers: String,
    /// Only the crash trials (a quick failover figure while tuning the
    /// failure detector); every other figure stays empty.
    pub failover_only: bool,
}

impl BenchOptions {
    /// The defaults: 20 trials, 5 start and 20 reload GARP trials, 200 ARP
    /// requests, a 10-minute poor-LAN run.
    pub fn new(speaker: PathBuf) -> Self {
        BenchOptions {
            speaker,
            trials: 20,
            garp_trials: 5,
            reload_trials: 20,
            arp_requests: 200,
            lossy_secs: 600,
            link_trials: 10,
            timers: String::new(),
            failover_only: false,
        }
    }
}

/// The figures. The first five keys are the contract with `flatlan-lab
/// bench` (its speaker figures, bench_speaker.rs); the rest is detail.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    pub failover_p50_ms: Option<f64>,
    pub failover_p95_ms: Option<f64>,
    /// Config to first GARP on a running speaker, p50 (see the module doc).
    pub first_garp_ms: Option<f64>,
    pub arp_reply_p99_ms: Option<f64>,
    pub rss_mb_1000_vips: Option<f64>,
    /// Trials that measured nothing (all figures): see the module doc.
    /// The sum of the per-figure counts, [`BenchReport::total_failed`].
    pub failed_trials: usize,
    /// Crash trials where the pings never resumed; in the failover
    /// percentiles as `CRASH_TIMEOUT_MS` (2.2 s) each.
    pub failover_failed_trials: usize,
    /// Every crash trial that recovered, ms from SIGKILL to the first reply
    /// after it (failed trials are only counted, above).
    pub failover_ms: Vec<f64>,
    /// Lost 20 ms pings per graceful handoff.
    pub handoff_lost_pings: Vec<u32>,
    /// Config to first GARP, p95.
    pub first_garp_p95_ms: Option<f64>,
    /// Every config-to-first-GARP trial that saw one, ms.
    pub first_garp_samples_ms: Vec<f64>,
    /// Reload trials where no GARP was seen; in the percentiles as
    /// `RELOAD_TIMEOUT_MS` each.
    pub first_garp_failed_trials: usize,
    /// Start to first GARP (a starting daemon), p50.
    pub start_to_first_garp_ms: Option<f64>,
    /// Every start-to-first-GARP trial that saw one, ms.
    pub start_garp_samples_ms: Vec<f64>,
    /// Start trials where no GARP was seen; in `start_to_first_garp_ms` as
    /// `GARP_TIMEOUT_MS` (2.9 s) each.
    pub start_garp_failed_trials: usize,
    pub arp_reply_p50_ms: Option<f64>,
    pub arp_replies: usize,
    pub arp_requests: usize,
    pub rss_mb_1_vip: Option<f64>,
    /// Seconds from start until all 1,000 VIPs were announced.
    pub all_1000_announced_s: Option<f64>,
    /// Live peers declared dead on the poor LAN (5% loss, a busy node),
    /// per 10 minutes ([`crate::speaker_bench_lossy`]).
    pub false_failovers_10min: Option<f64>,
    /// Failover after a hard kill on the poor LAN, p95 (failed trials as
    /// `CRASH_TIMEOUT_MS`).
    pub failover_p95_ms_lossy: Option<f64>,
    pub failover_p50_ms_lossy: Option<f64>,
    /// The false failovers counted, and over how long.
    pub false_failovers: Option<usize>,
    pub lossy_run_secs: Option<f64>,
    /// Every poor-LAN crash trial that recovered, ms.
    pub failover_ms_lossy: Vec<f64>,
    pub failover_failed_trials_lossy: usize,
    /// Link up to first GARP ([`crate::speaker_bench_link`]).
    #[serde(flatten)]
    pub link: crate::speaker_bench_link::LinkReport,
}

/// The `p`-quantile (nearest rank on the sorted samples); `None` when
/// there are none.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}

/// The `p`-quantile of a figure's trials: the measured `samples`, and
/// `failed` trials counted as `timeout` each (they lasted at least that).
pub fn percentile_with_failures(
    samples: &[f64],
    failed: usize,
    timeout: f64,
    p: f64,
) -> Option<f64> {
    let mut all = samples.to_vec();
    all.resize(samples.len() + failed, timeout);
    percentile(&all, p)
}

/// The median and the 95th percentile of a figure's trials, failed ones
/// counted as `timeout` (see [`percentile_with_failures`]).
pub fn quantiles(samples: &[f64], failed: usize, timeout: f64) -> (Option<f64>, Option<f64>) {
    let p = |q| percentile_with_failures(samples, failed, timeout, q);
    (p(0.5), p(0.95))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A 20 ms ping from the client to the VIP for `secs`, in the background.
fn ping_bg(lab: &SpeakerLab, secs: u32) -> Result<ProcHandle> {
    ping_background(&lab.client, IpAddr::V4(VIP4), PING_INTERVAL, secs)
}

/// Each node's speaker's "dead" log lines.
fn death_lines(lab: &SpeakerLab) -> Vec<Vec<String>> {
    lab.speakers
        .iter()
        .map(|s| {
            s.as_ref().map_or_else(Vec::new, |s| {
                s.log()
                    .lines()
                    .filter(|l| l.contains("missed its heartbeats"))
                    .map(str::to_owned)
                    .collect()
            })
        })
        .collect()
}

/// One crash trial: ms from the SIGKILL to the first reply after it.
pub(crate) fn crash_trial(lab: &mut SpeakerLab) -> Result<Option<f64>> {
    let owner = lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
    // The client must know the VIP first: arp_accept=0 ignores a GARP for
    // an address it has no entry for.
    lab.client
        .exec_ok(&["ping", "-c", "1", "-W", "1", VIP4_S])?;
    let ping = ping_bg(lab, PING_SECS)?;
    thread::sleep(BEFORE_KILL);
    let killed_at = unix_now();
    lab.speaker(owner)?.signal(Signal::SIGKILL)?;
    lab.nodes[owner].exec_ok(&["ip", "addr", "del", &format!("{VIP4}/32"), "dev", "lo"])?;
    lab.speaker(owner)?.wait(Duration::from_secs(2));
    let run = ping_finish(ping, PING_SECS)?;
    let got = run.recovery_ms(killed_at);
    if got.is_none() {
        // Say what the client saw, and what the survivors logged, so a
        // failed trial can be told apart (no loss at all: the killed node
        // was not the one answering; no reply after the loss: no takeover).
        eprintln!(
            "  killed node-{owner}; client: {} sent, {} answered, longest gap {} pings, resumed {}",
            run.sent,
            run.received(),
            run.longest_gap(),
            run.resumed()
        );
        for (i, s) in lab.speakers.iter().enumerate() {
            if let Some(s) = s.as_ref().filter(|_| i != owner) {
                let log = s.log();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                for l in tail.iter().rev() {
                    eprintln!("  node-{i}: {}", l.trim());
                }
            }
        }
    }
    lab.start(owner, &[VIP4_S], "")?;
    // Let the restarted node rejoin (and take the VIP back) before the
    // next trial measures.
    thread::sleep(Duration::from_millis(1200));
    Ok(got)
}

/// One graceful trial: pings lost while the owner hands over on SIGTERM.
fn handoff_trial(lab: &mut SpeakerLab) -> Result<u32> {
    let owner = lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
    lab.client
        .exec_ok(&["ping", "-c", "1", "-W", "1", VIP4_S])?;
    let ping = ping_bg(lab, PING_SECS)?;
    thread::sleep(BEFORE_KILL);
    lab.speaker(owner)?.signal(Signal::SIGTERM)?;
    lab.speaker(owner)?.wait(Duration::from_secs(3));
    let run = ping_finish(ping, PING_SECS)?;
    lab.start(owner, &[VIP4_S], "")?;
    thread::sleep(Duration::from_millis(1200));
    Ok(run.lost())
}

/// Spawn to the first GARP for the VIP the client captures, in ms.
fn first_garp_trial(opts: &BenchOptions) -> Result<Option<f64>> {
    let mut lab = SpeakerLab::new(&opts.speaker, 1)?;
    lab.set_timers(&opts.timers);
    let cap = in_background(&lab.client, move || capture_first_garp(VIP4, GARP_CAPTURE));
    // The capture socket must be open before the daemon starts.
    thread::sleep(GARP_LEAD);
    let t0 = Instant::now();
    lab.start(0, &[VIP4_S], "")?;
    Ok(join(cap)?.map(|t| t.duration_since(t0).as_secs_f64() * 1000.0))
}

/// One running speaker; each trial adds a VIP it has never probed (config
/// rewritten, SIGHUP) and times the signal to the first GARP for it.
fn reload_trials(opts: &BenchOptions, r: &mut BenchReport) -> Result<()> {
    let mut lab = SpeakerLab::new(&opts.speaker, 1)?;
    lab.set_timers(&opts.timers);
    lab.nodes[0].exec_ok(&["ip", "addr", "add", RELOAD_NET, "dev", "eth0"])?;
    lab.start(0, &[VIP4_S], "")?;
    lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
    let mut vips = vec![VIP4_S.to_owned()];
    for i in 0..opts.reload_trials {
        let vip = reload_vip(i).ok_or_else(|| {
            bench_err(format!(
                "at most {MAX_RELOAD_TRIALS} reload trials (one new VIP each)"
            ))
        })?;
        vips.push(vip.to_string());
        let refs: Vec<&str> = vips.iter().map(String::as_str).collect();
        let cap = in_background(&lab.client, move || capture_first_garp(vip, RELOAD_CAPTURE));
        thread::sleep(GARP_LEAD);
        let t0 = Instant::now();
        lab.reconfigure(0, &refs, "")?;
        match join(cap)? {
            Some(t) => r
                .first_garp_samples_ms
                .push(t.duration_since(t0).as_secs_f64() * 1000.0),
            None => r.first_garp_failed_trials += 1,
        }
    }
    (r.first_garp_ms, r.first_garp_p95_ms) = quantiles(
        &r.first_garp_samples_ms,
        r.first_garp_failed_trials,
        RELOAD_TIMEOUT_MS,
    );
    eprintln!(
        "config to first GARP ms: {:?}, failed (no GARP seen): {}",
        r.first_garp_samples_ms, r.first_garp_failed_trials
    );
    Ok(())
}

/// An ARP socket on the client namespace's `eth0`.
fn eth0_arp() -> Result<PacketSocket> {
    PacketSocket::open_filtered("eth0", &[EtherType::ARP]).map_err(sock_err)
}

/// The arrival time of the first GARP for `vip` on `eth0`.
pub(crate) fn capture_first_garp(vip: Ipv4Addr, dur: Duration) -> Result<Option<Instant>> {
    let sock = eth0_arp()?;
    let mut buf = [0u8; 2048];
    let end = Instant::now() + dur;
    // Woken by the frame itself (poll), not by a polling interval.
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(n) = sock.recv_timeout(&mut buf, left).map_err(sock_err)? else {
            break;
        };
        let now = Instant::now();
        if let Ok((_, a)) = ArpPacket::parse_frame(&buf[..n]) {
            if a.is_gratuitous() && a.spa == vip {
                return Ok(Some(now));
            }
        }
    }
    Ok(None)
}

/// ARP request-to-reply round trips (ms) from the client's eth0.
fn arp_round_trips(requests: usize) -> Result<Vec<f64>> {
    let vip = VIP4;
    let sock = eth0_arp()?;
    let req = ArpPacket::request(sock.mac(), SEGMENT_CLIENT_IP, vip).to_frame();
    let mut buf = [0u8; 256];
    let mut out = Vec::new();
    for _ in 0..requests {
        let t = Instant::now();
        let end = t + Duration::from_millis(100);
        sock.send(&req).map_err(sock_err)?;
        // Woken by the reply itself (poll): no sleep to set the resolution.
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Some(n) = sock.recv_timeout(&mut buf, left).map_err(sock_err)? else {
                break;
            };
            if let Ok((_, a)) = ArpPacket::parse_frame(&buf[..n]) {
                if a.op == ArpOp::Reply && a.spa == vip {
                    out.push(t.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(out)
}

/// Resident set size of `pid` in MB (VmRSS).
fn rss_mb(pid: u32) -> Option<f64> {
    rss_kib(pid).map(|kib| kib as f64 / 1024.0)
}

/// Runs everything; progress goes to stderr, figures into the report.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    netns_testkit::require_root()?;
    if opts.reload_trials > MAX_RELOAD_TRIALS {
        return Err(bench_err(format!(
            "{} reload trials asked for, at most {MAX_RELOAD_TRIALS} (one new VIP each)",
            opts.reload_trials
        )));
    }
    let mut r = BenchReport {
        arp_requests: opts.arp_requests,
        ..BenchReport::default()
    };

    let mut lab = SpeakerLab::new(&opts.speaker, 2)?;
    lab.set_timers(&opts.timers);
    lab.start(0, &[VIP4_S], "")?;
    lab.start(1, &[VIP4_S], "")?;
    for i in 0..opts.trials {
        let before = death_lines(&lab);
        let got = crash_trial(&mut lab)?;
        // Which timeout the survivor's failure detector had in force: tells
        // a stretched timeout from a slow takeover. (The killed node's
        // restarted log starts empty, so only a grown log counts.)
        for (old, new) in before.iter().zip(death_lines(&lab)) {
            for line in new.iter().skip(old.len()) {
                eprintln!("  {}", line.trim());
            }
        }
        match got {
            Some(ms) => r.failover_ms.push(ms),
            None => r.failover_failed_trials += 1,
        }
        eprintln!(
            "crash trial {}/{}: {}",
            i + 1,
            opts.trials,
            got.map_or_else(
                || format!("FAILED: no reply after the kill (counted as {CRASH_TIMEOUT_MS} ms)"),
                |ms| format!("{ms:.0} ms")
            )
        );
    }
    if opts.failover_only {
        (r.failover_p50_ms, r.failover_p95_ms) =
            quantiles(&r.failover_ms, r.failover_failed_trials, CRASH_TIMEOUT_MS);
        r.failed_trials = r.total_failed();
        return Ok(r);
    }
    for i in 0..opts.trials {
        r.handoff_lost_pings.push(handoff_trial(&mut lab)?);
        eprintln!(
            "handoff trial {}/{}: lost {:?}",
            i + 1,
            opts.trials,
            r.handoff_lost_pings.last()
        );
    }
    drop(lab);
    (r.failover_p50_ms, r.failover_p95_ms) =
        quantiles(&r.failover_ms, r.failover_failed_trials, CRASH_TIMEOUT_MS);

    for _ in 0..opts.garp_trials {
        match first_garp_trial(opts)? {
            Some(ms) => r.start_garp_samples_ms.push(ms),
            None => r.start_garp_failed_trials += 1,
        }
    }
    (r.start_to_first_garp_ms, _) = quantiles(
        &r.start_garp_samples_ms,
        r.start_garp_failed_trials,
        GARP_TIMEOUT_MS,
    );
    eprintln!(
        "start to first GARP ms: {:?}, failed (no GARP seen): {}",
        r.start_garp_samples_ms, r.start_garp_failed_trials
    );
    reload_trials(opts, &mut r)?;
    r.link = crate::speaker_bench_link::link_trials(opts)?;
    crate::speaker_bench_lossy::run(opts, &mut r)?;
    r.failed_trials = r.total_failed();

    let mut lab = SpeakerLab::new(&opts.speaker, 1)?;
    lab.set_timers(&opts.timers);
    lab.start(0, &[VIP4_S], "")?;
    lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
    let n = opts.arp_requests;
    let arp = lab.client.run(move || arp_round_trips(n))??;
    r.arp_replies = arp.len();
    r.arp_reply_p50_ms = percentile(&arp, 0.5);
    r.arp_reply_p99_ms = percentile(&arp, 0.99);
    r.rss_mb_1_vip = rss_mb(lab.speaker(0)?.pid());
    drop(lab);
    eprintln!(
        "ARP replies {}/{}: p50 {:?} ms, p99 {:?} ms",
        r.arp_replies, n, r.arp_reply_p50_ms, r.arp_reply_p99_ms
    );

    let mut lab = SpeakerLab::new(&opts.speaker, 1)?;
    lab.set_timers(&opts.timers);
    lab.nodes[0].exec_ok(&["ip", "addr", "add", "10.78.0.1/16", "dev", "eth0"])?;
    let vips: Vec<String> = (0..1000)
        .map(|i| format!("10.78.{}.{}", 1 + i / 250, 1 + i % 250))
        .collect();
    let refs: Vec<&str> = vips.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    lab.start(0, &refs, "")?;
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let n = lab
            .speaker(0)?
            .status()
            .map(|s| s.vips.values().filter(|v| v.state == "announcing").count());
        if n == Some(1000) {
            r.all_1000_announced_s = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > deadline {
            return Err(bench_err(format!(
                "1,000 VIPs not all announced within 60 s (announcing: {n:?})"
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Settle: the claim burst's buffers are freed, GARP rounds are done.
    thread::sleep(Duration::from_secs(2));
    r.rss_mb_1000_vips = rss_mb(lab.speaker(0)?.pid());
    Ok(r)
}

impl BenchReport {
    /// Trials that measured nothing, over every figure.
    pub fn total_failed(&self) -> usize {
        self.failover_failed_trials
            + self.start_garp_failed_trials
            + self.first_garp_failed_trials
            + self.failover_failed_trials_lossy
            + self.link.link_up_failed_trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(11.0));
        assert_eq!(percentile(&v, 0.95), Some(19.0));
        assert_eq!(percentile(&v, 1.0), Some(20.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[f64::NAN, 3.0], 0.5), Some(3.0));
    }

    #[test]
    fn a_failed_trial_counts_as_its_timeout() {
        // 18 good trials and 2 that never recovered (10 %): the p95 is the
        // timeout, not the p95 of the survivors.
        let v: Vec<f64> = (1..=18).map(|x| f64::from(x) * 10.0).collect();
        assert_eq!(percentile(&v, 0.95), Some(170.0));
        assert_eq!(
            percentile_with_failures(&v, 2, CRASH_TIMEOUT_MS, 0.95),
            Some(CRASH_TIMEOUT_MS)
        );
        assert_eq!(
            percentile_with_failures(&v, 0, CRASH_TIMEOUT_MS, 0.95),
            Some(170.0)
        );
        // Nothing but failures still yields a figure: the timeout.
        assert_eq!(percentile_with_failures(&[], 2, 2900.0, 0.5), Some(2900.0));
        assert_eq!(percentile_with_failures(&[], 0, 2900.0, 0.5), None);
        assert_eq!(CRASH_TIMEOUT_MS, 2200.0);
    }

    #[test]
    fn quantiles_are_the_median_and_the_95th_percentile_with_failures() {
        let v: Vec<f64> = (1..=18).map(|x| f64::from(x) * 10.0).collect();
        assert_eq!(
            quantiles(&v, 2, CRASH_TIMEOUT_MS),
            (Some(110.0), Some(CRASH_TIMEOUT_MS))
        );
        assert_eq!(quantiles(&[], 0, 1.0), (None, None));
    }

    #[test]
    fn every_reload_trial_gets_a_vip_of_its_own() {
        let vips: std::collections::BTreeSet<Ipv4Addr> =
            (0..MAX_RELOAD_TRIALS).filter_map(reload_vip).collect();
        assert_eq!(vips.len(), MAX_RELOAD_TRIALS);
        let net: ipnet::Ipv4Net = RELOAD_NET.parse().unwrap();
        assert!(vips.iter().all(|v| net.contains(v)
            && v.octets()[3] != 0
            && v.octets()[3] != 255
            && *v != net.addr()));
        assert_eq!(reload_vip(0), Some(Ipv4Addr::new(10, 79, 1, 1)));
        assert_eq!(reload_vip(250), Some(Ipv4Addr::new(10, 79, 2, 1)));
        assert_eq!(reload_vip(MAX_RELOAD_TRIALS), None);
    }

    #[test]
    fn report_has_the_contract_keys() {
        let r = BenchReport {
            failover_p50_ms: Some(350.0),
            ..BenchReport::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "failover_p50_ms",
            "failover_p95_ms",
            "first_garp_ms",
            "arp_reply_p99_ms",
            "rss_mb_1000_vips",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert_eq!(v["failover_p50_ms"], 350.0);
        assert!(v["first_garp_ms"].is_null());
        assert!(r.render_markdown().contains("p50 350 ms"));
        assert_eq!(v["failed_trials"], 0);
        let r = BenchReport {
            failover_ms: vec![300.0; 19],
            failover_failed_trials: 1,
            failed_trials: 1,
            ..BenchReport::default()
        };
        let md = r.render_markdown();
        assert!(md.contains("(n=20, 1 failed, counted as 2200 ms)"), "{md}");
        assert!(md.contains("failed trials: 1"), "{md}");
        assert_eq!(serde_json::to_value(&r).unwrap()["failed_trials"], 1);
        // The poor LAN's keys (issue 12), and its rows once it ran.
        for k in ["false_failovers_10min", "failover_p95_ms_lossy"] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert!(!md.contains("poor LAN"), "{md}");
        let r = BenchReport {
            false_failovers: Some(0),
            lossy_run_secs: Some(600.0),
            false_failovers_10min: Some(0.0),
            failover_ms_lossy: vec![700.0; 19],
            failover_failed_trials_lossy: 1,
            failover_p95_ms_lossy: Some(2200.0),
            ..BenchReport::default()
        };
        let md = r.render_markdown();
        assert!(
            md.contains("false failovers in 600 s | 0 (0.0 per 10 min)"),
            "{md}"
        );
        assert!(
            md.contains("poor LAN: failover after owner crash (n=20, 1 failed"),
            "{md}"
        );
        assert_eq!(r.total_failed(), 1);
    }
}
