//! Fuzz-style properties (cargo-fuzz needs a nightly toolchain, which these
//! machines do not have): no input, however mangled, panics the parser.

use proptest::prelude::*;

use super::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~]{0,24}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("192.168.2.0/24"),
            Just("192.168.2.1"),
            Just("fd00::/64"),
            Just("10.0.0.1-10.0.0.0"),
            Just("1.0.0.0/33"),
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("cniVersion".to_string()),
                    Just("name".to_string()),
                    Just("type".to_string()),
                    Just("ipam".to_string()),
                    Just("subnet".to_string()),
                    Just("ranges".to_string()),
                    Just("exclude".to_string()),
                    Just("gateway".to_string()),
                    Just("subnets".to_string()),
                    Just("mtu".to_string()),
                    Just("probe".to_string()),
                    Just("runtimeConfig".to_string()),
                    Just("ips".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..8,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = NetConf::parse(&bytes);
        let _ = peek_version(&bytes);
    }

    #[test]
    fn structured_garbage_never_panics(v in json_value()) {
        if let Ok(conf) = NetConf::parse(v.to_string().as_bytes()) {
            // Whatever parses must be usable without panicking too.
            let _ = conf.subnets();
            let _ = conf.requested_ips(Some("1.2.3.4,::1,x"));
        }
    }

    #[test]
    fn mutated_valid_config_never_panics(
        key in prop_oneof![Just("subnet"), Just("gateway"), Just("ranges"), Just("exclude")],
        value in json_value(),
    ) {
        let mut v = serde_json::json!({
            "cniVersion": "1.1.0", "name": "lan", "type": "flatlan",
            "ipam": {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
                     "ranges": ["192.168.2.210-192.168.2.219"]}
        });
        v["ipam"][key] = value;
        let _ = NetConf::parse(v.to_string().as_bytes());
    }
}
