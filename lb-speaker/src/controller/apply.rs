//! Carries out a [`super::plan::Plan`]'s writes, each bounded by the request timeout
//! and each only while the Lease is still ours. What the API returns goes
//! back into the [`World`], so the next round does not write it again
//! before the watch echoes it.

use flatlan_k8s::{crd, metallb};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use super::lease::Elector;
use super::plan::{EventSpec, Write};
use super::world::{Obj, World};
use super::{Options, FIELD_MANAGER};

/// The body of a Service status patch: the addresses, conditional on the
/// resourceVersion the decision was made on (a 409 means the Service
/// changed since; the watch brings the new version and the next round
/// decides again).
pub fn service_status_patch(resource_version: Option<&str>, ips: &[std::net::IpAddr]) -> Value {
    let ingress = if ips.is_empty() {
        Value::Null
    } else {
        ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect()
    };
    let mut body = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    if let Some(rv) = resource_version {
        body["metadata"] = json!({"resourceVersion": rv});
    }
    body
}

/// The core/v1 Event for `e`.
pub fn event(e: &EventSpec, identity: &str, now: Timestamp) -> Event {
    let ns = e
        .object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let t = Time(now);
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", e.object.name)),
            namespace: Some(ns),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(e.object.api_version.clone()),
            kind: Some(e.object.kind.clone()),
            namespace: e.object.namespace.clone(),
            name: Some(e.object.name.clone()),
            uid: e.uid.clone(),
            ..Default::default()
        },
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some("flatlan-allocator".into()),
            host: None,
        }),
        first_timestamp: Some(t.clone()),
        last_timestamp: Some(t),
        count: Some(1),
        reporting_component: Some("flatlan.dev/allocator".into()),
        reporting_instance: Some(identity.into()),
        ..Default::default()
    }
}

/// Carries out the writes in order; returns whether one failed (the
/// caller plans again after a retry period).
pub async fn apply(
    client: &Client,
    opts: &Options,
    writes: Vec<Write>,
    world: &mut World,
    elector: &Elector,
) -> bool {
    let mut failed = false;
    for w in writes {
        if !elector.may_write(Instant::now()) {
            info!("lease not renewed in time; leaving the remaining writes to the next leader");
            return true;
        }
        match timeout(opts.request_timeout, one(client, opts, &w, world)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!("{}: {e}", describe(&w));
                failed = true;
            }
            Err(_) => {
                warn!("{}: timed out", describe(&w));
                failed = true;
            }
        }
    }
    failed
}

fn describe(w: &Write) -> String {
    match w {
        Write::ServiceStatus {
            namespace, name, ..
        } => format!("status of Service {namespace}/{name}"),
        Write::Event(e) => format!("Event {} on {}", e.reason, e.object),
        Write::FlatlanPoolStatus { name, .. } => format!("status of IPAddressPool {name}"),
        Write::MetalLbPoolStatus {
            namespace, name, ..
        } => format!("status of metallb.io IPAddressPool {namespace}/{name}"),
    }
}

async fn one(client: &Client, opts: &Options, w: &Write, world: &mut World) -> kube::Result<()> {
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match w {
        Write::ServiceStatus {
            namespace,
            name,
            resource_version,
            ips,
        } => {
            let api = Api::<Service>::namespaced(client.clone(), namespace);
            let body = service_status_patch(resource_version.as_deref(), ips);
            let svc = api.patch_status(name, &pp, &Patch::Merge(body)).await?;
            world.upsert(Obj::Service(Box::new(svc)));
        }
        Write::Event(e) => {
            let ev = event(e, &opts.identity, Timestamp::now());
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            let api = Api::<Event>::namespaced(client.clone(), &ns);
            api.create(&PostParams::default(), &ev).await?;
        }
        Write::FlatlanPoolStatus { name, status } => {
            let api = Api::<crd::IPAddressPool>::all(client.clone());
            let p = api
                .patch_status(name, &pp, &Patch::Merge(json!({"status": status})))
                .await?;
            world.upsert(Obj::FlatlanPool(Box::new(p)));
        }
        Write::MetalLbPoolStatus {
            namespace,
            name,
            status,
        } => {
            let api = Api::<metallb::IPAddressPool>::namespaced(client.clone(), namespace);
            match api
                .patch_status(name, &pp, &Patch::Merge(json!({"status": status})))
                .await
            {
                Ok(p) => world.upsert(Obj::MetalLbPool(Box::new(p))),
                // MetalLB releases before 0.14 have no status subresource;
                // remember the counts so they are not tried every round.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    debug!("metallb.io IPAddressPool {namespace}/{name} has no status subresource");
                    let key = (Some(namespace.clone()), name.clone());
                    if let Some(p) = world.metallb_pools.get_mut(&key) {
                        p.status = Some(status.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
