//! The Kubernetes VIP source against kube-rs's `tower-test` mock: the
//! exact requests it makes, the desired set it sends, and that an API that
//! errors or hangs makes it send nothing (issue 13, item 4).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flatlan_speaker::kube_source::{KubeSource, Options};
use flatlan_speaker::link_events::Ifaces;
use flatlan_speaker::source::{DesiredVip, Update, VipSource};
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tower_test::mock::SendResponse;

const NODE: &str = "node-a";

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";
const FL_POOLS: &str = "/apis/flatlan.dev/v1alpha1/ipaddresspools";
const FL_ADS: &str = "/apis/flatlan.dev/v1alpha1/l2advertisements";
const ML_POOLS: &str = "/apis/metallb.io/v1beta1/ipaddresspools";
const ML_ADS: &str = "/apis/metallb.io/v1beta1/l2advertisements";
const CONFIG_MAPS: &str = "/api/v1/namespaces/metallb-system/configmaps";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    /// Every request gets a 500.
    Fail,
    /// No request is ever answered.
    Hang,
}

/// A request as the API server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: String,
}

#[derive(Default)]
struct State {
    lists: BTreeMap<&'static str, Vec<Value>>,
    /// Paths that answer 404 (a CRD not installed).
    absent: BTreeSet<&'static str>,
    mode: Option<Mode>,
    seen: Vec<Seen>,
    /// Watches held open (never answered until `expire_watches`).
    watches: Vec<SendResponse<Response<Body>>>,
    /// Held forever in Hang mode.
    hung: Vec<SendResponse<Response<Body>>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl Fake {
    fn client(&self) -> Client {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                me.answer(parts, String::from_utf8_lossy(&body).into_owned(), send);
            }
        });
        Client::new(mock, "default")
    }

    fn answer(
        &self,
        parts: http::request::Parts,
        body: String,
        send: SendResponse<Response<Body>>,
    ) {
        let mut s = self.0.lock().unwrap();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        s.seen.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        match s.mode.unwrap_or(Mode::Serve) {
            Mode::Hang => return s.hung.push(send),
            Mode::Fail => {
                return send.send_response(json_response(500, &status(500, "InternalError")))
            }
            Mode::Serve => {}
        }
        if path.ends_with("/events") {
            let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            v["metadata"]["resourceVersion"] = json!("5");
            return send.send_response(json_response(201, &v));
        }
        let Some(known) = s.lists.keys().find(|k| **k == path).copied() else {
            return send.send_response(json_response(404, &status(404, "NotFound")));
        };
        if s.absent.contains(known) {
            return send.send_response(json_response(404, &status(404, "NotFound")));
        }
        if query.contains("watch=true") {
            return s.watches.push(send);
        }
        let items = s.lists.get(known).cloned().unwrap_or_default();
        send.send_response(json_response(
            200,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
        ));
    }

    fn set(&self, path: &'static str, items: Vec<Value>) {
        self.0.lock().unwrap().lists.insert(path, items);
    }

    /// Switches mode; requests held by a hang are answered with a 500
    /// when it ends (a client would have timed out).
    fn mode(&self, m: Mode) {
        let mut s = self.0.lock().unwrap();
        s.mode = Some(m);
        if m != Mode::Hang {
            for h in std::mem::take(&mut s.hung) {
                h.send_response(json_response(500, &status(500, "Timeout")));
            }
        }
    }

    /// Back to serving, leaving the requests the hang held unanswered
    /// for good (a server that lost them).
    fn resume_silently(&self) {
        self.0.lock().unwrap().mode = Some(Mode::Serve);
    }

    /// Ends every open watch with 410 Gone: each watcher must list again.
    fn expire_watches(&self) {
        let ws: Vec<_> = std::mem::take(&mut self.0.lock().unwrap().watches);
        let gone = json!({"type": "ERROR", "object": status(410, "Expired")});
        for w in ws {
            let mut line = serde_json::to_vec(&gone).unwrap();
            line.push(b'\n');
            w.send_response(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Body::from(line))
                    .unwrap(),
            );
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    /// A cluster with the flatlan CRDs, one pool 10.0.0.240/28 advertised
    /// from every node, this Node, and nothing else.
    fn cluster() -> Fake {
        let f = Fake::default();
        f.set(SERVICES, vec![]);
        f.set(SLICES, vec![]);
        f.set(NODES, vec![node(json!({"zone": "a"}))]);
        f.set(
            FL_POOLS,
            vec![
                json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "lan", "resourceVersion": "1"},
                "spec": {"addresses": ["10.0.0.240/28"]}}),
            ],
        );
        f.set(
            FL_ADS,
            vec![
                json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "all", "resourceVersion": "1"}, "spec": {}}),
            ],
        );
        f.set(ML_POOLS, vec![]);
        f.set(ML_ADS, vec![]);
        f.set(CONFIG_MAPS, vec![]);
        f
    }

    fn without_metallb(self) -> Fake {
        let mut s = self.0.lock().unwrap();
        s.absent.insert(ML_POOLS);
        s.absent.insert(ML_ADS);
        drop(s);
        self
    }
}

