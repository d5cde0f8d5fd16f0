//! An in-memory Kubernetes API behind kube-rs's `tower-test` mock: enough
//! of GET, LIST, WATCH (from a resourceVersion, replayed from an event
//! log), POST, PUT (conditional on resourceVersion) and merge PATCH
//! (conditional when the body carries a resourceVersion) for the
//! allocator, and a log of every request for the tests to assert on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::SendResponse;

/// One request as the test sees it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Req {
    pub fn is_read(&self) -> bool {
        self.method == "GET"
    }
    pub fn is_watch(&self) -> bool {
        self.query.contains("watch=true")
    }
}

/// Where a path points: the group/version, namespace, plural, name and
/// subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loc {
    gv: String,
    ns: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse(path: &str) -> Option<Loc> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (gv, mut rest) = match *seg.first()? {
        "api" => (seg.get(1)?.to_string(), &seg[2..]),
        "apis" => (format!("{}/{}", seg.get(1)?, seg.get(2)?), &seg[3..]),
        _ => return None,
    };
    let mut ns = None;
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        ns = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    Some(Loc {
        gv,
        ns,
        plural: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

type Key = (String, String, Option<String>, String);
/// A watch waiting for events: where, from which version, which name.
type Parked = (Loc, u64, Option<String>, SendResponse<Response<Body>>);

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// (rv, gv, plural, ns, type, object)
    events: Vec<(u64, String, String, Option<String>, String, Value)>,
    parked: Vec<Parked>,
    /// gv/plural pairs whose CRD is not installed (404).
    missing: BTreeSet<(String, String)>,
    /// gv/plural pairs RBAC does not let the client read (403).
    forbidden: BTreeSet<(String, String)>,
    /// Paths where writes are refused (403).
    read_only: BTreeSet<String>,
    log: Vec<Req>,
}

fn status(code: u16, reason: &str, msg: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": msg, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

fn field_name(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let v = kv.strip_prefix("fieldSelector=")?;
        let v = v.replace("%3D", "=");
        v.strip_prefix("metadata.name=").map(str::to_string)
    })
}

fn query_rv(query: &str) -> u64 {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl State {
    fn matches(
        loc: &Loc,
        fname: &Option<String>,
        gv: &str,
        plural: &str,
        ns: &Option<String>,
        obj: &Value,
    ) -> bool {
        loc.gv == gv
            && loc.plural == plural
            && (loc.ns.is_none() || &loc.ns == ns)
            && fname
                .as_ref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    }

    /// Answers parked watches that have events after their version.
    fn wake(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for (loc, from, fname, send) in parked {
            let lines: Vec<String> = self
                .events
                .iter()
                .filter(|(rv, gv, pl, ns, _, o)| {
                    *rv > from && Self::matches(&loc, &fname, gv, pl, ns, o)
                })
                .map(|(_, _, _, _, t, o)| json!({"type": t, "object": o}).to_string())
                .collect();
            if lines.is_empty() {
                self.parked.push((loc, from, fname, send));
            } else {
                let body = lines.join("\n") + "\n";
                send.send_response(
                    Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(Body::from(body.into_bytes()))
                        .unwrap(),
                );
            }
        }
    }

    fn record(&mut self, key: &Key, t: &str, obj: Value) {
        self.events.push((
            self.rv,
            key.0.clone(),
            key.1.clone(),
            key.2.clone(),
            t.into(),
            obj,
        ));
        self.wake();
    }

    fn put(&mut self, key: Key, mut obj: Value, t: &str) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}", key.3));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!(format!(
                "2026-12-03T12:{:02}:{:02}Z",
                self.rv / 60 % 60,
                self.rv % 60
            ));
        }
        self.objects.insert(key.clone(), obj.clone());
        self.record(&key, t, obj.clone());
        obj
    }

    fn handle(&mut self, req: Req, send: SendResponse<Response<Body>>) {
        self.log.push(req.clone());
        let Some(loc) = parse(&req.path) else {
            return send.send_response(status(404, "NotFound", "bad path"));
        };
        if self.missing.contains(&(loc.gv.clone(), loc.plural.clone())) {
            return send.send_response(status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        if self
            .forbidden
            .contains(&(loc.gv.clone(), loc.plural.clone()))
        {
            return send.send_response(status(403, "Forbidden", "forbidden by RBAC"));
        }
        if req.method != "GET" && self.read_only.contains(&req.path) {
            return send.send_response(status(403, "Forbidden", "forbidden by RBAC"));
        }
        let key = |name: &str| {
            (
                loc.gv.clone(),
                loc.plural.clone(),
                loc.ns.clone(),
                name.to_string(),
            )
        };
        match (req.method.as_str(), &loc.name) {
            ("GET", None) if req.is_watch() => {
                let from = query_rv(&req.query);
                self.parked
                    .push((loc.clone(), from, field_name(&req.query), send));
                self.wake();
            }
            ("GET", None) => {
                let fname = field_name(&req.query);
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|((gv, pl, ns, _), o)| Self::matches(&loc, &fname, gv, pl, ns, o))
                    .map(|(_, o)| o.clone())
                    .collect();
                send.send_response(ok(&json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": self.rv.to_string()}, "items": items})));
            }
            ("GET", Some(n)) => match self.objects.get(&key(n)) {
                Some(o) => send.send_response(ok(o)),
                None => send.send_response(status(404, "NotFound", "not found")),
            },
            ("POST", None) => {
                let mut obj = req.body.clone();
                let name = match obj["metadata"]["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => {
                        let g = obj["metadata"]["generateName"]
                            .as_str()
                            .unwrap_or("x")
                            .to_string();
                        format!("{g}{}", self.rv + 1)
                    }
                };
                obj["metadata"]["name"] = json!(name);
                if self.objects.contains_key(&key(&name)) {
                    return send.send_response(status(409, "AlreadyExists", "exists"));
                }
                let o = self.put(key(&name), obj, "ADDED");
                send.send_response(ok(&o));
            }
            ("PUT", Some(n)) => {
                let Some(old) = self.objects.get(&key(n)) else {
                    return send.send_response(status(404, "NotFound", "not found"));
                };
                if req.body["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return send.send_response(status(
                        409,
                        "Conflict",
                        "the object has been modified",
                    ));
                }
                let o = self.put(key(n), req.body.clone(), "MODIFIED");
                send.send_response(ok(&o));
            }
            ("PATCH", Some(n)) => {
                let Some(old) = self.objects.get(&key(n)).cloned() else {
                    return send.send_response(status(404, "NotFound", "not found"));
                };
                let want = &req.body["metadata"]["resourceVersion"];
                if !want.is_null() && *want != old["metadata"]["resourceVersion"] {
                    return send.send_response(status(
                        409,
                        "Conflict",
                        "the object has been modified",
                    ));
                }
                let mut patch = req.body.clone();
                // The status subresource changes only the status.
                if loc.sub.as_deref() == Some("status") {
                    patch = json!({"status": req.body["status"]});
                }
                let mut obj = old;
                merge(&mut obj, &patch);
                let o = self.put(key(n), obj, "MODIFIED");
                send.send_response(ok(&o));
            }
            _ => send.send_response(status(405, "MethodNotAllowed", "not here")),
        }
    }
}

