//! `flatlan-lab`: build, inspect and clean up the namespace lab.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netns_testkit::{cleanup_stale, LabConfig};
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser)]
#[command(
    version,
    about = "A simulated home LAN for flatlan, in network namespaces"
)]
struct Cli {
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a lab, print it, and keep it until Ctrl-C.
    Up {
        /// Number of Kubernetes nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Run avahi-daemon on the LAN device.
        #[arg(long)]
        avahi: bool,
        /// Run dnsmasq (DHCP + DNS) on the router.
        #[arg(long)]
        dnsmasq: bool,
    },
    /// Remove namespaces and files left by dead flatlan-lab/test processes.
    Clean {
        /// Only names starting with this (e.g. fl1234l0).
        #[arg(long)]
        prefix: Option<String>,
    },
    /// The main job: pods on the simulated LAN with the real flatlan
    /// binary, and a report on discovery and reachability. Exits 1 if any
    /// check fails.
    Demo {
        /// The flatlan binary (default: next to flatlan-lab).
        #[arg(long)]
        plugin: Option<std::path::PathBuf>,
    },
    /// Compare flatlan with the reference bridge + host-local plugins in
    /// one interleaved run: ADD/DEL latency, bursts, TCP throughput, and
    /// the speaker's figures. Exits 1 on error, and with --strict also when
    /// a target is not met.
    Bench(BenchArgs),
    /// Measure the speaker alone: failover, handoff, first GARP, ARP reply
    /// latency and RSS, in namespaces of its own (what `flatlan-speaker
    /// bench` runs). Prints a Markdown table, or one JSON object.
    SpeakerBench(SpeakerBenchArgs),
    /// Browse one mDNS service type from this process's own namespace
    /// (a pod on a real cluster) and print what answers. Exits 1 when no
    /// instance resolves.
    MdnsBrowse(flatlan_lab::mdns_browse::MdnsBrowseArgs),
}

