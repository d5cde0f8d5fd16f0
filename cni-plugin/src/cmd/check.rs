//! CHECK: the pod still looks the way ADD left it, as `prevResult` (the
//! chain's final result) describes it. A plugin chained after flatlan may
//! change what flatlan reported (`tuning` sets another MAC and updates the
//! result; `sbr` moves the routes into a per-interface table), so the
//! expectation comes from prevResult, not from recomputing flatlan's plan.

use std::fs::File;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::ipam::{self, Assigned};
use crate::netlink::{Netlink, Socket};
use crate::plan::{self, PodPlan};
use crate::{names, netns};
use flatlan_l2::mac::MacAddr;

/// The verb as `dispatch` calls it, on the real sockets.
pub fn check(conf: &NetConf, att: &Attachment) -> Result<()> {
    let path = att.netns.as_deref().ok_or_else(|| Error::InvalidEnv {
        var: "CNI_NETNS",
        reason: "required for CHECK".into(),
    })?;
    let pod_ns = netns::open(path)?;
    let open_pod = |ns: &File| netns::run_in(ns, Socket::new);
    run(conf, att, &mut Socket::new()?, &pod_ns, open_pod)
}

/// CHECK against any [`Netlink`].
pub fn run<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    host: &mut H,
    pod_ns: &File,
    open_pod: impl FnOnce(&File) -> Result<P>,
) -> Result<()> {
    let fail = |m: String| Err(Error::CheckFailed(m));
    let allocs = ipam::find(conf, &att.container_id, &att.ifname)?;
    if allocs.is_empty() {
        return fail(format!(
            "no address is recorded for container {} {}",
            att.container_id, att.ifname
        ));
    }
    let bridge = host
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| Error::BridgeNotFound(conf.bridge.clone()))?;
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    match host.link_by_name(&host_name)? {
        None => return fail(format!("host veth {host_name} is missing")),
        Some(l) if l.master != Some(bridge.index) => {
            return fail(format!(
                "host veth {host_name} is not attached to {}",
                conf.bridge
            ))
        }
        Some(_) => {}
    }

    let assigned: Vec<Assigned> = allocs
        .iter()
        .filter_map(|a| {
            let s = conf.subnets().iter().find(|s| s.subnet.contains(&a.ip))?;
            Some(Assigned {
                address: IpNet::new(a.ip, a.prefix_len).ok()?,
                gateway: s.gateway,
            })
        })
        .collect();
    let node_ips = plan::node_ips(conf, &host.addresses(bridge.index)?);
    let ours = plan::pod_plan(conf, &assigned, &node_ips);
    let want = match &conf.prev_result {
        Some(prev) => expected_from_prev(prev, &att.ifname, &ours)?,
        // The spec requires prevResult for CHECK; without one, what flatlan
        // itself reported is the best expectation there is: the MAC the
        // store recorded (a requested one, or the derived one).
        None => Expected {
            mac: allocs
                .first()
                .and_then(|a| a.mac.parse::<MacAddr>().ok())
                .map(|m| m.0)
                .or(Some(plan::derived_mac(&assigned).0)),
            plan: ours,
        },
    };

    let mut pod = open_pod(pod_ns)?;
    let Some(link) = pod.link_by_name(&att.ifname)? else {
        return fail(format!("interface {} is missing in the pod", att.ifname));
    };
    if let Some(mac) = want.mac {
        if link.mac != Some(mac) {
            return fail(format!(
                "{} has MAC {}, expected {}",
                att.ifname,
                link.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
                MacAddr(mac)
            ));
        }
    }
    if !link.up {
        return fail(format!("{} is down", att.ifname));
    }
    let have = pod.addresses(link.index)?;
    for a in &want.plan.addresses {
        if !have.contains(a) {
            return fail(format!("address {a} is missing from {}", att.ifname));
        }
    }
    for (dst, gw) in &want.plan.routes {
        let routes = pod.routes(dst.addr().is_ipv4())?;
        if !routes
            .iter()
            .any(|r| r.dst == *dst && r.gateway == Some(*gw) && r.oif == link.index)
        {
            return fail(format!(
                "route {dst} via {gw} dev {} is missing in the pod",
                att.ifname
            ));
        }
    }
    Ok(())
}

/// What CHECK verifies in the pod.
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    /// None when prevResult reports the interface without a MAC.
    mac: Option<[u8; 6]>,
    plan: PodPlan,
}