fn node(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": NODE, "labels": labels, "resourceVersion": "1"}})
}

fn lb_service(name: &str, ip: &str, local: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "1"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "flatlan.dev/l2",
                 "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
                 "selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})
}

fn slice(svc: &str, node: &str, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-1"), "namespace": "default", "resourceVersion": "1",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "nodeName": node, "conditions": {"ready": ready}}]})
}

struct Running {
    rx: mpsc::Receiver<Update>,
    _ifaces: watch::Sender<Ifaces>,
}

fn start(fake: &Fake) -> Running {
    start_with(fake, Duration::from_secs(60))
}

fn start_with(fake: &Fake, list_timeout: Duration) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let (itx, irx) = watch::channel(Ifaces::new());
    let opts = Options {
        debounce: Duration::from_millis(10),
        absent_retry: Duration::from_secs(3600),
        list_timeout,
        events: false,
        ..Options::default()
    };
    let src = KubeSource::new(fake.client(), NODE.into(), opts).with_ifaces(irx);
    Box::new(src).start(tx).unwrap();
    Running { rx, _ifaces: itx }
}

impl Running {
    async fn next_vips(&mut self) -> Vec<DesiredVip> {
        match tokio::time::timeout(Duration::from_secs(40), self.rx.recv()).await {
            Ok(Some(Update::Vips(v))) => v,
            other => panic!("expected Update::Vips, got {other:?}"),
        }
    }

    /// Asserts that nothing is sent for `d`.
    async fn quiet_for(&mut self, d: Duration) {
        if let Ok(u) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("expected no update, got {u:?}");
        }
    }
}

fn one(v: &[DesiredVip]) -> (String, bool) {
    assert_eq!(v.len(), 1, "{v:?}");
    (v[0].vip.address.to_string(), v[0].eligible)
}

