//! `flatlan-lab bench`: flatlan against Debian's reference `bridge` +
//! `host-local` plugins, in one run on one lab, interleaved so the noise
//! of a shared machine hits both alike (compare the ratios, not absolute
//! times across runs).
//!
//! Phases, all on node1 of a fresh two-node lab:
//! 1. warm-up: every flatlan address used once, the others a few times
//!    (steady-state ADDs take addresses the detached probe-ahead has just
//!    verified and skip the conflict probe; a released address is never
//!    verified);
//! 2. cold first ADDs on fresh flatlan stores: the synchronous probe;
//! 3. sequential ADD+DEL, rotating flatlan / reference / flatlan without
//!    probe / bare `true` exec every iteration;
//! 4. concurrent bursts, alternating which plugin goes first;
//! 5. iperf3: flatlan pod → LAN device and → node, bare veth, VXLAN;
//! 6. the speaker's figures from [`crate::speaker_bench`].
//!
//! Everything runs in namespaces the bench creates; dropping them (also
//! on error) removes every pod, veth and VXLAN device.

use std::path::PathBuf;
use std::time::Duration;

use crate::bench_cni::{
    burst, burst_baseline, exec_baseline, flatlan_network, range_len, reference_network,
    wait_quiet, BurstResult, Contender, FLATLAN_NOPROBE_RANGE, FLATLAN_RANGE,
};
use crate::bench_datapath::{iperf, Overlay, VethPair, OVERLAY_POD2, VETH_B};
use crate::bench_speaker::speaker_figures;
use crate::bench_stats::{median, ratio, Samples};
use netns_testkit::cni::DEBIAN_CNI_DIR;
use netns_testkit::flatlan;
use netns_testkit::Netns;
use netns_testkit::ScratchDir;
use netns_testkit::DEVICE_IP;
use netns_testkit::{Error, Result};
use netns_testkit::{Lab, LabConfig};

pub use crate::bench_report::{BenchReport, BurstFigures, LatencyPair, Target, Throughput};
pub use crate::bench_speaker::{SpeakerFigures, SPEAKER_KEYS};
pub use crate::bench_stats::Summary;

/// How long to wait for flatlan's detached probe-ahead to finish between
/// phases.
const QUIET: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `flatlan` binary; default: next to the running executable.
    pub plugin: Option<PathBuf>,
    /// Where the reference `bridge` and `host-local` live.
    pub reference_dir: PathBuf,
    /// The `flatlan-speaker` binary; default: next to the running executable.
    pub speaker: Option<PathBuf>,
    /// Measured sequential ADD+DEL per configuration.
    pub iterations: usize,
    /// Unmeasured cycles first; default: one per flatlan address.
    pub warmup: Option<usize>,
    /// Fresh-store first ADDs (each pays the synchronous probe).
    pub cold_trials: usize,
    /// Concurrent ADDs per burst (at most 37: the smallest range).
    pub burst: usize,
    pub burst_rounds: usize,
    pub iperf_seconds: u32,
    /// iperf3 runs per path; the median is reported.
    pub iperf_rounds: usize,
    /// Skip the datapath phase (iperf3).
    pub skip_datapath: bool,
    /// Skip running the speaker's bench.
    pub skip_speaker: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            plugin: None,
            reference_dir: PathBuf::from(DEBIAN_CNI_DIR),
            speaker: None,
            iterations: 200,
            warmup: None,
            cold_trials: 5,
            burst: 30,
            burst_rounds: 3,
            iperf_seconds: 3,
            iperf_rounds: 3,
            skip_datapath: false,
            skip_speaker: false,
        }
    }
}

impl BenchOptions {
    fn validate(&self) -> Result<()> {
        let max_burst = range_len(FLATLAN_NOPROBE_RANGE)
            .min(range_len(crate::bench_cni::REFERENCE_RANGE))
            .min(range_len(FLATLAN_RANGE));
        if self.iterations == 0 {
            return Err(Error::InvalidConfig(
                "--iterations must be at least 1".into(),
            ));
        }
        if self.burst == 0 || self.burst > max_burst {
            return Err(Error::InvalidConfig(format!(
                "--burst must be 1..={max_burst} (the address ranges hold that many)"
            )));
        }
        for tool in ["bridge", "host-local"] {
            let p = self.reference_dir.join(tool);
            if !p.is_file() {
                return Err(Error::InvalidConfig(format!(
                    "reference plugin {} not found: install containernetworking-plugins \
                     (scripts/setup-deps)",
                    p.display()
                )));
            }
        }
        Ok(())
    }
}

