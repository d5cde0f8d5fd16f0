//! The whole pure path as the watcher will drive it: MetalLB's YAML and a
//! flatlan pool in, Services in, addresses and this node's eligibility
//! out; the bad objects only ever hurt themselves.

use std::collections::BTreeMap;

use flatlan_k8s::allocator::Allocator;
use flatlan_k8s::convert::Collected;
use flatlan_k8s::eligibility::{desired_vips, Eligibility, Interfaces, Node};
use flatlan_k8s::pools::unknown_pools;
use flatlan_k8s::{crd, metallb, service};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_yaml::from_str(s).expect("test YAML parses")
}

fn svc(name: &str, extra_meta: &str, spec: &str) -> Service {
    yaml(&format!(
        "metadata:\n  name: {name}\n  namespace: shop\n{extra_meta}spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n{spec}"
    ))
}

#[test]
fn metallb_yaml_in_addresses_and_eligibility_out() {
    let mut c = Collected::default();
    c.metallb_pool(&yaml(
        "metadata: {name: lan, namespace: metallb-system, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec:\n  addresses: [192.168.1.240-192.168.1.241]\n",
    ));
    c.metallb_advertisement(&yaml(
        "metadata: {name: l2, namespace: metallb-system}\nspec:\n  ipAddressPools: [lan, legacy, typo]\n  interfaces: [eth0]\n",
    ));
    c.metallb_config_map(&yaml::<ConfigMap>(
        "metadata: {name: config, namespace: metallb-system}\ndata:\n  config: |\n    address-pools:\n    - name: legacy\n      protocol: layer2\n      addresses: [192.168.1.250/32]\n      auto-assign: false\n",
    ));
    // Bad: overlaps the older `lan`, and a range that does not parse.
    c.flatlan_pool(&yaml::<crd::IPAddressPool>(
        "metadata: {name: late, creationTimestamp: '2026-06-01T00:00:00Z'}\nspec:\n  addresses: [192.168.1.241/32]\n",
    ));
    c.flatlan_pool(&yaml::<crd::IPAddressPool>(
        "metadata: {name: broken}\nspec:\n  addresses: [192.168.1.0/33]\n",
    ));
    c.metallb_other("BGPPeer", Some("metallb-system".into()), "router");

    let services = [
        svc("web", "", ""),
        svc("pinned", "", "  loadBalancerIP: 192.168.1.250\n"),
        svc(
            "local",
            "",
            "  externalTrafficPolicy: Local\n  selector: {app: local}\n",
        ),
        svc("outside", "", "  loadBalancerIP: 10.9.9.9\n"),
        svc(
            "confused",
            "  annotations: {metallb.io/address-pool: lan, metallb.universe.tf/address-pool: legacy}\n",
            "",
        ),
        svc("late-comer", "", ""),
    ];
    let (mut alloc, pool_warnings, failed) = Allocator::rebuild(c.pools.clone(), &[]);
    assert!(failed.is_empty());
    let mut warnings: Vec<String> = c
        .warnings
        .iter()
        .chain(&pool_warnings)
        .chain(&unknown_pools(alloc.pools(), &c.advertisements))
        .map(|w| format!("{} {}: {}", w.reason(), w.object.name, w.problem))
        .collect();
    warnings.sort();
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    assert!(warnings[0].starts_with("InvalidAdvertisement l2: spec.ipAddressPools names pool typo"));
    assert!(warnings[1].starts_with("InvalidPool broken: addresses: invalid address range"));
    assert!(warnings[2].starts_with("InvalidPool late: pool late overlaps pool lan"));
    assert!(warnings[3].starts_with("Unsupported router: BGPPeer router is not supported"));

    let mut requests = BTreeMap::new();
    let mut events = Vec::new();
    for s in &services {
        assert!(service::is_ours(s, true));
        let result = service::request(s, &Default::default()).and_then(|r| {
            let a = alloc.assign(&r);
            requests.insert(r.key.clone(), r);
            a
        });
        events.push(match result {
            Ok(a) => format!("IPAllocated: {}", a.message()),
            Err(e) => format!("{}: {e}", e.reason()),
        });
    }
    assert_eq!(
        events[0],
        "IPAllocated: assigned [192.168.1.240] from pool lan"
    );
    assert_eq!(
        events[1],
        "IPAllocated: assigned [192.168.1.250] from pool legacy"
    );
    assert_eq!(
        events[2],
        "IPAllocated: assigned [192.168.1.241] from pool lan"
    );
    assert!(events[3].starts_with("AllocationFailed: requested IP 10.9.9.9 is outside every pool"));
    assert!(
        events[4].contains("disagree; keep only one of them"),
        "{}",
        events[4]
    );
    assert!(
        events[5].starts_with("AllocationFailed: pool exhausted: lan"),
        "{}",
        events[5]
    );

    let slices: Vec<EndpointSlice> = vec![yaml(
        "metadata: {name: local-1, namespace: shop, labels: {kubernetes.io/service-name: local}}\naddressType: IPv4\nendpoints:\n- addresses: [10.42.0.7]\n  nodeName: node-b\n  conditions: {ready: true}\n",
    )];
    let labels = BTreeMap::new();
    let here = |name| {
        desired_vips(
            Node {
                name,
                labels: &labels,
            },
            &alloc,
            &requests,
            &c.advertisements,
            &slices,
        )
    };
    let a = here("node-a");
    let vips: Vec<(String, &Eligibility)> =
        a.iter().map(|v| (v.address.to_string(), &v.here)).collect();
    let eth0 = Eligibility::Eligible(Interfaces::Only(vec!["eth0".into()]));
    assert_eq!(
        vips,
        [
            ("192.168.1.240".to_string(), &eth0),
            ("192.168.1.241".to_string(), &Eligibility::NoReadyEndpoint),
            // The ConfigMap's pool is advertised from every interface too.
            (
                "192.168.1.250".to_string(),
                &Eligibility::Eligible(Interfaces::Any)
            ),
        ]
    );
    assert_eq!(here("node-b")[1].here, eth0);

    // Pools and usage for the status writer.
    let usage = alloc.usage();
    let lan = usage
        .iter()
        .find(|u| u.name == "lan")
        .expect("lan is valid");
    assert_eq!((lan.assigned_v4, lan.available_v4), (2, 0));
    let status: metallb::IPAddressPoolStatus = flatlan_k8s::status::metallb(Some(lan));
    assert_eq!(serde_json::to_value(&status).unwrap()["assignedIPv4"], 2);
}
