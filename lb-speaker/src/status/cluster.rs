//! `flatlan-speaker status --cluster` (issue 13, item 7): every
//! LoadBalancer Service flatlan serves, with its IP and pool from the API
//! and its owner, interface and last GARP from the local speaker's view
//! (`/status`). Owner and interface come from the speaker's view because
//! that is where they live: flatlan writes no per-Service owner to the API
//! (failover stays free of API writes); a node's speaker knows every VIP's
//! owner, and the interface and last GARP of the VIPs it announces.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flatlan_k8s::allocator::Allocator;
use flatlan_k8s::convert::Collected;
use flatlan_k8s::{crd, metallb, service};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;

use super::{Status, VipStatus};
use crate::error::{Error, Result};

/// One line of the table: one address of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub service: String,
    pub ip: String,
    pub pool: Option<String>,
    pub owner: Option<String>,
    pub interface: Option<String>,
    pub last_garp_unix_ms: Option<u64>,
    pub state: Option<String>,
}

/// The rows for flatlan's `services`, given each address's pool and the
/// local speaker's status (pure).
pub fn rows(
    services: &[Service],
    default_class: bool,
    pool_of: &dyn Fn(IpAddr) -> Option<String>,
    local: Option<&Status>,
) -> Vec<Row> {
    let seen: BTreeMap<&str, &VipStatus> = local
        .map(|s| s.vips.iter().map(|v| (v.vip.as_str(), v)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for svc in services
        .iter()
        .filter(|s| service::is_ours(s, default_class))
    {
        let name = format!(
            "{}/{}",
            svc.namespace().unwrap_or_else(|| "default".into()),
            svc.name_any()
        );
        let ips = service::status_ips(svc);
        if ips.is_empty() {
            out.push(Row {
                service: name,
                ip: "<pending>".into(),
                pool: None,
                owner: None,
                interface: None,
                last_garp_unix_ms: None,
                state: Some("pending".into()),
            });
            continue;
        }
        for ip in ips {
            let text = ip.to_string();
            let v = seen.get(text.as_str());
            out.push(Row {
                service: name.clone(),
                pool: pool_of(ip),
                owner: v.and_then(|v| v.owner.clone()),
                interface: v
                    .filter(|v| v.owner.is_some() && v.owner == local.map(|l| l.node.clone()))
                    .and_then(|v| v.interface.clone()),
                last_garp_unix_ms: v.and_then(|v| v.last_garp_unix_ms),
                state: v.map(|v| v.state.clone()),
                ip: text,
            });
        }
    }
    out
}

/// The table `status --cluster` prints.
pub fn render(rows: &[Row], local: Option<&Status>, now_unix_ms: u64) -> String {
    let mut s = match local {
        Some(l) => format!("speaker view from node {}\n", l.node),
        None => "no local speaker answered: owner, interface and last GARP unknown\n".to_owned(),
    };
    let line = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| {
        format!("{a:<32} {b:<28} {c:<14} {d:<14} {e:<10} {f}\n")
    };
    s.push_str(&line(
        "SERVICE",
        "IP",
        "POOL",
        "OWNER",
        "IFACE",
        "LAST-GARP",
    ));
    for r in rows {
        let garp = r.last_garp_unix_ms.map_or("-".to_owned(), |t| {
            format!("{:.1}s ago", now_unix_ms.saturating_sub(t) as f64 / 1000.0)
        });
        let owner = match (&r.owner, r.state.as_deref()) {
            (Some(o), _) => o.clone(),
            (None, Some("conflict")) => "- (conflict)".into(),
            (None, Some(_)) => "-".into(),
            (None, None) => "? (not in this speaker's view)".into(),
        };
        s.push_str(&line(
            &r.service,
            &r.ip,
            r.pool.as_deref().unwrap_or("-"),
            &owner,
            r.interface.as_deref().unwrap_or("-"),
            &garp,
        ));
    }
    s
}

async fn list<K>(api: Api<K>, what: &str, optional: bool) -> Result<Vec<K>>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(l.items),
        // A CRD that is not installed holds nothing.
        Err(kube::Error::Api(s)) if optional && s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(Error::KubeApi {
            what: format!("listing {what}"),
            source: Box::new(e),
        }),
    }
}