/// The pod interface, addresses and routes as prevResult reports them,
/// limited to what flatlan itself set up (`ours`): routes another plugin
/// added are that plugin's to check. An address prevResult puts on our
/// interface that flatlan did not allocate is a mismatch.
fn expected_from_prev(prev: &Value, ifname: &str, ours: &PodPlan) -> Result<Expected> {
    let fail = |m: String| Error::CheckFailed(m);
    let interfaces = prev["interfaces"].as_array().map_or(&[][..], Vec::as_slice);
    // The container-side interface is the one with a sandbox (CNI SPEC).
    let index = interfaces
        .iter()
        .position(|i| {
            i["name"].as_str() == Some(ifname)
                && i["sandbox"].as_str().is_some_and(|s| !s.is_empty())
        })
        .ok_or_else(|| fail(format!("prevResult has no interface {ifname} in a sandbox")))?;
    let mac = match interfaces[index]["mac"].as_str() {
        None | Some("") => None,
        Some(m) => Some(
            m.parse::<MacAddr>()
                .map_err(|_| fail(format!("prevResult MAC {m:?} of {ifname} is not a MAC")))?
                .0,
        ),
    };
    let mut addresses = Vec::new();
    for ip in prev["ips"].as_array().into_iter().flatten() {
        // An IP on another interface belongs to another plugin.
        if ip["interface"].as_u64().is_some_and(|i| i != index as u64) {
            continue;
        }
        let text = ip["address"].as_str().unwrap_or_default();
        let addr: IpNet = text
            .parse()
            .map_err(|_| fail(format!("prevResult address {text:?} is not a CIDR")))?;
        if !ours.addresses.contains(&addr) {
            return Err(fail(format!(
                "prevResult address {addr} is not allocated to this container"
            )));
        }
        addresses.push(addr);
    }
    let prev_routes: Vec<(IpNet, Option<IpAddr>)> = prev["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?.parse().ok()?;
            let gw = r["gw"].as_str().and_then(|g| g.parse().ok());
            Some((dst, gw))
        })
        .collect();
    let routes = ours
        .routes
        .iter()
        .filter(|(dst, gw)| prev_routes.contains(&(*dst, Some(*gw))))
        .copied()
        .collect();
    Ok(Expected {
        mac,
        plan: PodPlan { addresses, routes },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours() -> PodPlan {
        PodPlan {
            addresses: vec!["192.168.2.210/24".parse().unwrap()],
            routes: vec![
                ("0.0.0.0/0".parse().unwrap(), "192.168.2.1".parse().unwrap()),
                (
                    "10.43.0.0/16".parse().unwrap(),
                    "192.168.2.11".parse().unwrap(),
                ),
            ],
        }
    }

    fn prev() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "fl0123456789ab", "mac": "0e:58:c0:a8:02:d2"},
                {"name": "eth0", "mac": "02:11:22:33:44:55", "sandbox": "/run/netns/p"},
            ],
            "ips": [{"address": "192.168.2.210/24", "gateway": "192.168.2.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.2.1"}],
        })
    }

    #[test]
    fn the_mac_a_chained_plugin_reported_is_the_one_expected() {
        let e = expected_from_prev(&prev(), "eth0", &ours()).unwrap();
        assert_eq!(e.mac, Some([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(e.plan.addresses, ours().addresses);
    }

    #[test]
    fn only_routes_in_both_prev_result_and_ours_are_checked() {
        let mut p = prev();
        p["routes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"dst": "10.99.0.0/16", "gw": "192.168.2.254"}));
        let e = expected_from_prev(&p, "eth0", &ours()).unwrap();
        assert_eq!(e.plan.routes, vec![ours().routes[0]]);
    }

    #[test]
    fn a_foreign_address_on_our_interface_or_no_interface_fails() {
        let mut p = prev();
        p["ips"][0]["address"] = "192.168.2.99/24".into();
        let e = expected_from_prev(&p, "eth0", &ours()).unwrap_err();
        assert!(e.to_string().contains("192.168.2.99"), "{e}");
        assert_eq!(e.code(), 104);
        let e = expected_from_prev(&prev(), "net1", &ours()).unwrap_err();
        assert!(e.to_string().contains("net1"), "{e}");
        // The host-side entry (no sandbox) is not the pod interface.
        let e = expected_from_prev(&prev(), "fl0123456789ab", &ours()).unwrap_err();
        assert_eq!(e.code(), 104);
    }

    #[test]
    fn an_address_on_another_interface_is_another_plugins() {
        let mut p = prev();
        p["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.0.0.5/24", "interface": 0}));
        let e = expected_from_prev(&p, "eth0", &ours()).unwrap();
        assert_eq!(e.plan.addresses.len(), 1);
    }
}