/// Runs the whole bench and returns the report (targets evaluated).
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    opts.validate()?;
    let bin_dir = flatlan::plugin_dir(opts.plugin.as_deref())?;
    let speaker = match &opts.speaker {
        Some(p) => Some(p.clone()),
        None => flatlan::sibling_binary("flatlan-speaker").ok(),
    };

    let lab = LabConfig::new().nodes(2).build()?;
    let state = ScratchDir::new(&format!("{}-bench", lab.name_prefix()))?;
    let node = lab.node(1)?.ns.clone();
    let mut report = BenchReport {
        iterations: opts.iterations,
        burst_size: opts.burst,
        burst_rounds: opts.burst_rounds,
        iperf_seconds: opts.iperf_seconds,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        ..Default::default()
    };

    let pods = Netns::create_many(&[
        format!("{}-bench-fl", lab.name_prefix()),
        format!("{}-bench-ref", lab.name_prefix()),
        format!("{}-bench-off", lab.name_prefix()),
        format!("{}-bench-cold", lab.name_prefix()),
    ])?;
    let [fl_ns, ref_ns, off_ns, cold_ns] = <[Netns; 4]>::try_from(pods)
        .map_err(|_| Error::InvalidConfig("expected four pod namespaces".into()))?;
    let fl_net = flatlan_network(
        &state.path().join("flatlan"),
        &bin_dir,
        FLATLAN_RANGE,
        true,
        "bench-flatlan",
    )?;
    let off_net = flatlan_network(
        &state.path().join("flatlan-noprobe"),
        &bin_dir,
        FLATLAN_NOPROBE_RANGE,
        false,
        "bench-flatlan-noprobe",
    )?;
    let ref_net = reference_network(state.path(), &opts.reference_dir)?;
    let mut contenders = [
        Contender::new("flatlan", fl_net.clone(), fl_ns.clone()),
        Contender::new("reference", ref_net.clone(), ref_ns),
        Contender::new("noprobe", off_net, off_ns),
    ];
    let baseline_conf = ref_net.plugin_config(0, None)?;

    // 1. Warm-up.
    let warmup = opts.warmup.unwrap_or(range_len(FLATLAN_RANGE));
    report.warmup_iterations = warmup;
    tracing::info!(warmup, "warm-up: every flatlan address used once");
    let mut warm_add = Samples::new();
    for i in 0..warmup {
        let (add, _) = contenders[0].cycle(&node, false)?;
        warm_add.push(add);
        // The others only need their caches warm.
        if i < 10 {
            contenders[1].cycle(&node, false)?;
            contenders[2].cycle(&node, false)?;
        }
    }
    report.warmup_add = warm_add.summary();
    wait_quiet(&node, QUIET);

    // 2. Cold first ADDs, each on a fresh store.
    tracing::info!(trials = opts.cold_trials, "cold first ADDs");
    for k in 0..opts.cold_trials {
        let net = flatlan_network(
            &state.path().join(format!("cold{k}")),
            &bin_dir,
            FLATLAN_RANGE,
            true,
            "bench-cold",
        )?;
        let mut c = Contender::new("cold", net, cold_ns.clone());
        let (add, _) = c.cycle(&node, false)?;
        report
            .cold_first_add_trials_ms
            .push(add.as_secs_f64() * 1e3);
        wait_quiet(&node, QUIET);
    }

    // 3. Sequential, interleaved.
    tracing::info!(
        iterations = opts.iterations,
        "sequential ADD/DEL, interleaved"
    );
    let mut baseline = Samples::new();
    for i in 0..opts.iterations {
        // Rotate who goes first, so no one always runs right after the
        // same neighbour (page cache, kernel work queues, the CPU clock).
        for slot in 0..4 {
            match (i + slot) % 4 {
                3 => baseline.push(exec_baseline(&node, &cold_ns, &baseline_conf)?),
                c => {
                    if let Some(c) = contenders.get_mut(c) {
                        c.cycle(&node, true)?;
                    }
                }
            }
        }
    }
    let spawned = wait_quiet(&node, QUIET);
    if spawned > 0 {
        // Expected: a DEL leaves no verified address (issue 10), so the
        // measured ADDs start probe-ahead rounds as a node's would.
        tracing::info!(
            spawned,
            "a probe-ahead was still running after the steady-state phase"
        );
    }
    let [fl, rf, off] = &contenders;
    report.flatlan = LatencyPair {
        add: fl.add.summary(),
        del: fl.del.summary(),
    };
    report.reference = LatencyPair {
        add: rf.add.summary(),
        del: rf.del.summary(),
    };
    report.flatlan_probe_off = LatencyPair {
        add: off.add.summary(),
        del: off.del.summary(),
    };
    report.exec_baseline = baseline.summary();

    // 4. Bursts.
    tracing::info!(
        size = opts.burst,
        rounds = opts.burst_rounds,
        "concurrent bursts"
    );
    let names = |tag: &str| -> Vec<String> {
        (0..opts.burst)
            .map(|i| format!("{}-bb{tag}{i}", lab.name_prefix()))
            .collect()
    };
    let fl_burst_ns = Netns::create_many(&names("f"))?;
    let ref_burst_ns = Netns::create_many(&names("r"))?;
    let (mut fl_burst, mut ref_burst) = (BurstResult::default(), BurstResult::default());
    let (mut base_each, mut base_wall) = (Samples::new(), Samples::new());
    for round in 0..opts.burst_rounds {
        // What any plugin pays in a burst: just N process starts.
        burst_baseline(
            &node,
            &fl_burst_ns,
            &baseline_conf,
            &mut base_each,
            &mut base_wall,
        )?;
        let ours_first = round % 2 == 0;
        for ours in [ours_first, !ours_first] {
            if ours {
                burst(
                    &fl_net,
                    &node,
                    &fl_burst_ns,
                    &format!("bf{round}"),
                    &mut fl_burst,
                )?;
            } else {
                burst(
                    &ref_net,
                    &node,
                    &ref_burst_ns,
                    &format!("br{round}"),
                    &mut ref_burst,
                )?;
            }
            wait_quiet(&node, QUIET);
        }
    }
    drop(fl_burst_ns);
    drop(ref_burst_ns);
    report.exec_baseline_burst_p99_ms = base_each.summary().map(|x| x.p99_ms);
    report.exec_baseline_burst_wall_ms = base_wall.summary().map(|x| x.p50_ms);
    report.burst = burst_figures(fl_burst);
    report.reference_burst = burst_figures(ref_burst);

    // 5. Datapath.
    if !opts.skip_datapath {
        tracing::info!(
            seconds = opts.iperf_seconds,
            rounds = opts.iperf_rounds,
            "iperf3"
        );
        datapath(&lab, &fl_net, opts, &mut report)?;
    }
    wait_quiet(&node, QUIET);
    drop(lab);

    // 6. Speaker.
    report.speaker = if opts.skip_speaker {
        SpeakerFigures {
            note: "skipped (--skip-speaker)".into(),
            ..Default::default()
        }
    } else {
        tracing::info!("speaker figures");
        speaker_figures(speaker.as_deref())
    };
    derive(&mut report);
    Ok(report)
}

