//! What `flatlan-lab bench` measured: the JSON document and the table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench_speaker::SpeakerFigures;
use crate::bench_stats::Summary;

/// One target from the issue, checked against a measured value.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    pub value: Option<f64>,
    pub limit: &'static str,
    /// `None` when the value could not be measured.
    pub met: Option<bool>,
}

impl Target {
    fn at_most(name: &'static str, value: Option<f64>, max: f64, limit: &'static str) -> Self {
        Target {
            name,
            value,
            limit,
            met: value.map(|v| v <= max),
        }
    }

    fn at_least(name: &'static str, value: Option<f64>, min: f64, limit: &'static str) -> Self {
        Target {
            name,
            value,
            limit,
            met: value.map(|v| v >= min),
        }
    }
}

/// ADD/DEL latency of one configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyPair {
    pub add: Option<Summary>,
    pub del: Option<Summary>,
}

/// A concurrent burst, over all rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BurstFigures {
    pub add: Option<Summary>,
    pub del: Option<Summary>,
    /// Median over rounds of the time from the start to the last ADD.
    pub wall_ms: Option<f64>,
    pub del_wall_ms: Option<f64>,
    pub duplicates: usize,
    pub failures: usize,
    pub first_error: Option<String>,
}

/// Median iperf3 throughput per path, Gbit/s.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// flatlan pod on node1 → the LAN device (pod veth, br0, the node's
    /// uplink, the lab switch, the device's veth).
    pub flatlan_pod_to_device: Option<f64>,
    /// flatlan pod → its own node's IP on br0 (pod veth and br0 only).
    pub flatlan_pod_to_node: Option<f64>,
    pub bare_veth: Option<f64>,
    /// Pod-like namespaces on node1 and node2, VXLAN over br0.
    pub vxlan_overlay: Option<f64>,
    /// Every run, in order, as (path, Gbit/s).
    pub runs: Vec<(String, f64)>,
}

/// Everything one bench run measured. The first ten fields are the keys
/// the issue asks for; the rest are the raw figures behind them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    pub add_p50_ratio: Option<f64>,
    pub del_p50_ratio: Option<f64>,
    pub add_p95_ms: Option<f64>,
    pub burst_p99_ms: Option<f64>,
    pub burst_duplicates: usize,
    pub throughput_ratio_vs_veth: Option<f64>,
    pub failover_p95_ms: Option<f64>,
    pub first_garp_ms: Option<f64>,
    pub arp_reply_p99_ms: Option<f64>,
    pub rss_mb_1000_vips: Option<f64>,

    pub add_p50_ms: Option<f64>,
    pub del_p50_ms: Option<f64>,
    pub reference_add_p50_ms: Option<f64>,
    pub reference_add_p95_ms: Option<f64>,
    pub reference_del_p50_ms: Option<f64>,
    pub del_p95_ms: Option<f64>,
    pub reference_del_p95_ms: Option<f64>,
    /// `/bin/true` exec'd into the node like the plugins, with their env and stdin.
    pub exec_baseline_p50_ms: Option<f64>,
    /// ADD/DEL p50 minus the exec baseline: the plugins' own time.
    pub add_p50_ms_net_of_exec: Option<f64>,
    pub reference_add_p50_ms_net_of_exec: Option<f64>,
    pub del_p50_ms_net_of_exec: Option<f64>,
    pub reference_del_p50_ms_net_of_exec: Option<f64>,
    pub add_p50_ratio_net_of_exec: Option<f64>,
    pub del_p50_ratio_net_of_exec: Option<f64>,
    pub add_p50_ms_probe_off: Option<f64>,
    /// Median first ADD on a fresh store (synchronous conflict probe).
    pub cold_first_add_ms: Option<f64>,
    /// That minus the steady-state ADD p50 with the probe off.
    pub probe_added_ms: Option<f64>,
    pub burst_wall_ms: Option<f64>,
    /// A burst of bare `true` execs into the node: p99 and median wall time.
    pub exec_baseline_burst_p99_ms: Option<f64>,
    pub exec_baseline_burst_wall_ms: Option<f64>,
    pub reference_burst_p99_ms: Option<f64>,
    pub reference_burst_wall_ms: Option<f64>,
    pub reference_burst_duplicates: usize,
    pub throughput_ratio_vxlan_vs_veth: Option<f64>,
    pub failover_p50_ms: Option<f64>,

    pub iterations: usize,
    pub warmup_iterations: usize,
    pub burst_size: usize,
    pub burst_rounds: usize,
    pub iperf_seconds: u32,
    pub kernel: String,
    pub cores: usize,
    pub flatlan: LatencyPair,
    pub reference: LatencyPair,
    pub flatlan_probe_off: LatencyPair,
    pub exec_baseline: Option<Summary>,
    pub warmup_add: Option<Summary>,
    pub cold_first_add_trials_ms: Vec<f64>,
    pub burst: BurstFigures,
    pub reference_burst: BurstFigures,
    pub throughput_gbps: Throughput,
    pub speaker: SpeakerFigures,
    pub targets: Vec<Target>,
}

