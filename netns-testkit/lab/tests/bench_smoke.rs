//! A privileged smoke test of `flatlan-lab bench`: the whole bench with
//! tiny counts. It checks that every figure is produced and sane, never
//! how fast anything is (the machines are shared and noisy). Without root
//! it fails, never silently passes.

use flatlan_lab::bench::{self, BenchOptions};

#[test]
fn bench_runs_end_to_end_with_tiny_counts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    if let Err(e) = netns_testkit::require_root() {
        panic!("privileged test cannot run: {e}. Run as root: sudo -E cargo test -p flatlan-lab");
    }
    let opts = BenchOptions {
        iterations: 5,
        warmup: Some(3),
        cold_trials: 1,
        burst: 4,
        burst_rounds: 1,
        iperf_seconds: 1,
        iperf_rounds: 1,
        // The speaker's bench is its own suite's business.
        skip_speaker: true,
        ..BenchOptions::default()
    };
    let r = bench::run(&opts).expect("bench runs");
    eprintln!("{}", r.render());

    assert_eq!(r.burst_duplicates, 0, "flatlan handed out an address twice");
    assert_eq!(r.reference_burst_duplicates, 0);
    assert_eq!(r.burst.failures, 0, "{:?}", r.burst.first_error);
    assert_eq!(
        r.reference_burst.failures, 0,
        "{:?}",
        r.reference_burst.first_error
    );
    for (side, pair) in [
        ("flatlan", &r.flatlan),
        ("reference", &r.reference),
        ("flatlan probe off", &r.flatlan_probe_off),
    ] {
        for (what, s) in [("ADD", &pair.add), ("DEL", &pair.del)] {
            let s = s.unwrap_or_else(|| panic!("no {side} {what} figures"));
            assert_eq!(s.n, 5, "{side} {what}");
            assert!(
                s.p50_ms > 0.0 && s.p50_ms <= s.p95_ms && s.p95_ms <= s.p99_ms,
                "{side} {what}: {s:?}"
            );
        }
    }
    let burst = r.burst.add.expect("burst figures");
    assert_eq!(burst.n, 4);
    let ratio = r.add_p50_ratio.expect("ADD ratio");
    assert!(ratio.is_finite() && ratio > 0.0, "{ratio}");
    assert!(r.del_p50_ratio.is_some_and(|x| x > 0.0));
    assert!(r.exec_baseline_p50_ms.is_some_and(|x| x > 0.0));
    assert_eq!(r.cold_first_add_trials_ms.len(), 1);
    let t = &r.throughput_gbps;
    for (what, v) in [
        ("pod -> device", t.flatlan_pod_to_device),
        ("pod -> node", t.flatlan_pod_to_node),
        ("bare veth", t.bare_veth),
        ("vxlan", t.vxlan_overlay),
    ] {
        assert!(v.is_some_and(|g| g > 0.0), "{what}: {v:?}");
    }
    assert!(r.throughput_ratio_vs_veth.is_some());
    // Skipped speaker: nulls, never numbers.
    assert!(!r.speaker.available);
    assert!(r.failover_p95_ms.is_none() && r.rss_mb_1000_vips.is_none());
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["burst_duplicates"], 0);
    assert!(json["failover_p95_ms"].is_null());
    assert_eq!(r.targets.len(), 6);
}
