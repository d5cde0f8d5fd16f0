//! ADD: allocate, create the veth straight into the pod, address and route
//! it. Every step pushes its undo; on failure they run in reverse and the
//! original error is returned.

use std::fs::File;

use tracing::{debug, warn};

use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::ipam::{self, Assigned};
use crate::names;
use crate::netlink::{Netlink, RouteSpec, VethSpec};
use crate::plan;
use crate::result::{CniResult, Interface};
use flatlan_ipam::mac::MacAddr;

enum Undo {
    Release,
    DeleteHostLink(String),
}

/// The parts of ADD that touch the system, behind seams for unit tests.
pub struct Node<'a, H: Netlink> {
    pub host: &'a mut H,
    pub pod_ns: &'a File,
}

/// A successful ADD: the result, and whether the caller should start a
/// background probe-ahead.
pub struct Added {
    pub result: CniResult,
    pub probe_ahead: bool,
}

pub fn add<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    node: Node<'_, H>,
    open_pod: impl FnOnce(&File) -> Result<P>,
) -> Result<Added> {
    let bridge = node
        .host
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| Error::BridgeNotFound(conf.bridge.clone()))?;
    super::pin_bridge_mac(node.host, &bridge);
    let node_ips = plan::node_ips(conf, &node.host.addresses(bridge.index)?);
    let requested = conf.requested_ips(att.args.get("IP").map(String::as_str))?;

    let mut undo = Vec::new();
    let out = steps(
        conf,
        att,
        &node_ips,
        &requested,
        &bridge,
        node.host,
        node.pod_ns,
        open_pod,
        &mut undo,
    );
    if out.is_err() {
        for step in undo.into_iter().rev() {
            let r = match &step {
                Undo::Release => ipam::release(conf, &att.container_id, &att.ifname).map(|_| ()),
                Undo::DeleteHostLink(name) => node.host.delete_link(name).map(|_| ()),
            };
            if let Err(e) = r {
                warn!("undo after failed ADD: {e}");
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn steps<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    node_ips: &[std::net::IpAddr],
    requested: &[std::net::IpAddr],
    bridge: &crate::netlink::Link,
    host: &mut H,
    pod_ns: &File,
    open_pod: impl FnOnce(&File) -> Result<P>,
    undo: &mut Vec<Undo>,
) -> Result<Added> {
    use std::os::fd::AsRawFd;

    let (assigned, probe_ahead): (Vec<Assigned>, bool) =
        ipam::allocate_checked(conf, att, node_ips, requested, &bridge.name)?;
    undo.push(Undo::Release);
    crate::hook::maybe_abort("allocated");
    debug!(?assigned, "allocated");

    let mac = MacAddr::from_ip(ipam::first_ip(&assigned)).0;
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    let spec = VethSpec {
        host_name: host_name.clone(),
        host_mac: names::host_mac(mac),
        bridge_index: bridge.index,
        mtu: conf.mtu.unwrap_or(bridge.mtu),
        peer_name: att.ifname.clone(),
        peer_mac: mac,
        peer_netns_fd: pod_ns.as_raw_fd(),
    };
    match host.create_veth(&spec) {
        Ok(()) => {}
        Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            return Err(Error::InterfaceExists(format!(
                "interface {} already exists in the pod namespace, or host veth {} exists on the node",
                att.ifname, host_name
            )));
        }
        Err(e) => return Err(e),
    }
    undo.push(Undo::DeleteHostLink(host_name.clone()));
    crate::hook::maybe_abort("veth");

    let pod_plan = plan::pod_plan(conf, &assigned, node_ips);
    let mut pod = open_pod(pod_ns)?;
    let pod_link = pod.link_by_name(&att.ifname)?.ok_or_else(|| {
        Error::TryAgain(format!("{} vanished from the pod namespace", att.ifname))
    })?;
    for a in &pod_plan.addresses {
        pod.add_address(pod_link.index, *a)?;
    }
    crate::hook::maybe_abort("addresses");
    if !pod_link.up {
        pod.set_up(pod_link.index)?;
    }
    for (dst, gw) in &pod_plan.routes {
        pod.add_route(&RouteSpec {
            dst: *dst,
            gateway: Some(*gw),
            oif: pod_link.index,
        })?;
    }
    crate::hook::maybe_abort("routes");

    let host_if = Interface {
        name: host_name,
        mac: MacAddr(names::host_mac(mac)).to_string(),
        sandbox: None,
    };
    let pod_if = Interface {
        name: att.ifname.clone(),
        mac: MacAddr(mac).to_string(),
        sandbox: att.netns.as_ref().map(|p| p.display().to_string()),
    };
    Ok(Added {
        result: plan::result(host_if, pod_if, &assigned, &pod_plan),
        probe_ahead,
    })
}