impl BenchReport {
    /// Checks the targets; call after the figures are filled in.
    pub fn evaluate(&mut self) {
        self.targets = vec![
            Target::at_most(
                "ADD p50 ratio (flatlan / reference)",
                self.add_p50_ratio,
                1.0 / 3.0,
                "<= 0.33",
            ),
            Target::at_most("ADD p95 (ms)", self.add_p95_ms, 20.0, "<= 20 ms"),
            Target::at_most(
                "DEL p50 ratio (flatlan / reference)",
                self.del_p50_ratio,
                0.5,
                "<= 0.50",
            ),
            Target::at_most("burst ADD p99 (ms)", self.burst_p99_ms, 100.0, "<= 100 ms"),
            Target::at_most(
                "burst duplicates",
                Some(self.burst_duplicates as f64),
                0.0,
                "0",
            ),
            Target::at_least(
                "throughput ratio (flatlan pod->device / bare veth)",
                self.throughput_ratio_vs_veth,
                0.95,
                ">= 0.95",
            ),
        ];
    }

    /// True when every target was measured and met.
    pub fn all_targets_met(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.met == Some(true))
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "flatlan-lab bench: kernel {}, {} cores; {} interleaved ADD+DEL per plugin \
             (after {} warm-up), bursts of {} x {}, iperf3 {} s x 1 stream",
            self.kernel,
            self.cores,
            self.iterations,
            self.warmup_iterations,
            self.burst_size,
            self.burst_rounds,
            self.iperf_seconds
        );
        let _ = writeln!(
            s,
            "\n{:<34} {:>10} {:>10} {:>7}  {:<12} met",
            "", "flatlan", "reference", "ratio", "target"
        );
        let row =
            |s: &mut String, name: &str, ours: Option<f64>, theirs: Option<f64>, unit: &str| {
                let ratio = crate::bench_stats::ratio(ours, theirs);
                let _ = write!(
                    s,
                    "{:<34} {:>10} {:>10} {:>7}",
                    name,
                    fmt(ours, unit),
                    fmt(theirs, unit),
                    fmt(ratio, "")
                );
            };
        let target = |s: &mut String, i: usize| {
            match self.targets.get(i) {
                Some(t) => {
                    let _ = writeln!(s, "  {:<12} {}", t.limit, met(t.met));
                }
                None => {
                    let _ = writeln!(s);
                }
            };
        };
        let none = |s: &mut String| {
            let _ = writeln!(s);
        };
        let (f, r) = (&self.flatlan, &self.reference);
        let p = |x: &Option<Summary>, g: fn(&Summary) -> f64| x.as_ref().map(g);
        row(
            &mut s,
            "ADD p50",
            self.add_p50_ms,
            self.reference_add_p50_ms,
            "ms",
        );
        target(&mut s, 0);
        row(
            &mut s,
            "ADD p95",
            self.add_p95_ms,
            self.reference_add_p95_ms,
            "ms",
        );
        target(&mut s, 1);
        row(
            &mut s,
            "ADD p99",
            p(&f.add, |x| x.p99_ms),
            p(&r.add, |x| x.p99_ms),
            "ms",
        );
        none(&mut s);
        row(
            &mut s,
            "DEL p50",
            self.del_p50_ms,
            self.reference_del_p50_ms,
            "ms",
        );
        target(&mut s, 2);
        row(
            &mut s,
            "DEL p95",
            self.del_p95_ms,
            self.reference_del_p95_ms,
            "ms",
        );
        none(&mut s);
        row(
            &mut s,
            "DEL p99",
            p(&f.del, |x| x.p99_ms),
            p(&r.del, |x| x.p99_ms),
            "ms",
        );
        none(&mut s);
        row(
            &mut s,
            "ADD p50 net of exec baseline",
            self.add_p50_ms_net_of_exec,
            self.reference_add_p50_ms_net_of_exec,
            "ms",
        );
        none(&mut s);
        row(
            &mut s,
            "DEL p50 net of exec baseline",
            self.del_p50_ms_net_of_exec,
            self.reference_del_p50_ms_net_of_exec,
            "ms",
        );
        none(&mut s);
        let burst_name = format!("burst of {}: ADD p99", self.burst_size);
        row(
            &mut s,
            &burst_name,
            self.burst_p99_ms,
            self.reference_burst_p99_ms,
            "ms",
        );
        target(&mut s, 3);
        row(
            &mut s,
            "burst: wall time (median)",
            self.burst_wall_ms,
            self.reference_burst_wall_ms,
            "ms",
        );
        none(&mut s);
        let _ = write!(
            s,
            "{:<34} {:>10} {:>10} {:>7}",
            "burst: duplicates / failures",
            format!("{} / {}", self.burst.duplicates, self.burst.failures),
            format!(
                "{} / {}",
                self.reference_burst.duplicates, self.reference_burst.failures
            ),
            ""
        );
        target(&mut s, 4);
        let t = &self.throughput_gbps;
        let _ = write!(
            s,
            "{:<34} {:>10} {:>10} {:>7}",
            "TCP pod->LAN device vs bare veth",
            fmt(t.flatlan_pod_to_device, "G"),
            fmt(t.bare_veth, "G"),
            fmt(self.throughput_ratio_vs_veth, "")
        );
        target(&mut s, 5);

        let _ = writeln!(s, "\nmore figures:");
        let line = |s: &mut String, name: &str, v: String| {
            let _ = writeln!(s, "  {name:<52} {v}");
        };
        line(
            &mut s,
            "exec baseline (true, exec'd into the node) p50 / p95",
            format!(
                "{} / {}",
                fmt(self.exec_baseline_p50_ms, "ms"),
                fmt(p(&self.exec_baseline, |x| x.p95_ms), "ms")
            ),
        );
        line(
            &mut s,
            "flatlan ADD p50 / p95, probe on (steady state)",
            format!(
                "{} / {}",
                fmt(self.add_p50_ms, "ms"),
                fmt(self.add_p95_ms, "ms")
            ),
        );
        let off = &self.flatlan_probe_off;
        line(
            &mut s,
            "flatlan ADD p50 / p95, probe disabled",
            format!(
                "{} / {}",
                fmt(self.add_p50_ms_probe_off, "ms"),
                fmt(p(&off.add, |x| x.p95_ms), "ms")
            ),
        );
        line(
            &mut s,
            "flatlan DEL p50, probe disabled",
            fmt(p(&off.del, |x| x.p50_ms), "ms"),
        );
        line(
            &mut s,
            "flatlan cold first ADD (fresh store), median",
            format!(
                "{} over {} trial(s): {}",
                fmt(self.cold_first_add_ms, "ms"),
                self.cold_first_add_trials_ms.len(),
                self.cold_first_add_trials_ms
                    .iter()
                    .map(|v| format!("{v:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        line(
            &mut s,
            "probe added latency (cold first ADD - probe-off p50)",
            fmt(self.probe_added_ms, "ms"),
        );
        line(
            &mut s,
            "flatlan warm-up ADD p50 / max",
            format!(
                "{} / {}",
                fmt(p(&self.warmup_add, |x| x.p50_ms), "ms"),
                fmt(p(&self.warmup_add, |x| x.max_ms), "ms")
            ),
        );
        line(
            &mut s,
            "burst DEL p99 flatlan / reference",
            format!(
                "{} / {}",
                fmt(p(&self.burst.del, |x| x.p99_ms), "ms"),
                fmt(p(&self.reference_burst.del, |x| x.p99_ms), "ms")
            ),
        );
        line(
            &mut s,
            "burst of exec baselines (true): p99 / wall",
            format!(
                "{} / {}",
                fmt(self.exec_baseline_burst_p99_ms, "ms"),
                fmt(self.exec_baseline_burst_wall_ms, "ms")
            ),
        );
        line(
            &mut s,
            "TCP flatlan pod -> own node (br0)",
            fmt(t.flatlan_pod_to_node, "Gbit/s"),
        );
        line(
            &mut s,
            "TCP VXLAN overlay node1 -> node2 (vs bare veth)",
            format!(
                "{} ({})",
                fmt(t.vxlan_overlay, "Gbit/s"),
                fmt(self.throughput_ratio_vxlan_vs_veth, "")
            ),
        );
        let sp = &self.speaker;
        if sp.available {
            let _ = writeln!(
                s,
                "\nspeaker ({}): failover p50 {} p95 {}, first GARP {} (config to GARP; from daemon start {}), ARP reply p99 {}, RSS at 1,000 VIPs {}; poor LAN: false failovers per 10 min {}, failover p95 {}",
                sp.note,
                fmt(sp.failover_p50_ms, "ms"),
                fmt(sp.failover_p95_ms, "ms"),
                fmt(sp.first_garp_ms, "ms"),
                fmt(sp.start_to_first_garp_ms, "ms"),
                fmt(sp.arp_reply_p99_ms, "ms"),
                fmt(sp.rss_mb_1000_vips, "MB"),
                fmt(sp.false_failovers_10min, ""),
                fmt(sp.failover_p95_ms_lossy, "ms"),
            );
        } else {
            let _ = writeln!(s, "\nspeaker: not available ({})", sp.note);
        }
        let met_n = self.targets.iter().filter(|t| t.met == Some(true)).count();
        let _ = writeln!(s, "\n{met_n}/{} targets met", self.targets.len());
        s
    }
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit.is_empty() => format!("{v:.2}"),
        Some(v) if unit == "G" => format!("{v:.2} G"),
        Some(v) => format!("{v:.1} {unit}"),
    }
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "n/a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_json_keys() {
        let mut r = BenchReport {
            add_p50_ratio: Some(0.3),
            del_p50_ratio: Some(0.6),
            add_p95_ms: Some(12.0),
            burst_p99_ms: Some(80.0),
            throughput_ratio_vs_veth: None,
            ..Default::default()
        };
        r.evaluate();
        let met: Vec<Option<bool>> = r.targets.iter().map(|t| t.met).collect();
        assert_eq!(
            met,
            [
                Some(true),
                Some(true),
                Some(false),
                Some(true),
                Some(true),
                None
            ]
        );
        assert!(!r.all_targets_met());
        let v = serde_json::to_value(&r).expect("serializes");
        for k in [
            "add_p50_ratio",
            "del_p50_ratio",
            "add_p95_ms",
            "burst_p99_ms",
            "burst_duplicates",
            "throughput_ratio_vs_veth",
            "failover_p95_ms",
            "first_garp_ms",
            "arp_reply_p99_ms",
            "rss_mb_1000_vips",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(v["failover_p95_ms"].is_null());
        let table = r.render();
        assert!(table.contains("speaker: not available"), "{table}");
        assert!(table.contains("NO"), "{table}");
    }
}