#[tokio::test]
async fn a_service_with_an_ingress_ip_is_sent_after_exact_lists() {
    let f = Fake::cluster();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.241", false)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.241".into(), true));
    let lists: BTreeSet<(String, String, String)> = f
        .seen()
        .into_iter()
        .filter(|s| !s.query.contains("watch=true"))
        .map(|s| (s.method, s.path, s.query))
        .collect();
    let get = |p: &str, q: &str| ("GET".to_string(), p.to_string(), q.to_string());
    let want: BTreeSet<_> = [
        get(SERVICES, "&limit=500"),
        get(
            SLICES,
            "&labelSelector=kubernetes.io%2Fservice-name&limit=500",
        ),
        get(NODES, "&fieldSelector=metadata.name%3Dnode-a&limit=500"),
        get(FL_POOLS, "&limit=500"),
        get(FL_ADS, "&limit=500"),
        get(ML_POOLS, "&limit=500"),
        get(ML_ADS, "&limit=500"),
        get(
            CONFIG_MAPS,
            "&fieldSelector=metadata.name%3Dconfig&limit=500",
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(lists, want);
    // Every watch starts from the list's resourceVersion; no write at all.
    for s in f.seen() {
        assert_eq!(s.method, "GET", "{s:?}");
    }
    // A Service of another class, or without status, adds nothing.
    r.quiet_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn etp_local_follows_endpointslice_readiness() {
    let f = Fake::cluster();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.242", true)]);
    f.set(SLICES, vec![slice("web", NODE, true)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.242".into(), true));
    // The endpoint turns unready: the next complete list says so.
    f.set(SLICES, vec![slice("web", NODE, false)]);
    f.expire_watches();
    assert_eq!(one(&r.next_vips().await), ("10.0.0.242".into(), false));
    // A ready endpoint on another node does not make this one eligible.
    f.set(SLICES, vec![slice("web", "node-b", true)]);
    f.expire_watches();
    r.quiet_for(Duration::from_millis(500)).await;
    f.set(SLICES, vec![slice("web", NODE, true)]);
    f.expire_watches();
    assert_eq!(one(&r.next_vips().await), ("10.0.0.242".into(), true));
}

#[tokio::test]
async fn a_node_selector_that_excludes_this_node_makes_it_ineligible() {
    let f = Fake::cluster();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.243", false)]);
    f.set(
        FL_ADS,
        vec![
            json!({"apiVersion": "flatlan.dev/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "zone-b", "resourceVersion": "1"},
            "spec": {"nodeSelectors": [{"matchLabels": {"zone": "b"}}]}}),
        ],
    );
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.243".into(), false));
    // The Node is relabelled into zone b.
    f.set(NODES, vec![node(json!({"zone": "b"}))]);
    f.expire_watches();
    assert_eq!(one(&r.next_vips().await), ("10.0.0.243".into(), true));
}

#[tokio::test]
async fn metallb_pool_and_advertisement_give_the_same_result() {
    let f = Fake::cluster();
    f.set(FL_POOLS, vec![]);
    f.set(FL_ADS, vec![]);
    f.set(
        ML_POOLS,
        vec![
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "lan", "namespace": "metallb-system", "resourceVersion": "1"},
            "spec": {"addresses": ["10.0.0.240-10.0.0.250"]}}),
        ],
    );
    f.set(
        ML_ADS,
        vec![json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": "l2", "namespace": "metallb-system", "resourceVersion": "1"},
            "spec": {"ipAddressPools": ["lan"], "nodeSelectors": [{"matchLabels": {"zone": "a"}}]}})],
    );
    f.set(SERVICES, vec![lb_service("web", "10.0.0.244", false)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.244".into(), true));
}

#[tokio::test]
async fn legacy_config_map_is_read() {
    let f = Fake::cluster().without_metallb();
    f.set(FL_POOLS, vec![]);
    f.set(FL_ADS, vec![]);
    f.set(
        CONFIG_MAPS,
        vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config", "namespace": "metallb-system", "resourceVersion": "1"},
            "data": {"config": "address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 10.0.0.240/28\n"}})],
    );
    f.set(SERVICES, vec![lb_service("web", "10.0.0.245", false)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.245".into(), true));
}

#[tokio::test]
async fn missing_metallb_crds_do_not_stop_the_source() {
    let f = Fake::cluster().without_metallb();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.246", false)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.246".into(), true));
    // Asked once each (retried only after `absent_retry`, an hour here).
    let asked = |p: &str| f.seen().iter().filter(|s| s.path == p).count();
    assert_eq!(asked(ML_POOLS), 1);
    assert_eq!(asked(ML_ADS), 1);
    // And it goes on following the rest.
    f.set(SERVICES, vec![]);
    f.expire_watches();
    assert_eq!(r.next_vips().await, vec![]);
}

#[tokio::test]
async fn an_api_that_errors_or_hangs_changes_nothing() {
    let f = Fake::cluster();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.247", false)]);
    let mut r = start(&f);
    assert_eq!(one(&r.next_vips().await), ("10.0.0.247".into(), true));
    // The Service is gone, but every list fails: nothing is withdrawn.
    f.set(SERVICES, vec![]);
    f.mode(Mode::Fail);
    f.expire_watches();
    r.quiet_for(Duration::from_secs(3)).await;
    let failed = f.seen().iter().filter(|s| s.path == SERVICES).count();
    assert!(
        failed >= 3,
        "the watcher keeps retrying ({failed} requests)"
    );
    // Now every request hangs.
    f.mode(Mode::Hang);
    r.quiet_for(Duration::from_secs(3)).await;
    // Only a successful complete list removes it.
    f.mode(Mode::Serve);
    f.expire_watches();
    assert_eq!(r.next_vips().await, vec![]);
}

#[tokio::test]
async fn a_list_never_answered_is_started_over() {
    let f = Fake::cluster();
    f.set(SERVICES, vec![lb_service("web", "10.0.0.248", false)]);
    let mut r = start_with(&f, Duration::from_secs(2));
    assert_eq!(one(&r.next_vips().await), ("10.0.0.248".into(), true));
    f.set(SERVICES, vec![]);
    f.mode(Mode::Hang);
    f.expire_watches();
    r.quiet_for(Duration::from_secs(3)).await;
    // The server is back, but the lists it swallowed are never answered:
    // only starting over finds that the Service is gone.
    f.resume_silently();
    assert_eq!(r.next_vips().await, vec![]);
}

