//! The speaker on a poor LAN (issue 12, "fast and calm on a poor LAN"):
//! part of `flatlan-lab speaker-bench`.
//!
//! Conditions, in the lab's own namespaces only:
//!
//! - **5% heartbeat loss**: in every node namespace, an iptables rule
//!   drops 5% of the UDP datagrams arriving on the heartbeat port at
//!   random (`-m statistic --mode random`; this kernel has no netem). Each
//!   heartbeat crosses one such rule, in its receiver's namespace.
//! - **A busy node**: node 1's speaker is pinned to one CPU with
//!   [`BUSY_LOOPS`] busy-loop shells started in node 1's namespace and
//!   pinned to that CPU, as on a Raspberry Pi whose CPUs are saturated.
//!   (Namespaces share the host's CPUs; pinning is what confines the load
//!   to one node here without cgroups. The other node's speaker is not
//!   pinned, and shares the machine with whatever else runs.)
//!
//! Figures:
//!
//! - **False failovers**: both speakers run for `--lossy-secs` (600 by
//!   default) with no fault; every "member ... dead" either logs is a live
//!   peer declared dead, which moves a VIP when the declared one owns it.
//!   `false_failovers_10min` is that count, scaled to 10 minutes when the
//!   run was shorter (`false_failovers` and `lossy_run_secs` give the raw
//!   figures).
//! - **Failover under the conditions**: the crash trials of the clean
//!   figures, run on this lab (`failover_p95_ms_lossy`).

use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use netns_testkit::speaker::SpeakerLab;
use netns_testkit::{ProcHandle, Result};

use crate::speaker_bench::{
    bench_err, crash_trial, quantiles, BenchOptions, BenchReport, CRASH_TIMEOUT_MS, VIP4_S,
};

/// The loss on each node's heartbeat input.
pub const LOSS: f64 = 0.05;
/// The busy node.
const BUSY_NODE: usize = 1;
/// The CPU the busy node's speaker and its load share.
const BUSY_CPU: &str = "1";
/// Busy loops on that CPU: two, so the speaker gets a third of it when all
/// want to run.
pub const BUSY_LOOPS: usize = 2;
/// What the speaker logs when it declares a member dead (engine.rs).
const DEATH_LINE: &str = "member missed its heartbeats: dead";

/// Drops [`LOSS`] of the heartbeats arriving in each node's namespace.
fn add_loss(lab: &SpeakerLab) -> Result<()> {
    let p = format!("{LOSS}");
    for ns in &lab.nodes {
        ns.exec_ok(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "7946",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ])?;
    }
    Ok(())
}

/// Starts the busy loops in the busy node's namespace (they stop when the
/// handles drop).
fn start_load(lab: &SpeakerLab) -> Result<Vec<ProcHandle>> {
    (0..BUSY_LOOPS)
        .map(|_| {
            lab.nodes[BUSY_NODE].spawn(&[
                "taskset",
                "-c",
                BUSY_CPU,
                "sh",
                "-c",
                "while :; do :; done",
            ])
        })
        .collect()
}

/// Pins every thread of the busy node's speaker to the loaded CPU (again
/// after each restart).
fn pin_busy_speaker(lab: &mut SpeakerLab) -> Result<()> {
    let pid = lab.speaker(BUSY_NODE)?.pid().to_string();
    lab.nodes[BUSY_NODE].exec_ok(&["taskset", "-a", "-p", "-c", BUSY_CPU, &pid])?;
    Ok(())
}

/// Death declarations in both speakers' logs so far.
fn deaths(lab: &SpeakerLab) -> usize {
    lab.speakers
        .iter()
        .flatten()
        .map(|s| s.log().matches(DEATH_LINE).count())
        .sum()
}

/// Runs the poor-LAN figures into `r`: the calm run, then the crash
/// trials. `opts.lossy_secs == 0` skips them.
pub fn run(opts: &BenchOptions, r: &mut BenchReport) -> Result<()> {
    if opts.lossy_secs == 0 {
        return Ok(());
    }
    let mut lab = SpeakerLab::new(&opts.speaker, 2)?;
    lab.set_timers(&opts.timers);
    add_loss(&lab)?;
    let _load = start_load(&lab)?;
    lab.start(0, &[VIP4_S], "")?;
    lab.start(1, &[VIP4_S], "")?;
    pin_busy_speaker(&mut lab)?;
    lab.wait_owner(
        VIP4_S
            .parse::<IpAddr>()
            .map_err(|e| bench_err(e.to_string()))?,
        Duration::from_secs(10),
    )?;
    // Both have met; from here on any death is a false one.
    thread::sleep(Duration::from_secs(1));
    let before = deaths(&lab);
    let t0 = Instant::now();
    let total = Duration::from_secs(opts.lossy_secs);
    while let Some(left) = total.checked_sub(t0.elapsed()) {
        thread::sleep(left.min(Duration::from_secs(60)));
        eprintln!(
            "poor LAN: {:.0} s of {}, false failovers so far: {}",
            t0.elapsed().as_secs_f64(),
            opts.lossy_secs,
            deaths(&lab) - before
        );
        if left <= Duration::from_secs(60) {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = deaths(&lab) - before;
    r.false_failovers = Some(n);
    r.lossy_run_secs = Some(secs);
    r.false_failovers_10min = Some(n as f64 * 600.0 / secs.max(1.0));
    if n > 0 {
        eprintln!("poor LAN: the speakers' logs:\n{}", lab.logs());
    }

    for i in 0..opts.trials {
        let got = crash_trial(&mut lab)?;
        pin_busy_speaker(&mut lab)?;
        match got {
            Some(ms) => r.failover_ms_lossy.push(ms),
            None => r.failover_failed_trials_lossy += 1,
        }
        eprintln!(
            "poor LAN crash trial {}/{}: {}",
            i + 1,
            opts.trials,
            got.map_or_else(
                || "FAILED: no reply after the kill".into(),
                |ms| format!("{ms:.0} ms")
            )
        );
    }
    (r.failover_p50_ms_lossy, r.failover_p95_ms_lossy) = quantiles(
        &r.failover_ms_lossy,
        r.failover_failed_trials_lossy,
        CRASH_TIMEOUT_MS,
    );
    Ok(())
}
