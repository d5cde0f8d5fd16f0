//! CHECK: the pod still looks the way ADD left it.

use std::fs::File;

use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::ipam::{self, Assigned};
use crate::netlink::Netlink;
use crate::{names, plan};
use flatlan_ipam::mac::MacAddr;

pub fn check<H: Netlink, P: Netlink>(
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
    if let Some(prev) = &conf.prev_result {
        for ip in prev["ips"].as_array().into_iter().flatten() {
            let addr = ip["address"].as_str().unwrap_or_default();
            if !allocs
                .iter()
                .any(|a| format!("{}/{}", a.ip, a.prefix_len) == addr)
            {
                return fail(format!(
                    "prevResult address {addr} is not allocated to this container"
                ));
            }
        }
    }

    let assigned: Vec<Assigned> = allocs
        .iter()
        .filter_map(|a| {
            let s = conf.subnets().iter().find(|s| s.subnet.contains(&a.ip))?;
            Some(Assigned {
                address: ipnet::IpNet::new(a.ip, a.prefix_len).ok()?,
                gateway: s.gateway,
            })
        })
        .collect();
    let node_ips = plan::node_ips(conf, &host.addresses(bridge.index)?);
    let want = plan::pod_plan(conf, &assigned, &node_ips);

    let mut pod = open_pod(pod_ns)?;
    let Some(link) = pod.link_by_name(&att.ifname)? else {
        return fail(format!("interface {} is missing in the pod", att.ifname));
    };
    let mac = MacAddr::from_ip(ipam::first_ip(&assigned)).0;
    if link.mac != Some(mac) {
        return fail(format!(
            "{} has MAC {}, expected {}",
            att.ifname,
            link.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
            MacAddr(mac)
        ));
    }
    if !link.up {
        return fail(format!("{} is down", att.ifname));
    }
    let have = pod.addresses(link.index)?;
    for a in &want.addresses {
        if !have.contains(a) {
            return fail(format!("address {a} is missing from {}", att.ifname));
        }
    }
    for (dst, gw) in &want.routes {
        let routes = pod.routes(dst.addr().is_ipv4())?;
        if !routes
            .iter()
            .any(|r| r.dst == *dst && r.gateway == Some(*gw))
        {
            return fail(format!("route {dst} via {gw} is missing in the pod"));
        }
    }
    Ok(())
}
