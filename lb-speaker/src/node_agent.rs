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

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::{Error, Result};

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
    let cidrs = pod_cidrs(&n);
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
/// retry here, not the 30 s resync interval, decides how soon pods start.
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

/// Keeps the file in sync until `shutdown` resolves. Errors are logged and
/// retried; the last good file stays in place.
pub async fn run(
    client: Client,
    node: &str,
    out: &Path,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let api: Api<Node> = Api::all(client);
    tokio::pin!(shutdown);
    loop {
        match sync_once(&api, node, out).await {
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
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
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

    #[test]
    fn falls_back_to_the_single_pod_cidr() {
        let n: Node = serde_json::from_slice(&node_json(
            serde_json::json!({"podCIDR": "192.168.2.224/28"}),
        ))
        .unwrap();
        assert_eq!(pod_cidrs(&n), ["192.168.2.224/28"]);
    }
}
