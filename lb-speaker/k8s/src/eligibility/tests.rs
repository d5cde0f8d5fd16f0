use super::*;
use crate::model::ObjectRef;
use crate::selector::Selector;
use crate::testutil::{ip, labels, pool, svc};

fn adv(yaml: &str) -> Advertisement {
    let spec: crate::crd::L2AdvertisementSpec =
        serde_yaml::from_str(yaml).expect("test spec parses");
    let sels = |v: &[_], f: &str| Selector::parse_all(v, f).expect("test selectors parse");
    Advertisement {
        object: ObjectRef {
            api_version: "flatlan.dev/v1alpha1".into(),
            kind: "L2Advertisement".into(),
            namespace: None,
            name: "a".into(),
        },
        pools: spec.ip_address_pools.clone(),
        pool_selectors: sels(&spec.ip_address_pool_selectors, "p"),
        node_selectors: sels(&spec.node_selectors, "n"),
        service_selectors: sels(&spec.service_selectors, "s"),
        interfaces: spec.interfaces,
    }
}

fn slice(ns: &str, svc: &str, eps: &[(&str, Option<bool>)]) -> EndpointSlice {
    let mut s: EndpointSlice = serde_yaml::from_str(&format!(
        "metadata: {{name: {svc}-x, namespace: {ns}, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nendpoints: []\n"
    ))
    .expect("test slice parses");
    for (node, ready) in eps {
        let mut e: k8s_openapi::api::discovery::v1::Endpoint =
            serde_yaml::from_str("addresses: [10.42.0.5]").expect("test endpoint parses");
        e.node_name = Some(node.to_string());
        e.conditions = ready.map(|r| k8s_openapi::api::discovery::v1::EndpointConditions {
            ready: Some(r),
            ..Default::default()
        });
        s.endpoints.push(e);
    }
    s
}

#[test]
fn node_selectors_and_the_exclude_label_decide() {
    let p = pool("p", 1, &["10.0.0.0/24"]);
    let s = svc("web");
    let ads = [adv("nodeSelectors: [{matchLabels: {lb: 'yes'}}]")];
    let yes = labels(&[("lb", "yes")]);
    let no = labels(&[("lb", "no")]);
    let node = |labels| Node { name: "n1", labels };
    assert_eq!(
        eligibility(node(&yes), &p, &[&s], &ads, &[]),
        Eligibility::Eligible(Interfaces::Any)
    );
    assert_eq!(
        eligibility(node(&no), &p, &[&s], &ads, &[]),
        Eligibility::NodeNotSelected
    );
    let excluded = labels(&[("lb", "yes"), (EXCLUDE_LABEL, "")]);
    assert_eq!(
        eligibility(node(&excluded), &p, &[&s], &ads, &[]),
        Eligibility::Excluded
    );
    assert_eq!(
        eligibility(node(&yes), &p, &[&s], &[], &[]),
        Eligibility::NotAdvertised
    );
}

#[test]
fn an_advertisement_covers_named_or_selected_pools_and_selected_services() {
    let mut p = pool("p", 1, &["10.0.0.0/24"]);
    p.labels = labels(&[("tier", "front")]);
    let s = svc("web");
    let n = labels(&[]);
    let node = Node {
        name: "n1",
        labels: &n,
    };
    let other = [adv("ipAddressPools: [q]")];
    assert_eq!(
        eligibility(node, &p, &[&s], &other, &[]),
        Eligibility::NotAdvertised
    );
    let by_label = [adv(
        "ipAddressPoolSelectors: [{matchLabels: {tier: front}}]",
    )];
    assert!(eligibility(node, &p, &[&s], &by_label, &[]).on("eth0"));
    let by_service = [adv("serviceSelectors: [{matchLabels: {app: web}}]")];
    assert_eq!(
        eligibility(node, &p, &[&s], &by_service, &[]),
        Eligibility::NotAdvertised
    );
    let mut web = svc("web");
    web.labels = labels(&[("app", "web")]);
    assert!(eligibility(node, &p, &[&web], &by_service, &[]).on("eth0"));
}

