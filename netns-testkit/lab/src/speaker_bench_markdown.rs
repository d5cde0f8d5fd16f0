//! The speaker bench's Markdown table ([`BenchReport::render_markdown`]),
//! for docs/BENCHMARKS.md.

use std::fmt::Write as _;

use crate::speaker_bench::{BenchReport, CRASH_TIMEOUT_MS, GARP_TIMEOUT_MS, RELOAD_TIMEOUT_MS};

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} ms"))
}

/// The table's note on failed trials of one figure, if any.
fn failed(n: usize, timeout_ms: f64) -> String {
    if n == 0 {
        return String::new();
    }
    format!(", {n} failed, counted as {timeout_ms:.0} ms")
}

impl BenchReport {
    /// A Markdown table for docs/BENCHMARKS.md.
    pub fn render_markdown(&self) -> String {
        let mut s = String::new();
        let lost = &self.handoff_lost_pings;
        let mean = lost.iter().map(|l| f64::from(*l)).sum::<f64>() / lost.len().max(1) as f64;
        let mut sorted = lost.clone();
        sorted.sort_unstable();
        let _ = writeln!(s, "| metric | value | target |\n|---|---|---|");
        let _ = writeln!(
            s,
            "| failover after owner crash, kill to first client reply (n={}{}) | p50 {}, p95 {} | p95 ≤ 400 ms |",
            self.failover_ms.len() + self.failover_failed_trials,
            failed(self.failover_failed_trials, CRASH_TIMEOUT_MS),
            ms(self.failover_p50_ms),
            ms(self.failover_p95_ms)
        );
        let _ = writeln!(
            s,
            "| graceful handoff, lost 20 ms pings (n={}) | {sorted:?} (mean {mean:.2}) | 0 |",
            lost.len()
        );
        let _ = writeln!(
            s,
            "| config to first GARP, running speaker, SIGHUP to the client's capture (n={}{}) | p50 {}, p95 {} | ≤ 100 ms |",
            self.first_garp_samples_ms.len() + self.first_garp_failed_trials,
            failed(self.first_garp_failed_trials, RELOAD_TIMEOUT_MS),
            ms(self.first_garp_ms),
            ms(self.first_garp_p95_ms)
        );
        let _ = writeln!(
            s,
            "| start to first GARP, a starting daemon (n={}{}) | p50 {} | (listens 2 heartbeats first) |",
            self.start_garp_samples_ms.len() + self.start_garp_failed_trials,
            failed(self.start_garp_failed_trials, GARP_TIMEOUT_MS),
            ms(self.start_to_first_garp_ms)
        );
        let us =
            |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{:.0} µs", v * 1000.0));
        let _ = writeln!(
            s,
            "| ARP reply latency, request-to-reply RTT from the client (n={}/{}) | p50 {}, p99 {} | p99 ≤ 1 ms |",
            self.arp_replies,
            self.arp_requests,
            us(self.arp_reply_p50_ms),
            us(self.arp_reply_p99_ms)
        );
        let mb = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} MB"));
        let _ = writeln!(
            s,
            "| 1,000 VIPs | all announced after {}, RSS {} (1 VIP: {}) | RSS ≤ 20 MB |",
            self.all_1000_announced_s
                .map_or_else(|| "n/a".into(), |v| format!("{v:.1} s")),
            mb(self.rss_mb_1000_vips),
            mb(self.rss_mb_1_vip)
        );
        if let (Some(n), Some(secs)) = (self.false_failovers, self.lossy_run_secs) {
            let _ = writeln!(
                s,
                "| poor LAN ({:.0}% heartbeat loss, a busy node): false failovers in {secs:.0} s | {n} ({:.1} per 10 min) | 0 |",
                crate::speaker_bench_lossy::LOSS * 100.0,
                self.false_failovers_10min.unwrap_or(0.0)
            );
            let _ = writeln!(
                s,
                "| poor LAN: failover after owner crash (n={}{}) | p50 {}, p95 {} | p95 ≤ 1 s |",
                self.failover_ms_lossy.len() + self.failover_failed_trials_lossy,
                failed(self.failover_failed_trials_lossy, CRASH_TIMEOUT_MS),
                ms(self.failover_p50_ms_lossy),
                ms(self.failover_p95_ms_lossy)
            );
        }
        self.link.markdown_row(&mut s);
        let _ = writeln!(s, "\nfailed trials: {}", self.total_failed());
        s
    }
}
