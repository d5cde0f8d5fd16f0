//! A privileged smoke test of `flatlan-lab speaker-bench` (and so of
//! `flatlan-speaker bench`): every phase with tiny counts, on the
//! workspace's `flatlan-speaker` (`cargo build --workspace --bins` first).
//! It checks that every figure is produced, never how fast anything is
//! (the machines are shared and noisy). Without root it fails, never
//! silently passes.

use flatlan_lab::speaker_bench::{run, BenchOptions};

#[test]
fn speaker_bench_runs_every_phase_with_tiny_counts() {
    if let Err(e) = netns_testkit::require_root() {
        panic!("privileged test cannot run: {e}. Run as root: sudo -E cargo test -p flatlan-lab");
    }
    let speaker =
        netns_testkit::flatlan::sibling_binary("flatlan-speaker").unwrap_or_else(|e| panic!("{e}"));
    let mut opts = BenchOptions::new(speaker);
    opts.trials = 1;
    opts.garp_trials = 1;
    opts.reload_trials = 2;
    opts.arp_requests = 10;
    // The poor-LAN phase defaults to the bench's 10 minutes; a smoke test
    // only needs it to run and report.
    opts.lossy_secs = 5;
    opts.link_trials = 1;
    let r = run(&opts).unwrap_or_else(|e| panic!("speaker bench: {e}"));
    assert_eq!(r.failover_ms.len() + r.failover_failed_trials, 1, "{r:?}");
    assert_eq!(r.handoff_lost_pings.len(), 1, "{r:?}");
    assert_eq!(
        r.start_garp_samples_ms.len() + r.start_garp_failed_trials,
        1,
        "{r:?}"
    );
    assert_eq!(
        r.first_garp_samples_ms.len() + r.first_garp_failed_trials,
        2,
        "{r:?}"
    );
    assert!(
        r.failover_p95_ms.is_some() && r.first_garp_ms.is_some(),
        "{r:?}"
    );
    assert!(r.arp_replies > 0 && r.arp_reply_p99_ms.is_some(), "{r:?}");
    assert!(r.all_1000_announced_s.is_some(), "{r:?}");
    assert!(
        r.rss_mb_1_vip.is_some() && r.rss_mb_1000_vips.is_some(),
        "{r:?}"
    );
    assert!(
        r.false_failovers.is_some()
            && r.lossy_run_secs.is_some()
            && r.failover_ms_lossy.len() + r.failover_failed_trials_lossy == 1,
        "{r:?}"
    );
    assert_eq!(
        r.link.link_up_samples_ms.len() + r.link.link_up_failed_trials,
        1,
        "{r:?}"
    );
    assert!(r.render_markdown().contains("failover after owner crash"));
}