#[test]
fn interface_selectors_union_across_advertisements() {
    let p = pool("p", 1, &["10.0.0.0/24"]);
    let s = svc("web");
    let n = labels(&[("zone", "a")]);
    let node = Node {
        name: "n1",
        labels: &n,
    };
    let ads = [
        adv("interfaces: [eth0]"),
        adv("interfaces: ['enp*']\nnodeSelectors: [{matchLabels: {zone: a}}]"),
        adv("interfaces: [wlan0]\nnodeSelectors: [{matchLabels: {zone: b}}]"),
    ];
    let e = eligibility(node, &p, &[&s], &ads, &[]);
    assert_eq!(
        e,
        Eligibility::Eligible(Interfaces::Only(vec!["enp*".into(), "eth0".into()]))
    );
    assert!(e.on("eth0") && e.on("enp3s0"));
    assert!(!e.on("wlan0") && !e.on("eth1") && !e.on("en"));
    assert!(!Eligibility::NodeNotSelected.on("eth0"));
    assert_eq!(
        Interfaces::Only(vec!["eth0".into(), "enp*".into()]).pinned(),
        None
    );
    assert_eq!(Interfaces::Only(vec!["enp*".into()]).pinned(), None);
    assert_eq!(Interfaces::Only(vec!["eth1".into()]).pinned(), Some("eth1"));
    assert_eq!(Interfaces::Any.pinned(), None);
}

#[test]
fn local_traffic_policy_follows_endpoint_readiness() {
    let p = pool("p", 1, &["10.0.0.0/24"]);
    let mut s = svc("web");
    s.local = true;
    let ads = [adv("{}")];
    let n = labels(&[]);
    let node = |name| Node { name, labels: &n };
    let slices = [
        slice(
            "default",
            "web",
            &[("n1", Some(true)), ("n2", Some(false)), ("n3", None)],
        ),
        slice("default", "other", &[("n4", Some(true))]),
        slice("elsewhere", "web", &[("n5", Some(true))]),
    ];
    let elig = |name| eligibility(node(name), &p, &[&s], &ads, &slices);
    assert!(elig("n1").on("eth0"));
    assert_eq!(elig("n2"), Eligibility::NoReadyEndpoint, "not ready");
    assert!(elig("n3").on("eth0"), "unset ready counts as ready");
    assert_eq!(
        elig("n4"),
        Eligibility::NoReadyEndpoint,
        "another Service's endpoint"
    );
    assert_eq!(
        elig("n5"),
        Eligibility::NoReadyEndpoint,
        "another namespace"
    );
    // Cluster policy: endpoints do not matter.
    s.local = false;
    assert!(eligibility(node("n2"), &p, &[&s], &ads, &slices).on("eth0"));
}

#[test]
fn desired_vips_list_every_address_with_its_services() {
    let (mut a, _) = Allocator::new(vec![pool("p", 1, &["10.0.0.1-10.0.0.9"])]);
    let mut x = svc("x");
    x.sharing_key = Some("k".into());
    let mut y = svc("y");
    y.sharing_key = Some("k".into());
    y.ports = vec![crate::testutil::tcp(443)];
    let mut z = svc("z");
    z.local = true;
    for r in [&x, &y, &z] {
        a.assign(r).unwrap();
    }
    let requests: BTreeMap<_, _> = [&x, &y, &z]
        .iter()
        .map(|r| (r.key.clone(), (*r).clone()))
        .collect();
    let n = labels(&[]);
    let vips = desired_vips(
        Node {
            name: "n1",
            labels: &n,
        },
        &a,
        &requests,
        &[adv("{}")],
        &[],
    );
    assert_eq!(vips.len(), 2);
    assert_eq!(vips[0].address, ip("10.0.0.1"));
    assert_eq!(vips[0].services, [x.key.clone(), y.key.clone()]);
    assert_eq!(vips[0].here, Eligibility::Eligible(Interfaces::Any));
    assert_eq!(vips[1].address, ip("10.0.0.2"));
    assert_eq!(vips[1].pool, "p");
    assert_eq!(vips[1].here, Eligibility::NoReadyEndpoint);
}

#[test]
fn a_k8s_node_is_read_by_name_and_labels() {
    let n: k8s_openapi::api::core::v1::Node =
        serde_yaml::from_str("metadata: {name: n1, labels: {lb: 'yes'}}").unwrap();
    let node = Node::of(&n);
    assert_eq!((node.name, node.labels), ("n1", &labels(&[("lb", "yes")])));
    let bare: k8s_openapi::api::core::v1::Node =
        serde_yaml::from_str("metadata: {name: n2}").unwrap();
    assert!(Node::of(&bare).labels.is_empty());
}
