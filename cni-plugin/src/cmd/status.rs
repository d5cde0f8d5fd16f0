//! STATUS (CNI 1.1): ready only when an ADD could succeed. containerd 2.x
//! polls this and will not schedule pods while it fails.

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::{ipam, sysctl};

pub fn status(conf: &NetConf, host: &mut impl Netlink) -> Result<()> {
    let not_ready = |m: String| Err(Error::NotReady(m));
    let Some(bridge) = host.link_by_name(&conf.bridge)? else {
        return not_ready(format!(
            "bridge {} does not exist on this node",
            conf.bridge
        ));
    };
    if conf.ensure_br_netfilter {
        // STATUS repairs what ADD would repair anyway; reporting not-ready for
        // it would keep the runtime from ever calling ADD.
        if let Err(e) = sysctl::ensure_br_netfilter() {
            return not_ready(format!(
                "replies to DNATed pod traffic would bypass conntrack: {e}"
            ));
        }
    } else if let Some(p) = sysctl::br_netfilter_problem() {
        return not_ready(format!(
            "replies to DNATed pod traffic would bypass conntrack: {p}"
        ));
    }
    let node_ips = crate::plan::node_ips(conf, &host.addresses(bridge.index)?);
    if let Err(e) = ipam::pools(conf, &node_ips) {
        return not_ready(e.to_string());
    }
    if let Err(e) = ipam::store(conf)?.lock() {
        return not_ready(format!("allocation store unusable: {e}"));
    }
    Ok(())
}