#[derive(clap::Args)]
struct SpeakerBenchArgs {
    /// The flatlan-speaker binary (default: next to flatlan-lab).
    #[arg(long)]
    speaker: Option<std::path::PathBuf>,
    /// Crash and graceful-handoff trials, each.
    #[arg(long, default_value_t = 20)]
    trials: usize,
    /// Seconds of the poor-LAN run (5% heartbeat loss, a busy node)
    /// that counts false failovers; 0 skips the poor-LAN figures.
    #[arg(long, default_value_t = 600)]
    lossy_secs: u64,
    /// Timer lines for every speaker's config instead of the daemon's
    /// defaults, e.g. "heartbeatInterval: 100ms\ndeadAfter: 3\n".
    #[arg(long, default_value = "")]
    timers: String,
    /// Only the crash trials: failover p50/p95.
    #[arg(long)]
    failover_only: bool,
    /// Print one JSON object instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

fn speaker_bench(a: SpeakerBenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let speaker = match a.speaker {
        Some(p) => p,
        None => netns_testkit::flatlan::sibling_binary("flatlan-speaker")?,
    };
    let mut opts = flatlan_lab::speaker_bench::BenchOptions::new(speaker);
    opts.trials = a.trials;
    opts.lossy_secs = a.lossy_secs;
    // A shell passes "\n" literally; the YAML needs real line breaks.
    opts.timers = a.timers.replace("\\n", "\n");
    if !opts.timers.is_empty() && !opts.timers.ends_with('\n') {
        opts.timers.push('\n');
    }
    opts.failover_only = a.failover_only;
    let r = flatlan_lab::speaker_bench::run(&opts)?;
    let text = if a.json {
        format!("{}\n", serde_json::to_string(&r)?)
    } else {
        r.render_markdown()
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The flatlan binary (default: next to flatlan-lab).
    #[arg(long)]
    plugin: Option<std::path::PathBuf>,
    /// Where the reference bridge and host-local plugins are.
    #[arg(long, default_value = netns_testkit::cni::DEBIAN_CNI_DIR)]
    reference_dir: std::path::PathBuf,
    /// The flatlan-speaker binary (default: next to flatlan-lab).
    #[arg(long)]
    speaker: Option<std::path::PathBuf>,
    /// Measured sequential ADD+DEL per plugin.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Unmeasured ADD+DEL first (default: one per flatlan address).
    #[arg(long)]
    warmup: Option<usize>,
    /// First ADDs on a fresh flatlan store (the synchronous probe).
    #[arg(long, default_value_t = 5)]
    cold_trials: usize,
    /// Concurrent ADDs per burst.
    #[arg(long, default_value_t = 30)]
    burst: usize,
    #[arg(long, default_value_t = 3)]
    burst_rounds: usize,
    /// Length of each iperf3 run.
    #[arg(long, default_value_t = 3)]
    iperf_seconds: u32,
    /// iperf3 runs per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    iperf_rounds: usize,
    #[arg(long)]
    skip_datapath: bool,
    #[arg(long)]
    skip_speaker: bool,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (the table still prints).
    #[arg(long)]
    json_file: Option<std::path::PathBuf>,
    /// Exit 1 when any target is not met (for CI gates).
    #[arg(long)]
    strict: bool,
}

impl BenchArgs {
    fn options(self) -> flatlan_lab::bench::BenchOptions {
        flatlan_lab::bench::BenchOptions {
            plugin: self.plugin,
            reference_dir: self.reference_dir,
            speaker: self.speaker,
            iterations: self.iterations,
            warmup: self.warmup,
            cold_trials: self.cold_trials,
            burst: self.burst,
            burst_rounds: self.burst_rounds,
            iperf_seconds: self.iperf_seconds,
            iperf_rounds: self.iperf_rounds,
            skip_datapath: self.skip_datapath,
            skip_speaker: self.skip_speaker,
        }
    }
}

fn bench(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (json, strict, json_file) = (args.json, args.strict, args.json_file.clone());
    let report = flatlan_lab::bench::run(&args.options())?;
    if let Some(path) = json_file {
        let mut t = serde_json::to_string_pretty(&report)?;
        t.push('\n');
        std::fs::write(&path, t).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let text = if json {
        let mut t = serde_json::to_string_pretty(&report)?;
        t.push('\n');
        t
    } else {
        report.render()
    };
    // A closed stdout must not turn into a panic (release aborts on one).
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(if !strict || report.all_targets_met() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn up(config: LabConfig) -> Result<(), Box<dyn std::error::Error>> {
    // Block the terminating signals before any thread exists, then wait
    // for them synchronously: no handler, and the lab is dropped normally.
    // (Release builds abort on panic, so nothing here may panic: that
    // would skip the teardown; `flatlan-lab clean` is the fallback.)
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block()?;
    let lab = config.build()?;
    // A closed stdout (`| head`) must not stop us from tearing down.
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", lab.summary());
    let _ = writeln!(out, "Ctrl-C to tear down.");
    let _ = out.flush();
    drop(out);
    let sig = signals.wait()?;
    eprintln!("{sig}: tearing down");
    drop(lab);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Cmd::Up {
            nodes,
            avahi,
            dnsmasq,
        } => up(LabConfig::new()
            .nodes(nodes)
            .with_avahi_device(avahi)
            .with_dnsmasq(dnsmasq)),
        Cmd::Clean { prefix } => cleanup_stale(prefix.as_deref())
            .map(|removed| {
                let mut out = std::io::stdout().lock();
                for n in &removed {
                    let _ = writeln!(out, "removed {n}");
                }
                let _ = writeln!(out, "{} stale namespace(s) removed", removed.len());
            })
            .map_err(Into::into),
        Cmd::Demo { plugin } => {
            match flatlan_lab::demo::run(&flatlan_lab::demo::DemoOptions { plugin }) {
                Ok(report) => {
                    print!("{}", report.render());
                    return if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    };
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::SpeakerBench(a) => speaker_bench(a),
        Cmd::MdnsBrowse(a) => flatlan_lab::mdns_browse::run(&a),
        Cmd::Bench(args) => match bench(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flatlan-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
