//! The node agent's part of IPAM (DESIGN.md §3): it reads this node's
//! `spec.podCIDRs` (k3s `--cluster-cidr` carved out of the LAN with a node
//! mask) and writes the node-range file the CNI plugin reads. The CNI
//! binary never talks to the API; for IPAM this agent is the only part of
//! flatlan that does.
//!
//! When the API is unreachable the file is left as it is: pods keep
//! getting addresses from the slice the node already knows.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::{Error, Result};

pub mod secret;

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The file now holds these CIDRs (it changed).
    Written(Vec<String>),
    /// The file already held them.
    Unchanged,
    /// The Node has no podCIDRs yet (the controller has not allocated
    /// them); the file is left alone and the CNI reports not-ready.
    NotAllocated,
}

/// The node's pod CIDRs, dual-stack aware: `spec.podCIDRs`, falling back to
/// the older single `spec.podCIDR`.
pub fn pod_cidrs(node: &Node) -> Vec<String> {
    let spec = node.spec.as_ref();
    let mut v = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if v.is_empty() {
        v.extend(spec.and_then(|s| s.pod_cidr.clone()));
    }
    v
}

/// The node-range file's content, in the shape `flatlan-ipam` reads.
pub fn render(cidrs: &[String]) -> String {
    format!("{}\n", serde_json::json!({ "podCIDRs": cidrs }))
}

/// Replaces `path` atomically and durably, only when the content differs:
/// the CNI plugin may read it at any moment and must never see half a file.
pub fn write_if_changed(path: &Path, contents: &str) -> io::Result<bool> {
    if fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok(true)
}

/// Reads the Node once and brings the file up to date.
pub async fn sync_once(api: &Api<Node>, node: &str, out: &Path) -> Result<Synced> {
    let n = api.get(node).await.map_err(|source| Error::Kube {
        node: node.to_string(),
        source: Box::new(source),
    })?;
    apply(&n, node, out)
}

/// Brings the file up to date with the Node `n` (named `node`).
pub fn apply(n: &Node, node: &str, out: &Path) -> Result<Synced> {
    let cidrs = pod_cidrs(n);
    if cidrs.is_empty() {
        return Ok(Synced::NotAllocated);
    }
    if let Some(bad) = cidrs.iter().find(|c| c.parse::<ipnet::IpNet>().is_err()) {
        return Err(Error::BadPodCidr {
            node: node.to_string(),
            cidr: bad.clone(),
        });
    }
    let changed = write_if_changed(out, &render(&cidrs)).map_err(|source| Error::File {
        path: out.display().to_string(),
        source,
    })?;
    Ok(if changed {
        Synced::Written(cidrs)
    } else {
        Synced::Unchanged
    })
}

/// Syncs until the file holds the node's slice, retrying every `retry`
/// for at most `timeout`: the DaemonSet's first init container (issue 14).
/// The installer writes the conflist only once this file exists, and a
/// freshly registered Node gets its podCIDRs some seconds after it shows
/// up (it may not even exist yet: `nodes "vm" not found`), so a short
/// retry here, not the watch's backoff, decides how soon pods start.
pub async fn until_synced(
    api: &Api<Node>,
    node: &str,
    out: &Path,
    retry: Duration,
    timeout: Duration,
) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match sync_once(api, node, out).await {
            Ok(Synced::Written(c)) => return Ok(c),
            Ok(Synced::Unchanged) => return Ok(Vec::new()),
            Ok(Synced::NotAllocated) => Error::Sys {
                op: format!(
                    "Node {node} has no spec.podCIDRs after {} s (does the controller manager allocate node CIDRs? k3s: --cluster-cidr)",
                    timeout.as_secs()
                ),
                source: io::ErrorKind::TimedOut.into(),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() + retry > deadline {
            return Err(last);
        }
        info!(node, "{last}; retrying in {} ms", retry.as_millis());
        tokio::time::sleep(retry).await;
    }
}