fn burst_figures(b: BurstResult) -> BurstFigures {
    let walls = |s: &Samples| s.summary().map(|x| x.p50_ms);
    BurstFigures {
        add: b.add.summary(),
        del: b.del.summary(),
        wall_ms: walls(&b.add_wall),
        del_wall_ms: walls(&b.del_wall),
        duplicates: b.duplicates,
        failures: b.failures,
        first_error: b.first_error,
    }
}

#[derive(Clone, Copy)]
enum Path {
    PodToDevice,
    PodToNode,
    Veth,
    Vxlan,
}

fn datapath(
    lab: &Lab,
    net: &netns_testkit::cni::CniNetwork,
    opts: &BenchOptions,
    report: &mut BenchReport,
) -> Result<()> {
    let pod = flatlan::attach(lab, net, 1, "bench-iperf")?;
    let result = (|| -> Result<()> {
        let veth = VethPair::new()?;
        let overlay = Overlay::new(lab)?;
        let node1 = lab.node(1)?;
        let paths = [Path::PodToDevice, Path::PodToNode, Path::Veth, Path::Vxlan];
        let mut gbps: [Vec<f64>; 4] = Default::default();
        let t = &mut report.throughput_gbps;
        for round in 0..opts.iperf_rounds {
            for k in 0..paths.len() {
                let idx = (round + k) % paths.len();
                let Some(path) = paths.get(idx) else { continue };
                let (name, v) = match path {
                    Path::PodToDevice => (
                        "flatlan pod -> device",
                        iperf(&lab.device, DEVICE_IP, &pod.ns, opts.iperf_seconds)?,
                    ),
                    Path::PodToNode => (
                        "flatlan pod -> node",
                        iperf(&node1.ns, node1.ip, &pod.ns, opts.iperf_seconds)?,
                    ),
                    Path::Veth => (
                        "bare veth",
                        iperf(&veth.b, VETH_B, &veth.a, opts.iperf_seconds)?,
                    ),
                    Path::Vxlan => (
                        "vxlan overlay",
                        iperf(
                            &overlay.pod2,
                            OVERLAY_POD2,
                            &overlay.pod1,
                            opts.iperf_seconds,
                        )?,
                    ),
                };
                if let Some(list) = gbps.get_mut(idx) {
                    list.push(v);
                }
                t.runs.push((name.to_owned(), v));
            }
        }
        let [dev, node, veth, vxlan] = &gbps;
        t.flatlan_pod_to_device = median(dev);
        t.flatlan_pod_to_node = median(node);
        t.bare_veth = median(veth);
        t.vxlan_overlay = median(vxlan);
        Ok(())
    })();
    // DEL the pod whatever happened, as a runtime would.
    let del = net.del(&lab.node(1)?.ns, &pod.att, Some(&pod.result));
    result.and(del)
}