/// Reads the Services and every kind of pool from the API, and joins them
/// with `local` (the speaker's `/status`, if it answered).
pub async fn gather(
    client: Client,
    default_class: bool,
    metallb_namespace: &str,
    local: Option<&Status>,
) -> Result<Vec<Row>> {
    let services = list(Api::<Service>::all(client.clone()), "Services", false).await?;
    let mut col = Collected::default();
    let fl = list(
        Api::<crd::IPAddressPool>::all(client.clone()),
        "flatlan.dev IPAddressPools",
        true,
    )
    .await?;
    fl.iter().for_each(|p| col.flatlan_pool(p));
    let ml = list(
        Api::<metallb::IPAddressPool>::all(client.clone()),
        "metallb.io IPAddressPools",
        true,
    )
    .await?;
    ml.iter().for_each(|p| col.metallb_pool(p));
    let cms = list(
        Api::<ConfigMap>::namespaced(client, metallb_namespace),
        "MetalLB's ConfigMap",
        true,
    )
    .await?;
    cms.iter()
        .filter(|c| c.name_any() == "config")
        .for_each(|c| col.metallb_config_map(c));
    let (alloc, _) = Allocator::new(col.pools);
    let pool_of = |ip| alloc.pool_of(ip).map(|p| p.name.clone());
    Ok(rows(&services, default_class, &pool_of, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, class: &str, ip: Option<&str>) -> Service {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
        });
        if let Some(ip) = ip {
            v["status"] = serde_json::json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        serde_json::from_value(v).expect("test Service parses")
    }

    fn local() -> Status {
        let v = |vip: &str, owner: Option<&str>, state: &str, iface: &str, garp| VipStatus {
            vip: vip.into(),
            owner: owner.map(Into::into),
            state: state.into(),
            interface: Some(iface.into()),
            mac: None,
            last_garp_unix_ms: garp,
            conflict: None,
            foreign: None,
            probe_answered_by: None,
        };
        Status {
            node: "n1".into(),
            updated_unix_ms: 0,
            members: vec!["n2".into()],
            leaving: false,
            vips: vec![
                v("10.0.0.240", Some("n1"), "announcing", "eth0", Some(9_500)),
                v("10.0.0.241", Some("n2"), "standby", "eth0", None),
                v("10.0.0.242", None, "conflict", "eth0", None),
            ],
        }
    }

    #[test]
    fn the_table_joins_the_api_with_the_speakers_view() {
        let services = [
            svc("web", "flatlan.dev/l2", Some("10.0.0.240")),
            svc("db", "flatlan.dev/l2", Some("10.0.0.241")),
            svc("dup", "flatlan.dev/l2", Some("10.0.0.242")),
            svc("new", "flatlan.dev/l2", None),
            svc("far", "flatlan.dev/l2", Some("10.9.9.9")),
            svc("theirs", "other.io/lb", Some("10.0.0.243")),
        ];
        let pool_of = |ip: IpAddr| ip.to_string().starts_with("10.0.0.").then(|| "lan".into());
        let st = local();
        let rows = rows(&services, false, &pool_of, Some(&st));
        let table = render(&rows, Some(&st), 10_000);
        let want = "\
speaker view from node n1
SERVICE                          IP                           POOL           OWNER          IFACE      LAST-GARP
shop/web                         10.0.0.240                   lan            n1             eth0       0.5s ago
shop/db                          10.0.0.241                   lan            n2             -          -
shop/dup                         10.0.0.242                   lan            - (conflict)   -          -
shop/new                         <pending>                    -              -              -          -
shop/far                         10.9.9.9                     -              ? (not in this speaker's view) -          -
";
        assert_eq!(table, want);
    }

    #[test]
    fn without_a_local_speaker_the_api_side_still_shows() {
        let services = [svc("web", "flatlan.dev/l2", Some("10.0.0.240"))];
        let pool_of = |_| Some("lan".to_string());
        let rows = rows(&services, false, &pool_of, None);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].owner, None);
        let t = render(&rows, None, 0);
        assert!(t.starts_with("no local speaker answered"), "{t}");
        assert!(t.contains("shop/web"), "{t}");
    }
}
