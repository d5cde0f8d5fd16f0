//! `flatlan-lab speaker-bench`'s link figure: **link up to first GARP**.
//!
//! One node owns the VIP; its `eth0` is set down long enough for any
//! speaker to notice (the VIP is released: no peer can take it), then up;
//! the figure is the time from the `ip link set eth0 up` to the first GARP
//! for the VIP the client captures. It is the speaker's reaction to the
//! link (an rtnetlink event since issue 11 item 2, a 200 ms poll before),
//! plus the listening window a node keeps after a link comes back (two
//! heartbeat intervals at the daemon's default timers, as every speaker
//! bench lab runs: see docs/ARCHITECTURE.md), plus the claim.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use netns_testkit::speaker::SpeakerLab;
use netns_testkit::Result;
use serde::Serialize;

use crate::speaker_bench::{
    capture_first_garp, in_background, join, quantiles, BenchOptions, GARP_LEAD, VIP4, VIP4_S,
};

/// How long the link stays down: several of the old 200 ms polls.
const DOWN_FOR: Duration = Duration::from_millis(1000);
/// How long the client listens for the GARP after the link comes up.
const LINK_CAPTURE: Duration = Duration::from_secs(2);
/// A trial that saw no GARP counts as this.
const LINK_TIMEOUT_MS: f64 = (LINK_CAPTURE.as_millis() - GARP_LEAD.as_millis()) as f64;

/// The link figures (flattened into the speaker bench's report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkReport {
    /// Link up to the first GARP, p50 and p95.
    pub link_up_to_first_garp_ms: Option<f64>,
    pub link_up_to_first_garp_p95_ms: Option<f64>,
    /// Every trial that saw a GARP, ms.
    pub link_up_samples_ms: Vec<f64>,
    /// Trials where no GARP was seen; in the percentiles as
    /// `LINK_TIMEOUT_MS` each.
    pub link_up_failed_trials: usize,
}

/// Runs `opts.link_trials` link flaps on one speaker.
pub fn link_trials(opts: &BenchOptions) -> Result<LinkReport> {
    let mut r = LinkReport::default();
    if opts.link_trials == 0 {
        return Ok(r);
    }
    let mut lab = SpeakerLab::new(&opts.speaker, 1)?;
    lab.set_timers(&opts.timers);
    lab.start(0, &[VIP4_S], "")?;
    lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
    for _ in 0..opts.link_trials {
        lab.nodes[0].exec_ok(&["ip", "link", "set", "eth0", "down"])?;
        thread::sleep(DOWN_FOR);
        let cap = in_background(&lab.client, move || capture_first_garp(VIP4, LINK_CAPTURE));
        thread::sleep(GARP_LEAD);
        let t0 = Instant::now();
        lab.nodes[0].exec_ok(&["ip", "link", "set", "eth0", "up"])?;
        match join(cap)? {
            Some(t) => r
                .link_up_samples_ms
                .push(t.duration_since(t0).as_secs_f64() * 1000.0),
            None => r.link_up_failed_trials += 1,
        }
        // The GARP burst's later rounds (1.1 s on) belong to this trial.
        lab.wait_owner(IpAddr::V4(VIP4), Duration::from_secs(10))?;
        thread::sleep(Duration::from_millis(500));
    }
    (r.link_up_to_first_garp_ms, r.link_up_to_first_garp_p95_ms) = quantiles(
        &r.link_up_samples_ms,
        r.link_up_failed_trials,
        LINK_TIMEOUT_MS,
    );
    eprintln!(
        "link up to first GARP ms: {:?}, failed (no GARP seen): {}",
        r.link_up_samples_ms, r.link_up_failed_trials
    );
    Ok(r)
}

impl LinkReport {
    /// Its row of the Markdown table.
    pub fn markdown_row(&self, s: &mut String) {
        let n = self.link_up_samples_ms.len() + self.link_up_failed_trials;
        let failed = if self.link_up_failed_trials == 0 {
            String::new()
        } else {
            format!(
                ", {} failed, counted as {LINK_TIMEOUT_MS:.0} ms",
                self.link_up_failed_trials
            )
        };
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} ms"));
        let _ = writeln!(
            s,
            "| link up to first GARP, `ip link set eth0 up` to the client's capture (n={n}{failed}) | p50 {}, p95 {} | (listens 2 heartbeats first) |",
            ms(self.link_up_to_first_garp_ms),
            ms(self.link_up_to_first_garp_p95_ms)
        );
    }
}