/// The headline figures from the summaries.
fn derive(r: &mut BenchReport) {
    let p50 = |s: &Option<Summary>| s.as_ref().map(|x| x.p50_ms);
    let p95 = |s: &Option<Summary>| s.as_ref().map(|x| x.p95_ms);
    let p99 = |s: &Option<Summary>| s.as_ref().map(|x| x.p99_ms);
    r.add_p50_ms = p50(&r.flatlan.add);
    r.add_p95_ms = p95(&r.flatlan.add);
    r.del_p50_ms = p50(&r.flatlan.del);
    r.del_p95_ms = p95(&r.flatlan.del);
    r.reference_add_p50_ms = p50(&r.reference.add);
    r.reference_add_p95_ms = p95(&r.reference.add);
    r.reference_del_p50_ms = p50(&r.reference.del);
    r.reference_del_p95_ms = p95(&r.reference.del);
    r.add_p50_ratio = ratio(r.add_p50_ms, r.reference_add_p50_ms);
    r.del_p50_ratio = ratio(r.del_p50_ms, r.reference_del_p50_ms);
    r.exec_baseline_p50_ms = p50(&r.exec_baseline);
    let net = |v: Option<f64>| v.zip(r.exec_baseline_p50_ms).map(|(v, b)| v - b);
    r.add_p50_ms_net_of_exec = net(r.add_p50_ms);
    r.reference_add_p50_ms_net_of_exec = net(r.reference_add_p50_ms);
    r.del_p50_ms_net_of_exec = net(r.del_p50_ms);
    r.reference_del_p50_ms_net_of_exec = net(r.reference_del_p50_ms);
    r.add_p50_ratio_net_of_exec =
        ratio(r.add_p50_ms_net_of_exec, r.reference_add_p50_ms_net_of_exec);
    r.del_p50_ratio_net_of_exec =
        ratio(r.del_p50_ms_net_of_exec, r.reference_del_p50_ms_net_of_exec);
    r.add_p50_ms_probe_off = p50(&r.flatlan_probe_off.add);
    r.cold_first_add_ms = median(&r.cold_first_add_trials_ms);
    r.probe_added_ms = r
        .cold_first_add_ms
        .zip(r.add_p50_ms_probe_off)
        .map(|(c, w)| c - w);
    r.burst_p99_ms = p99(&r.burst.add);
    r.burst_wall_ms = r.burst.wall_ms;
    r.burst_duplicates = r.burst.duplicates;
    r.reference_burst_p99_ms = p99(&r.reference_burst.add);
    r.reference_burst_wall_ms = r.reference_burst.wall_ms;
    r.reference_burst_duplicates = r.reference_burst.duplicates;
    let t = &r.throughput_gbps;
    r.throughput_ratio_vs_veth = ratio(t.flatlan_pod_to_device, t.bare_veth);
    r.throughput_ratio_vxlan_vs_veth = ratio(t.vxlan_overlay, t.bare_veth);
    let sp = &r.speaker;
    r.failover_p50_ms = sp.failover_p50_ms;
    r.failover_p95_ms = sp.failover_p95_ms;
    r.first_garp_ms = sp.first_garp_ms;
    r.arp_reply_p99_ms = sp.arp_reply_p99_ms;
    r.rss_mb_1000_vips = sp.rss_mb_1000_vips;
    r.evaluate();
}