mod events {
    use super::*;
    use flatlan_k8s::eligibility::{Eligibility, Interfaces};
    use flatlan_k8s::model::ServiceKey;
    use flatlan_speaker::kube_source::desired::ServiceRef;
    use flatlan_speaker::kube_source::{events, Index, VipInfo};
    use flatlan_speaker::status::{Status, VipStatus};

    fn vip(state: &str, answered: Option<&str>) -> VipStatus {
        VipStatus {
            vip: "10.0.0.241".into(),
            owner: (state == "announcing").then(|| NODE.into()),
            state: state.into(),
            interface: Some("eth0".into()),
            mac: None,
            last_garp_unix_ms: None,
            conflict: None,
            foreign: None,
            probe_answered_by: answered.map(Into::into),
        }
    }

    fn status(v: VipStatus) -> Option<Arc<Status>> {
        Some(Arc::new(Status {
            node: NODE.into(),
            updated_unix_ms: 0,
            members: vec![],
            leaving: false,
            vips: vec![v],
        }))
    }

    fn index() -> Index {
        let mut i = Index::new();
        i.insert(
            "10.0.0.241".parse().unwrap(),
            VipInfo {
                pool: "lan".into(),
                services: vec![ServiceRef {
                    key: ServiceKey {
                        namespace: "shop".into(),
                        name: "web".into(),
                    },
                    uid: Some("uid-web".into()),
                }],
                here: Eligibility::Eligible(Interfaces::Any),
            },
        );
        i
    }

    /// The POSTs the fake has seen, as JSON bodies.
    async fn posts(f: &Fake, n: usize) -> Vec<(Seen, Value)> {
        for _ in 0..200 {
            let p: Vec<_> = f
                .seen()
                .into_iter()
                .filter(|s| s.method == "POST")
                .collect();
            if p.len() >= n {
                return p
                    .into_iter()
                    .map(|s| {
                        let v = serde_json::from_str(&s.body).unwrap();
                        (s, v)
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("fewer than {n} POSTs: {:?}", f.seen());
    }

    #[tokio::test]
    async fn node_assigned_and_conflict_are_posted_once() {
        let f = Fake::default();
        let (stx, srx) = watch::channel(None);
        let (_itx, irx) = watch::channel(Arc::new(index()));
        events::spawn(f.client(), NODE.into(), srx, irx);

        stx.send_replace(status(vip("announcing", None)));
        let p = posts(&f, 1).await;
        let (req, body) = &p[0];
        assert_eq!(req.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
        assert_eq!(req.query, "");
        assert_eq!(body["type"], "Normal");
        assert_eq!(body["reason"], "nodeAssigned");
        assert_eq!(body["action"], "Announce");
        assert_eq!(
            body["note"],
            "announcing 10.0.0.241 from node node-a interface eth0"
        );
        assert_eq!(body["reportingController"], "flatlan.dev/speaker");
        assert_eq!(body["reportingInstance"], NODE);
        assert_eq!(
            body["regarding"],
            json!({"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "web", "uid": "uid-web"})
        );
        // Still announcing: no second Event.
        stx.send_replace(status(vip("announcing", None)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(f.seen().len(), 1);

        stx.send_replace(status(vip("conflict", Some("02:00:00:00:00:99"))));
        let p = posts(&f, 2).await;
        let (req, body) = &p[1];
        assert_eq!(req.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["reason"], "AddressConflict");
        assert_eq!(
            body["note"],
            "node node-a does not announce 10.0.0.241: the LAN host with MAC 02:00:00:00:00:99 \
             answered its probe for it. Free the address on that host, or remove 10.0.0.241 \
             from pool lan so that the Service gets another"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(f.seen().len(), 2);
    }

    #[tokio::test]
    async fn an_api_that_hangs_never_holds_the_status_feed() {
        let f = Fake::default();
        f.mode(Mode::Hang);
        let (stx, srx) = watch::channel(None);
        let (_itx, irx) = watch::channel(Arc::new(index()));
        events::spawn(f.client(), NODE.into(), srx, irx);
        // The engine's side is a watch: replacing never waits, however
        // many statuses go by while the write hangs.
        let t = std::time::Instant::now();
        for i in 0..1000 {
            let state = if i % 2 == 0 { "announcing" } else { "standby" };
            stx.send_replace(status(vip(state, None)));
            tokio::task::yield_now().await;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One write in flight, none retried or piled up behind it.
        assert_eq!(f.seen().len(), 1, "{:?}", f.seen());
    }
}
