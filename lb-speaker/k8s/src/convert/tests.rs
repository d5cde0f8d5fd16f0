use k8s_openapi::api::core::v1::ConfigMap;

use super::*;
use crate::testutil::labels;

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_yaml::from_str(s).expect("test YAML parses")
}

/// MetalLB's documented layer-2 example, every field set.
const METALLB_POOL: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: production
  namespace: metallb-system
  labels: {tier: front}
spec:
  addresses:
  - 192.168.10.0/24
  - 192.168.9.1-192.168.9.5
  - fc00:f853:0ccd:e799::/124
  autoAssign: false
  avoidBuggyIPs: true
  serviceAllocation:
    priority: 50
    namespaces: [namespace-a, namespace-b]
    namespaceSelectors:
    - matchLabels: {foo: bar}
    serviceSelectors:
    - matchExpressions:
      - {key: serviceKey, operator: In, values: [serviceVal]}
"#;

const METALLB_ADV: &str = r#"
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: example, namespace: metallb-system}
spec:
  ipAddressPools: [production]
  ipAddressPoolSelectors:
  - matchExpressions:
    - {key: tier, operator: In, values: [front]}
  nodeSelectors:
  - matchLabels: {kubernetes.io/hostname: nodeA}
  interfaces: [eth0, eth1]
  serviceSelectors:
  - matchLabels: {app: web}
"#;

#[test]
fn a_metallb_pool_maps_every_field() {
    let mut c = Collected::default();
    c.metallb_pool(&yaml(METALLB_POOL));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let p = &c.pools[0];
    assert_eq!(p.name, "production");
    assert_eq!(p.source, Source::MetalLb);
    assert_eq!(
        p.object.to_string(),
        "metallb.io/v1beta1 IPAddressPool metallb-system/production"
    );
    let ranges: Vec<String> = p.ranges.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        ranges,
        [
            "192.168.10.0-192.168.10.255",
            "192.168.9.1-192.168.9.5",
            "fc00:f853:ccd:e799::-fc00:f853:ccd:e799::f"
        ]
    );
    assert!(!p.auto_assign);
    assert!(p.avoid_buggy_ips);
    assert_eq!(p.alloc.priority, Some(50));
    assert_eq!(p.alloc.namespaces, ["namespace-a", "namespace-b"]);
    assert!(p.alloc.namespace_selectors[0].matches(&labels(&[("foo", "bar")])));
    assert!(p.alloc.service_selectors[0].matches(&labels(&[("serviceKey", "serviceVal")])));
    assert!(!p.alloc.service_selectors[0].matches(&labels(&[])));
    assert_eq!(p.labels, labels(&[("tier", "front")]));
}

#[test]
fn flatlan_and_metallb_pools_map_to_the_same_model() {
    let flatlan = METALLB_POOL
        .replace("metallb.io/v1beta1", "flatlan.dev/v1alpha1")
        .replace("  namespace: metallb-system\n", "");
    let mut a = Collected::default();
    a.flatlan_pool(&yaml(&flatlan));
    let mut b = Collected::default();
    b.metallb_pool(&yaml(METALLB_POOL));
    let (mut pa, pb) = (a.pools[0].clone(), b.pools[0].clone());
    assert_eq!(pa.source, Source::Flatlan);
    assert_eq!(pa.object.namespace, None);
    pa.source = pb.source;
    pa.object = pb.object.clone();
    assert_eq!(pa, pb);
    let mut a = Collected::default();
    a.flatlan_advertisement(&yaml(
        &METALLB_ADV.replace("metallb.io/v1beta1", "flatlan.dev/v1alpha1"),
    ));
    let mut b = Collected::default();
    b.metallb_advertisement(&yaml(METALLB_ADV));
    assert_eq!(
        a.advertisements[0].interfaces,
        b.advertisements[0].interfaces
    );
    assert_eq!(
        a.advertisements[0].node_selectors,
        b.advertisements[0].node_selectors
    );
}

