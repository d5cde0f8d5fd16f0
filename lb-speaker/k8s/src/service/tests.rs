use super::*;
use crate::testutil::{ip, labels};

fn service(yaml: &str) -> Service {
    serde_yaml::from_str(yaml).expect("test Service parses")
}

fn with_annotations(pairs: &[(&str, &str)], spec: &str) -> Service {
    let mut s = service(&format!(
        "metadata: {{name: web, namespace: shop}}\nspec:\n  type: LoadBalancer\n{spec}"
    ));
    s.metadata.annotations = Some(labels(pairs));
    s
}

#[test]
fn reads_spec_and_annotations_in_both_spellings() {
    let s = service(
        r#"
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  creationTimestamp: "2026-01-02T03:04:05Z"
  annotations:
    metallb.universe.tf/loadBalancerIPs: "192.168.1.240, fd00::240"
    metallb.io/address-pool: production
    metallb.universe.tf/allow-shared-ip: web-and-dns
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv6, IPv4]
  externalTrafficPolicy: Local
  selector: {app: web}
  ports:
  - {port: 80}
  - {port: 53, protocol: UDP}
"#,
    );
    let r = request(&s, &labels(&[("team", "a")])).unwrap();
    assert_eq!(r.key.to_string(), "shop/web");
    assert_eq!(r.created, 1_767_323_045);
    assert_eq!(r.requested, [ip("192.168.1.240"), ip("fd00::240")]);
    assert_eq!(r.pool.as_deref(), Some("production"));
    assert_eq!(r.sharing_key.as_deref(), Some("web-and-dns"));
    assert_eq!(r.policy, FamilyPolicy::RequireDualStack);
    assert!(!r.primary_v4);
    assert!(r.local);
    assert_eq!(r.selector, labels(&[("app", "web")]));
    assert_eq!(r.namespace_labels, labels(&[("team", "a")]));
    assert_eq!(
        r.ports,
        [
            Port {
                protocol: "TCP".into(),
                port: 80
            },
            Port {
                protocol: "UDP".into(),
                port: 53
            }
        ]
    );
}

#[test]
fn spec_load_balancer_ip_and_the_new_spelling() {
    let r = request(
        &with_annotations(&[], "  loadBalancerIP: 10.0.0.9\n"),
        &Labels::new(),
    )
    .unwrap();
    assert_eq!(r.requested, [ip("10.0.0.9")]);
    assert!(r.primary_v4 && !r.local && r.policy == FamilyPolicy::SingleStack);
    let s = with_annotations(
        &[("metallb.io/loadBalancerIPs", "10.0.0.9")],
        "  loadBalancerIP: 10.0.0.9\n",
    );
    assert_eq!(
        request(&s, &Labels::new()).unwrap().requested,
        [ip("10.0.0.9")]
    );
    let s = with_annotations(
        &[
            ("metallb.io/allow-shared-ip", "k"),
            ("metallb.universe.tf/allow-shared-ip", "k"),
        ],
        "",
    );
    assert_eq!(
        request(&s, &Labels::new()).unwrap().sharing_key.as_deref(),
        Some("k")
    );
}

#[test]
fn conflicting_or_bad_requests_say_which_fields() {
    let cases = [
        (
            with_annotations(
                &[("metallb.io/address-pool", "a"), ("metallb.universe.tf/address-pool", "b")],
                "",
            ),
            "metallb.io/address-pool: \"a\" and metallb.universe.tf/address-pool: \"b\" disagree; keep only one of them",
        ),
        (
            with_annotations(&[("metallb.io/loadBalancerIPs", "10.0.0.1")], "  loadBalancerIP: 10.0.0.2\n"),
            "spec.loadBalancerIP: \"10.0.0.2\" and metallb.io/loadBalancerIPs: \"10.0.0.1\" disagree; keep only one of them",
        ),
        (
            with_annotations(&[("metallb.io/loadBalancerIPs", "10.0.0.1,banana")], ""),
            "metallb.io/loadBalancerIPs: \"10.0.0.1,banana\" has \"banana\", which is not an IP address",
        ),
        (
            with_annotations(&[("metallb.io/loadBalancerIPs", "10.0.0.1,10.0.0.2")], ""),
            "lists more than one address of a family",
        ),
        (
            with_annotations(&[], "  loadBalancerIP: 10.0.0\n"),
            "spec.loadBalancerIP: \"10.0.0\" is not an IP address",
        ),
        (
            with_annotations(&[], "  ipFamilyPolicy: Sometimes\n"),
            "is not SingleStack, PreferDualStack or RequireDualStack",
        ),
    ];
    for (s, want) in cases {
        let e = request(&s, &Labels::new()).unwrap_err();
        assert_eq!(e.reason(), "AllocationFailed");
        assert!(e.to_string().contains(want), "{e} / {want}");
    }
}

#[test]
fn ours_means_load_balancer_and_our_class_or_none_when_default() {
    let lb = with_annotations(&[], "");
    assert!(is_ours(&lb, true));
    assert!(!is_ours(&lb, false));
    let ours = with_annotations(&[], "  loadBalancerClass: flatlan.dev/l2\n");
    assert!(is_ours(&ours, false));
    let theirs = with_annotations(&[], "  loadBalancerClass: example.com/other\n");
    assert!(!is_ours(&theirs, true));
    let cluster_ip = service("metadata: {name: x}\nspec: {type: ClusterIP}\n");
    assert!(!is_ours(&cluster_ip, true));
    assert!(!is_ours(&service("metadata: {name: x}\n"), true));
}

#[test]
fn status_ips_skip_hostnames_and_garbage() {
    let s = service(
        "metadata: {name: x}\nstatus:\n  loadBalancer:\n    ingress:\n    - ip: 10.0.0.1\n    - hostname: lb.example\n    - ip: fd00::1\n    - ip: nope\n",
    );
    assert_eq!(status_ips(&s), [ip("10.0.0.1"), ip("fd00::1")]);
    assert!(status_ips(&service("metadata: {name: x}\n")).is_empty());
}

proptest::proptest! {
    /// Whatever a user writes in the annotations and loadBalancerIP, the
    /// result is a request or an error, never a panic.
    #[test]
    fn any_annotation_text_is_a_request_or_an_error(
        ips in "[0-9a-f:., ]{0,40}",
        pool in ".{0,12}",
        key in ".{0,12}",
        lb in "[0-9a-f:.]{0,20}",
        old_spelling in proptest::bool::ANY,
    ) {
        let prefix = if old_spelling { "metallb.universe.tf" } else { "metallb.io" };
        let a = [
            (format!("{prefix}/loadBalancerIPs"), ips),
            (format!("{prefix}/address-pool"), pool),
            ("metallb.io/allow-shared-ip".to_string(), key),
        ];
        let pairs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let s = with_annotations(&pairs, &format!("  loadBalancerIP: {lb:?}\n"));
        if let Ok(r) = request(&s, &Labels::new()) {
            proptest::prop_assert!(r.requested.len() <= 2);
        }
    }
}
