//! Pure planning: what the pod's interface should look like, computed from
//! config and observed state before anything is changed.

use std::net::IpAddr;

use ipnet::IpNet;

use flatlan_l2::mac::MacAddr;

use crate::config::NetConf;
use crate::ipam::Assigned;
use crate::result::{CniResult, Interface, IpConfig, Route};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    pub addresses: Vec<IpNet>,
    /// (destination, gateway)
    pub routes: Vec<(IpNet, IpAddr)>,
}

/// The LAN is on-link through the address's own prefix route. The internet
/// goes via the LAN gateway. Service CIDRs go via this node, so kube-proxy's
/// DNAT happens here and the reply path stays symmetric.
pub fn pod_plan(conf: &NetConf, assigned: &[Assigned], node_ips: &[IpAddr]) -> PodPlan {
    let mut routes = Vec::new();
    for a in assigned {
        let v4 = a.address.addr().is_ipv4();
        if let Some(gw) = a.gateway {
            let default = if v4 {
                IpNet::V4(Default::default())
            } else {
                IpNet::V6(Default::default())
            };
            routes.push((default, gw));
        }
        let node = node_ips
            .iter()
            .copied()
            .find(|n| n.is_ipv4() == v4 && a.address.contains(n));
        if let Some(node) = node {
            for c in conf
                .service_cidrs
                .iter()
                .filter(|c| c.addr().is_ipv4() == v4)
            {
                routes.push((*c, node));
            }
        }
    }
    PodPlan {
        addresses: assigned.iter().map(|a| a.address).collect(),
        routes,
    }
}

/// The MAC an address implies, whatever MAC the pod was given: the host
/// veth's is derived from it, so it stays unique on the LAN (addresses are)
/// even when a runtime picks the pod's MAC.
pub fn derived_mac(assigned: &[Assigned]) -> MacAddr {
    let ips: Vec<IpAddr> = assigned.iter().map(|a| a.address.addr()).collect();
    flatlan_ipam::policy::derived_mac(&ips)
}

/// Node addresses on the bridge that lie in a configured LAN subnet.
pub fn node_ips(conf: &NetConf, bridge_addrs: &[IpNet]) -> Vec<IpAddr> {
    bridge_addrs
        .iter()
        .map(IpNet::addr)
        .filter(|ip| conf.subnets().iter().any(|s| s.subnet.contains(ip)))
        .collect()
}

pub fn result(host: Interface, pod: Interface, assigned: &[Assigned], plan: &PodPlan) -> CniResult {
    CniResult {
        interfaces: vec![host, pod],
        ips: assigned
            .iter()
            .map(|a| IpConfig {
                address: a.address,
                gateway: a.gateway,
                interface: 1,
            })
            .collect(),
        routes: plan
            .routes
            .iter()
            .map(|(dst, gw)| Route {
                dst: *dst,
                gw: Some(*gw),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_default_via_gateway_and_services_via_node() {
        let conf = NetConf::parse(
            serde_json::json!({
                "cniVersion": "1.0.0", "name": "lan", "type": "flatlan",
                "serviceCIDRs": ["10.43.0.0/16"],
                "ipam": {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
                         "ranges": ["192.168.2.210-192.168.2.219"]}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let node = node_ips(
            &conf,
            &[
                "192.168.2.11/24".parse().unwrap(),
                "10.9.9.9/8".parse().unwrap(),
            ],
        );
        assert_eq!(node, vec!["192.168.2.11".parse::<IpAddr>().unwrap()]);
        let assigned = vec![Assigned {
            address: "192.168.2.210/24".parse().unwrap(),
            gateway: Some("192.168.2.1".parse().unwrap()),
        }];
        let plan = pod_plan(&conf, &assigned, &node);
        assert_eq!(
            plan.routes,
            vec![
                ("0.0.0.0/0".parse().unwrap(), "192.168.2.1".parse().unwrap()),
                (
                    "10.43.0.0/16".parse().unwrap(),
                    "192.168.2.11".parse().unwrap()
                ),
            ]
        );
    }
}