#[test]
fn a_metallb_advertisement_maps_every_field_and_warns_about_preferences() {
    let mut c = Collected::default();
    c.metallb_advertisement(&yaml(METALLB_ADV));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let a = &c.advertisements[0];
    assert_eq!(a.pools, ["production"]);
    assert!(a.pool_selectors[0].matches(&labels(&[("tier", "front")])));
    assert!(a.node_selectors[0].matches(&labels(&[("kubernetes.io/hostname", "nodeA")])));
    assert_eq!(a.interfaces, ["eth0", "eth1"]);
    assert!(a.service_selectors[0].matches(&labels(&[("app", "web")])));

    let with_pref = format!(
        "{METALLB_ADV}  preferredNodeSelectors:\n  - weight: 10\n    preference: {{matchLabels: {{zone: a}}}}\n"
    );
    let mut c = Collected::default();
    c.metallb_advertisement(&yaml(&with_pref));
    assert_eq!(c.advertisements.len(), 1, "still served");
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].reason(), "Unsupported");
    let msg = c.warnings[0].problem.to_string();
    assert!(
        msg.contains("spec.preferredNodeSelectors is not supported"),
        "{msg}"
    );
}

#[test]
fn a_bad_pool_is_a_warning_for_that_pool_only() {
    let mut c = Collected::default();
    c.metallb_pool(&yaml(METALLB_POOL));
    c.metallb_pool(&yaml(
        "metadata: {name: broken, namespace: metallb-system}\nspec:\n  addresses: [192.168.1.300/24]\n",
    ));
    c.metallb_pool(&yaml(
        "metadata: {name: twice, namespace: metallb-system}\nspec:\n  addresses: [10.0.0.0/30, 10.0.0.2-10.0.0.9]\n",
    ));
    c.metallb_pool(&yaml("metadata: {name: empty}\nspec:\n  addresses: []\n"));
    let sel = "metadata: {name: badsel}\nspec:\n  addresses: [10.1.0.0/24]\n  serviceAllocation:\n    serviceSelectors:\n    - matchExpressions: [{key: a, operator: In}]\n";
    c.metallb_pool(&yaml(sel));
    assert_eq!(c.pools.len(), 1);
    let msgs: Vec<(String, &str, String)> = c
        .warnings
        .iter()
        .map(|w| (w.object.name.clone(), w.reason(), w.problem.to_string()))
        .collect();
    assert_eq!(msgs[0].0, "broken");
    assert_eq!(msgs[0].1, "InvalidPool");
    assert!(
        msgs[0].2.contains("192.168.1.300/24") && msgs[0].2.contains("write a CIDR"),
        "{msgs:?}"
    );
    assert!(
        msgs[1]
            .2
            .contains("10.0.0.0-10.0.0.3 and 10.0.0.2-10.0.0.9 overlap"),
        "{msgs:?}"
    );
    assert!(msgs[2].2.contains("addresses is empty"), "{msgs:?}");
    assert_eq!(msgs[3].1, "InvalidSelector");
    assert!(
        msgs[3]
            .2
            .starts_with("spec.serviceAllocation.serviceSelectors[0]: matchExpressions[0]"),
        "{msgs:?}"
    );
}