/// The watch on this node's Node alone: a field selector on its name, so
/// the API server sends this one object's changes (issue 13 item 5: a
/// watch, not a `get` every 30 s). The list is served from the API
/// server's cache (`resourceVersion=0`), and bookmarks keep a
/// reconnect from relisting.
pub fn watch_config(node: &str) -> watcher::Config {
    let mut c = watcher::Config::default()
        .fields(&format!("metadata.name={node}"))
        .any_semantic();
    // One object: no pages. (With a page limit kube-rs drops
    // `resourceVersion=0`, which would make every relist a quorum read.)
    c.page_size = None;
    c
}

/// Keeps the file in sync with the Node's podCIDRs until `shutdown`
/// resolves, by a watch on the Node: a change reaches the file as soon as
/// the API server has it. Errors are logged and the watch is resumed with
/// kube-rs's default backoff; the last good file stays in place (an
/// unreachable API server changes nothing on the node).
pub async fn run(
    client: Client,
    node: &str,
    out: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Node> = Api::all(client);
    let events = watcher(api, watch_config(node)).default_backoff();
    tokio::pin!(events);
    tokio::pin!(shutdown);
    let mut failing = false;
    loop {
        let ev = tokio::select! {
            () = &mut shutdown => return,
            ev = events.next() => ev,
        };
        let n = match ev {
            None => return,
            Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => n,
            Some(Ok(watcher::Event::Delete(_))) => {
                warn!(node, "the Node was deleted; keeping {}", out.display());
                continue;
            }
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
            Some(Err(e)) => {
                // The backoff spaces the retries; say it once per outage.
                if !std::mem::replace(&mut failing, true) {
                    warn!(
                        node,
                        "watching the Node: {e}; keeping {} and retrying",
                        out.display()
                    );
                }
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            info!(node, "watching the Node again");
        }
        match apply(&n, node, out) {
            Ok(Synced::Written(c)) => {
                info!(node, cidrs = ?c, path = %out.display(), "node range updated")
            }
            Ok(Synced::Unchanged) => {}
            Ok(Synced::NotAllocated) => warn!(
                node,
                "the Node has no podCIDRs yet; pods cannot be attached until it does"
            ),
            Err(e) => warn!("{e}; keeping {}", out.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    fn node_json(cidrs: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node1"},
            "spec": cidrs,
        }))
        .unwrap()
    }

    /// A client whose API server answers every request with `body`.
    fn fake_api(status: u16, body: Vec<u8>) -> (Api<Node>, tokio::task::JoinHandle<Vec<String>>) {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let mut paths = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                paths.push(req.uri().path().to_string());
                send.send_response(
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap(),
                );
            }
            paths
        });
        (Api::all(Client::new(mock, "default")), server)
    }

    #[tokio::test]
    async fn writes_the_pod_cidrs_once_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("node-range.json");
        let (api, server) = fake_api(
            200,
            node_json(serde_json::json!({"podCIDRs": ["192.168.2.208/28", "fd00:2::1:0/112"]})),
        );
        let got = sync_once(&api, "node1", &out).await.unwrap();
        assert_eq!(
            got,
            Synced::Written(vec!["192.168.2.208/28".into(), "fd00:2::1:0/112".into()])
        );
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            "{\"podCIDRs\":[\"192.168.2.208/28\",\"fd00:2::1:0/112\"]}\n"
        );
        assert_eq!(
            sync_once(&api, "node1", &out).await.unwrap(),
            Synced::Unchanged
        );
        drop(api);
        assert_eq!(
            server.await.unwrap(),
            ["/api/v1/nodes/node1", "/api/v1/nodes/node1"]
        );
    }

    #[tokio::test]
    async fn unallocated_bad_or_unreachable_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("node-range.json");
        fs::write(&out, "previous\n").unwrap();
        let (api, _s) = fake_api(200, node_json(serde_json::json!({})));
        assert_eq!(
            sync_once(&api, "node1", &out).await.unwrap(),
            Synced::NotAllocated
        );
        let (api, _s) = fake_api(
            200,
            node_json(serde_json::json!({"podCIDRs": ["not-a-cidr"]})),
        );
        let e = sync_once(&api, "node1", &out).await.unwrap_err();
        assert!(e.to_string().contains("not-a-cidr"), "{e}");
        let (api, _s) = fake_api(503, b"{}".to_vec());
        assert!(sync_once(&api, "node1", &out).await.is_err());
        assert_eq!(fs::read_to_string(&out).unwrap(), "previous\n");
    }

    #[tokio::test]
    async fn until_synced_returns_once_written_and_gives_up_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("node-range.json");
        let (api, _s) = fake_api(
            200,
            node_json(serde_json::json!({"podCIDRs": ["192.168.2.208/28"]})),
        );
        let ms = Duration::from_millis;
        let got = until_synced(&api, "node1", &out, ms(10), ms(1000))
            .await
            .unwrap();
        assert_eq!(got, ["192.168.2.208/28"]);
        assert!(out.is_file());
        let empty = dir.path().join("empty.json");
        let (api, s) = fake_api(200, node_json(serde_json::json!({})));
        let e = until_synced(&api, "node1", &empty, ms(10), ms(100))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no spec.podCIDRs"), "{e}");
        assert!(!empty.exists());
        drop(api);
        assert!(s.await.unwrap().len() > 2, "it retried");
    }

    fn node_obj(rv: &str, cidr: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node1", "resourceVersion": rv},
            "spec": {"podCIDRs": [cidr]},
        })
    }

    /// Issue 13 item 5: the agent lists and then watches its own Node
    /// (a field selector on its name, the list from the API server's
    /// cache), writes each change of podCIDRs as it arrives, and resumes
    /// the watch from the last resourceVersion: no periodic `get`.
    #[tokio::test]
    async fn run_watches_its_own_node_and_writes_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("node-range.json");
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let ok = |body: String| {
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body.into_bytes()))
                .unwrap()
        };
        let server = tokio::spawn(async move {
            let mut uris = Vec::new();
            let mut held = Vec::new();
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(req.method(), http::Method::GET);
                uris.push(req.uri().to_string());
                match uris.len() {
                    1 => send.send_response(ok(serde_json::json!({
                        "apiVersion": "v1", "kind": "NodeList",
                        "metadata": {"resourceVersion": "100"},
                        "items": [node_obj("100", "192.168.2.208/28")],
                    })
                    .to_string())),
                    2 => send.send_response(ok(format!(
                        "{}\n",
                        serde_json::json!({"type": "MODIFIED", "object": node_obj("101", "192.168.2.224/28")})
                    ))),
                    // The resumed watch: left open, as a quiet API server does.
                    _ => held.push(send),
                }
            }
            uris
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let client = Client::new(mock, "default");
        let path = out.clone();
        let agent = tokio::spawn(async move {
            run(client, "node1", &path, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let want = render(&["192.168.2.224/28".to_string()]);
        tokio::time::timeout(Duration::from_secs(10), async {
            while fs::read_to_string(&out).ok().as_deref() != Some(want.as_str()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the watched change reached the file");
        // Let the resumed watch go out before stopping.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop_tx.send(()).unwrap();
        agent.await.unwrap();
        let uris = server.await.unwrap();
        let sel = "fieldSelector=metadata.name%3Dnode1";
        assert_eq!(
            uris,
            [
                format!("/api/v1/nodes?&{sel}&resourceVersion=0&resourceVersionMatch=NotOlderThan"),
                format!("/api/v1/nodes?&watch=true&timeoutSeconds=290&{sel}&allowWatchBookmarks=true&resourceVersion=100"),
                format!("/api/v1/nodes?&watch=true&timeoutSeconds=290&{sel}&allowWatchBookmarks=true&resourceVersion=101"),
            ]
        );
    }

    #[test]
    fn falls_back_to_the_single_pod_cidr() {
        let n: Node = serde_json::from_slice(&node_json(
            serde_json::json!({"podCIDR": "192.168.2.224/28"}),
        ))
        .unwrap();
        assert_eq!(pod_cidrs(&n), ["192.168.2.224/28"]);
    }
}
