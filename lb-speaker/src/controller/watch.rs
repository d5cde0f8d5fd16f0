//! The leader's watches: one LIST then WATCH per kind, for the whole term.
//! The LIST carries no resourceVersion, so it is a consistent read: a new
//! leader sees every status the previous one wrote before it assigns
//! anything. A kind whose CRD is not installed (404) lists as empty and is
//! looked for again every `missing_retry`, and so does an optional kind
//! (MetalLB's, the legacy ConfigMap) that RBAC forbids (403); any other
//! error retries with a backoff and keeps the term from acting until the
//! kind is listed.

use std::fmt::Debug;
use std::time::Duration;

use flatlan_k8s::{crd, metallb};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::world::{Change, Kind, Obj};

/// MetalLB kinds flatlan does not implement: group version, kind, plural.
const METALLB_OTHER: [(&str, &str, &str); 4] = [
    ("v1beta2", "BGPPeer", "bgppeers"),
    ("v1beta1", "BGPAdvertisement", "bgpadvertisements"),
    ("v1beta1", "BFDProfile", "bfdprofiles"),
    ("v1beta1", "Community", "communities"),
];

/// Every kind the leader waits for before it acts.
pub fn kinds() -> Vec<Kind> {
    let mut k = vec![
        Kind::Service,
        Kind::Namespace,
        Kind::FlatlanPool,
        Kind::FlatlanAdvertisement,
        Kind::MetalLbPool,
        Kind::MetalLbAdvertisement,
        Kind::LegacyConfig,
    ];
    k.extend(
        METALLB_OTHER
            .iter()
            .map(|(_, kind, _)| Kind::MetalLbOther(kind)),
    );
    k
}

/// Starts every watch; they stop when `tasks` is aborted or dropped.
pub fn spawn_all(
    client: &Client,
    missing_retry: Duration,
    tx: &mpsc::Sender<Change>,
    tasks: &mut JoinSet<()>,
) {
    let c = client;
    let all = ListParams::default;
    let r = missing_retry;
    tasks.spawn(watch(
        Api::<Service>::all(c.clone()),
        all(),
        Kind::Service,
        |o| Obj::Service(Box::new(o)),
        tx.clone(),
        r,
    ));
    tasks.spawn(watch(
        Api::<Namespace>::all(c.clone()),
        all(),
        Kind::Namespace,
        |o| Obj::Namespace(Box::new(o)),
        tx.clone(),
        r,
    ));
    tasks.spawn(watch(
        Api::<crd::IPAddressPool>::all(c.clone()),
        all(),
        Kind::FlatlanPool,
        |o| Obj::FlatlanPool(Box::new(o)),
        tx.clone(),
        r,
    ));
    tasks.spawn(watch(
        Api::<crd::L2Advertisement>::all(c.clone()),
        all(),
        Kind::FlatlanAdvertisement,
        |o| Obj::FlatlanAdvertisement(Box::new(o)),
        tx.clone(),
        r,
    ));
    tasks.spawn(watch(
        Api::<metallb::IPAddressPool>::all(c.clone()),
        all(),
        Kind::MetalLbPool,
        |o| Obj::MetalLbPool(Box::new(o)),
        tx.clone(),
        r,
    ));
    tasks.spawn(watch(
        Api::<metallb::L2Advertisement>::all(c.clone()),
        all(),
        Kind::MetalLbAdvertisement,
        |o| Obj::MetalLbAdvertisement(Box::new(o)),
        tx.clone(),
        r,
    ));
    // Only the one ConfigMap MetalLB read, not every ConfigMap.
    tasks.spawn(watch(
        Api::<ConfigMap>::namespaced(c.clone(), "metallb-system"),
        all().fields("metadata.name=config"),
        Kind::LegacyConfig,
        |o| Obj::LegacyConfig(Box::new(o)),
        tx.clone(),
        r,
    ));
    for (version, kind, plural) in METALLB_OTHER {
        let gvk = GroupVersionKind::gvk("metallb.io", version, kind);
        let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
        let wrap = move |o: DynamicObject| Obj::MetalLbOther {
            kind,
            namespace: o.namespace(),
            name: o.name_any(),
        };
        tasks.spawn(watch(
            Api::all_with(c.clone(), &ar),
            all(),
            Kind::MetalLbOther(kind),
            wrap,
            tx.clone(),
            r,
        ));
    }
}

/// How long to wait before the next LIST after a failure.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1 << n.min(5))
}

/// LIST then WATCH one kind forever, reporting through `tx`.
async fn watch<K, F>(
    api: Api<K>,
    lp: ListParams,
    kind: Kind,
    wrap: F,
    tx: mpsc::Sender<Change>,
    missing_retry: Duration,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    F: Fn(K) -> Obj + Send + 'static,
{
    let mut failures = 0u32;
    let mut told_forbidden = false;
    loop {
        let list = match api.list(&lp).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                debug!("{kind:?}: not served by this cluster (CRD not installed); looking again in {missing_retry:?}");
                if tx.send(Change::Reset(kind, vec![])).await.is_err() {
                    return;
                }
                tokio::time::sleep(missing_retry).await;
                continue;
            }
            // MetalLB's kinds and the legacy ConfigMap are optional (the
            // ConfigMap's Role ships in an overlay): without the right to
            // read them the leader serves the rest rather than nothing.
            Err(kube::Error::Api(s)) if s.code == 403 && kind.optional() => {
                if !told_forbidden {
                    let fix = match kind {
                        Kind::LegacyConfig => "if you use MetalLB's legacy ConfigMap: kubectl apply -k deploy/metallb-legacy",
                        _ => "grant the flatlan ClusterRole list and watch on it (deploy/rbac.yaml)",
                    };
                    warn!("{kind:?}: not readable ({}); served as absent, looked for again every {missing_retry:?}; {fix}", s.message);
                    told_forbidden = true;
                }
                if tx.send(Change::Reset(kind, vec![])).await.is_err() {
                    return;
                }
                tokio::time::sleep(missing_retry).await;
                continue;
            }
            Err(e) => {
                warn!("{kind:?}: list failed: {e}");
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        let mut rv = list.metadata.resource_version.clone().unwrap_or_default();
        let objs = list.items.into_iter().map(&wrap).collect();
        if tx.send(Change::Reset(kind, objs)).await.is_err() {
            return;
        }
        // Watch from the list's version until the server says it is gone
        // (410) or the watch fails; a watch that just ends (its timeout) is
        // resumed from the last version seen.
        'watch: loop {
            let mut wp = WatchParams::default().timeout(290);
            if let Some(f) = &lp.field_selector {
                wp = wp.fields(f);
            }
            let stream = match api.watch(&wp, &rv).await {
                Ok(s) => s,
                Err(e) => {
                    warn!("{kind:?}: watch failed: {e}");
                    tokio::time::sleep(backoff(0)).await;
                    break 'watch;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                let change = match ev {
                    Ok(WatchEvent::Added(o)) | Ok(WatchEvent::Modified(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        Change::Upsert(wrap(o))
                    }
                    Ok(WatchEvent::Deleted(o)) => {
                        rv = o.resource_version().unwrap_or(rv);
                        Change::Delete(kind, o.namespace(), o.name_any())
                    }
                    Ok(WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    Ok(WatchEvent::Error(e)) => {
                        if e.code != 410 {
                            warn!("{kind:?}: watch error: {}", e.message);
                            tokio::time::sleep(backoff(0)).await;
                        }
                        break 'watch;
                    }
                    Err(e) => {
                        warn!("{kind:?}: watch stream: {e}");
                        tokio::time::sleep(backoff(0)).await;
                        break 'watch;
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
}