#[test]
fn a_bad_interface_pattern_refuses_the_advertisement() {
    for bad in ["e*th", "", "*x*"] {
        let mut c = Collected::default();
        c.flatlan_advertisement(&yaml(&format!(
            "metadata: {{name: a}}\nspec:\n  interfaces: [{bad:?}]\n"
        )));
        assert!(c.advertisements.is_empty(), "{bad:?}");
        assert!(c.warnings[0]
            .problem
            .to_string()
            .contains("may only end a prefix"));
    }
    // Names that are not ASCII are taken as they are (and never split).
    let mut c = Collected::default();
    c.flatlan_advertisement(&yaml(
        "metadata: {name: a}\nspec:\n  interfaces: [\"ethé\", \"wlé*\"]\n",
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.advertisements[0].interfaces, ["ethé", "wlé*"]);
}

#[test]
fn bgp_objects_are_warned_about() {
    let mut c = Collected::default();
    c.metallb_other("BGPPeer", Some("metallb-system".into()), "peer1");
    c.metallb_other("BGPAdvertisement", Some("metallb-system".into()), "adv");
    c.metallb_other("Frobnicator", None, "x");
    assert!(c.pools.is_empty() && c.advertisements.is_empty());
    let w = &c.warnings;
    assert_eq!(w.len(), 3);
    assert_eq!(
        w[0].object.to_string(),
        "metallb.io/v1beta1 BGPPeer metallb-system/peer1"
    );
    assert!(w[0].problem.to_string().contains("BGP is not implemented"));
    assert!(w[2]
        .problem
        .to_string()
        .contains("only IPAddressPool and L2Advertisement"));
}

const LEGACY: &str = r#"
peers:
- peer-address: 10.0.0.1
  peer-asn: 64512
  my-asn: 64512
bgp-communities:
  no-export: 65535:65281
address-pools:
- name: my-ip-space
  protocol: bgp
  addresses: [192.168.10.0/24]
- name: default
  protocol: layer2
  addresses:
  - 192.168.1.240-192.168.1.250
  - fd00:1::/120
  auto-assign: false
  avoid-buggy-ips: true
  bgp-advertisements:
  - localpref: 100
"#;

fn config_map(config: Option<&str>) -> ConfigMap {
    let mut cm: ConfigMap = yaml("metadata: {name: config, namespace: metallb-system}\n");
    cm.data = config.map(|c| [("config".to_string(), c.to_string())].into());
    cm
}

#[test]
fn the_legacy_config_map_maps_layer2_pools_and_warns_about_the_rest() {
    let mut c = Collected::default();
    c.metallb_config_map(&config_map(Some(LEGACY)));
    assert_eq!(c.pools.len(), 1);
    let p = &c.pools[0];
    assert_eq!(p.name, "default");
    assert_eq!(p.source, Source::MetalLbConfigMap);
    assert!(!p.auto_assign && p.avoid_buggy_ips);
    assert_eq!(p.ranges.len(), 2);
    assert_eq!(p.object.to_string(), "v1 ConfigMap metallb-system/config");
    // MetalLB announced every layer2 pool from every node.
    assert_eq!(c.advertisements.len(), 1);
    assert_eq!(c.advertisements[0].pools, ["default"]);
    assert!(c.advertisements[0].node_selectors.is_empty());
    let msgs: Vec<String> = c.warnings.iter().map(|w| w.problem.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("data.config: peers is not supported")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("data.config: bgp-communities")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(
            |m| m.contains("address-pools[0] (my-ip-space): protocol: bgp")
                && m.contains("not handed out")
        ),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("address-pools[1] (default): bgp-advertisements")),
        "{msgs:?}"
    );
}

#[test]
fn a_broken_config_map_is_one_warning() {
    for (cm, want) in [
        (config_map(None), "has no `config` key"),
        (
            config_map(Some("address-pools: {not: a list}")),
            "is not MetalLB's configuration",
        ),
        (
            config_map(Some(
                "address-pools:\n- name: x\n  protocol: layer2\n  addresses: [nope]\n",
            )),
            "ConfigMap config: data.config: address-pools[0] (x): addresses: invalid address range \"nope\"",
        ),
    ] {
        let mut c = Collected::default();
        c.metallb_config_map(&cm);
        assert!(c.pools.is_empty() && c.advertisements.is_empty());
        assert_eq!(c.warnings.len(), 1);
        let m = c.warnings[0].problem.to_string();
        assert!(m.contains(want), "{m}");
    }
}

proptest::proptest! {
    /// Any text in the legacy ConfigMap: pools and warnings, never a panic.
    #[test]
    fn any_config_map_text_is_pools_or_warnings(text in "(address-pools|protocol|layer2|addresses|name|auto-assign|peers|[-:\\[\\]{}, \n0-9./a-z]){0,200}") {
        let mut c = Collected::default();
        c.metallb_config_map(&config_map(Some(&text)));
        for p in &c.pools {
            proptest::prop_assert!(!p.ranges.is_empty());
        }
    }
}