/// The fake API server; clone it to share.
#[derive(Clone)]
pub struct Fake {
    state: Arc<Mutex<State>>,
    mock: tower_test::mock::Mock<Request<Body>, Response<Body>>,
}

impl Fake {
    /// A server where every MetalLB kind is missing (no CRDs) unless
    /// `metallb` is set.
    pub fn start(metallb: bool) -> Fake {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = Arc::new(Mutex::new(State::default()));
        if !metallb {
            let mut s = state.lock().unwrap();
            for p in [
                "ipaddresspools",
                "l2advertisements",
                "bgpadvertisements",
                "bfdprofiles",
                "communities",
            ] {
                s.missing.insert(("metallb.io/v1beta1".into(), p.into()));
            }
            s.missing
                .insert(("metallb.io/v1beta2".into(), "bgppeers".into()));
        }
        let st = state.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let r = Req {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    body,
                };
                st.lock().unwrap().handle(r, send);
            }
        });
        Fake { state, mock }
    }

    /// Answers 403 for a kind, as a missing RBAC rule would.
    pub fn forbid(&self, gv: &str, plural: &str) {
        let mut s = self.state.lock().unwrap();
        s.forbidden.insert((gv.into(), plural.into()));
    }

    /// Answers 403 to writes at `path`.
    pub fn refuse_writes(&self, path: &str) {
        let mut s = self.state.lock().unwrap();
        s.read_only.insert(path.into());
    }

    pub fn client(&self) -> Client {
        Client::new(self.mock.clone(), "default")
    }

    /// Creates (or replaces) an object as a user would; `path` is its
    /// collection (`/api/v1/namespaces/default/services`).
    pub fn apply(&self, collection: &str, obj: Value) {
        let loc = parse(collection).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut s = self.state.lock().unwrap();
        let key = (loc.gv, loc.plural, loc.ns, name);
        let t = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.put(key, obj, t);
    }

    pub fn delete(&self, collection: &str, name: &str) {
        let loc = parse(collection).unwrap();
        let mut s = self.state.lock().unwrap();
        let key = (loc.gv, loc.plural, loc.ns, name.to_string());
        let obj = s.objects.remove(&key).unwrap();
        s.rv += 1;
        s.record(&key, "DELETED", obj);
    }

    /// Changes an object in place, as `kubectl edit` would.
    pub fn modify(&self, item: &str, f: impl FnOnce(&mut Value)) {
        let loc = parse(item).unwrap();
        let mut s = self.state.lock().unwrap();
        let key = (loc.gv, loc.plural, loc.ns, loc.name.unwrap());
        let mut obj = s.objects.get(&key).unwrap().clone();
        f(&mut obj);
        s.put(key, obj, "MODIFIED");
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        let loc = parse(path).unwrap();
        let s = self.state.lock().unwrap();
        s.objects
            .get(&(loc.gv, loc.plural, loc.ns, loc.name.unwrap()))
            .cloned()
    }

    pub fn log(&self) -> Vec<Req> {
        self.state.lock().unwrap().log.clone()
    }

    /// Waits (on the paused clock) until `f` holds of the log.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&[Req]) -> bool) {
        for _ in 0..6000 {
            if f(&self.log()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}; requests:\n{:#?}", self.log());
    }
}
