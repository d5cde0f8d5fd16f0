//! The `cni_config` check: shared by `fuzz/fuzz_targets/cni_config.rs` and
//! the corpus replay in `cni-plugin/tests/fuzz_corpus.rs`.
//!
//! Input: the network configuration, as the runtime writes it to stdin.

use flatlan_cni::config::{peek_version, NetConf, SUPPORTED_VERSIONS};

pub fn check(data: &[u8]) {
    let version = peek_version(data);
    let parsed = NetConf::parse(data);
    // The error reply a runtime would get is always buildable.
    if let Err(e) = &parsed {
        let v = version.as_deref().unwrap_or("1.1.0");
        let j = serde_json::to_value(e.to_json(v)).expect("error JSON serializes");
        assert_eq!(j["code"].as_u64(), Some(u64::from(e.code())));
    }
    // Round trip: the same document re-serialized parses the same way.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let again = serde_json::to_vec(&value).expect("a Value serializes");
        let reparsed = NetConf::parse(&again);
        match (&parsed, &reparsed) {
            (Ok(a), Ok(b)) => assert_eq!(summary(a), summary(b)),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "{a} vs {b}"),
            (a, b) => panic!("round trip changed the verdict: {a:?} vs {b:?}"),
        }
    } else {
        assert!(parsed.is_err());
    }
    let Ok(conf) = parsed else {
        return;
    };

    // What validation promises.
    assert_eq!(version.as_deref(), Some(conf.cni_version.as_str()));
    assert!(SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()));
    assert!(!conf.name.is_empty());
    assert!(!conf.bridge.is_empty() && conf.bridge.len() <= 15);
    let subnets = conf.subnets();
    assert!(!subnets.is_empty() && subnets.len() <= 2, "{subnets:?}");
    if subnets.len() == 2 {
        assert_ne!(
            subnets[0].subnet.addr().is_ipv4(),
            subnets[1].subnet.addr().is_ipv4()
        );
    }
    for s in subnets {
        if let Some(gw) = s.gateway {
            assert!(s.subnet.contains(&gw));
        }
        if s.ranges.is_empty() {
            assert!(conf.ipam.range_file.is_some());
            continue;
        }
        // Whatever parses must be usable: the pool builds, and counting and
        // walking it end (both are capped for a huge IPv6 slice).
        let pool = flatlan_ipam::Pool::new(s.subnet, &s.ranges, &s.exclude)
            .expect("validation built this pool already");
        let n = pool.usable_count();
        let first = pool.candidates_after(None).next();
        assert_eq!(n == 0, first.is_none(), "{}", pool.describe());
        if let Some(ip) = first {
            assert!(pool.is_usable(ip));
            assert!(s.subnet.contains(&ip));
        }
    }
    let probe = &conf.ipam.probe;
    if probe.enabled {
        assert!(probe.sync_config().validate().is_ok());
    }
    let _ = (
        probe.sync_config().duration(),
        probe.ahead_config().duration(),
    );
    // Bounded knobs and node paths (issue 10 item 7).
    assert!((1..=5).contains(&probe.probes) && probe.interval_ms <= 500);
    assert!((1..=1000).contains(&probe.wait_ms) && probe.ahead <= 64);
    assert!(conf.ipam.data_dir.is_absolute() && conf.ipam.boot_id_path.is_absolute());
    assert!(conf
        .ipam
        .range_file
        .as_ref()
        .is_none_or(|p| p.is_absolute()));
    // A MAC capability that parsed is one a pod can own, and wins over MAC=.
    if conf.runtime_config.mac.is_some() {
        let mac = conf
            .requested_mac(Some("zz"))
            .expect("validated at parse time")
            .expect("the capability");
        assert!(mac.is_unicast());
    }
    let _ = conf.requested_mac(Some("02:00:00:00:00:01"));
    // Requested addresses from the config alone, and with a CNI_ARGS IP.
    if let Ok(ips) = conf.requested_ips(None) {
        assert!(ips.len() <= conf.runtime_config.ips.len());
    }
    let _ = conf.requested_ips(Some("192.168.2.210,fd00::1"));
}

/// Everything parsing decides, minus `prevResult` (an opaque `Value` whose
/// floats need not survive a text round trip bit for bit).
fn summary(c: &NetConf) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        c.cni_version,
        c.name,
        c.plugin_type,
        c.bridge,
        c.mtu,
        c.service_cidrs,
        c.ensure_br_netfilter,
        c.ipam,
        c.log_level,
        c.runtime_config,
        c.valid_attachments,
        c.subnets(),
    )
}
