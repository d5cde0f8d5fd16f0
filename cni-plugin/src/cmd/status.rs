//! STATUS (CNI 1.1): ready when the plugin can work on this node: the
//! bridge is a bridge, the node's sysctls are right and the store is
//! usable. containerd 2.x polls this and will not schedule pods while it
//! fails.
//!
//! A full address pool is not "not ready": the runtime would mark the whole
//! node NotReady, and Kubernetes would taint it and evict the pods that are
//! running fine. A full slice only fails new ADDs (101), and STATUS logs a
//! warning.

use flatlan_ipam::store::now_secs;
use tracing::warn;

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::netlink::{Netlink, Socket};
use crate::{ipam, sysctl};

/// The verb as `dispatch` calls it, on the real socket.
pub fn status(conf: &NetConf) -> Result<()> {
    run(conf, &mut Socket::new()?)
}

/// STATUS against any [`Netlink`].
pub fn run(conf: &NetConf, host: &mut impl Netlink) -> Result<()> {
    let not_ready = |m: String| Err(Error::NotReady(m));
    let bridge = match super::bridge(host, &conf.bridge) {
        Ok(b) => b,
        Err(Error::BridgeNotFound(_)) => {
            return not_ready(format!(
                "bridge {} does not exist on this node",
                conf.bridge
            ))
        }
        Err(e @ Error::NotABridge { .. }) => return not_ready(e.to_string()),
        Err(e) => return Err(e),
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
    if conf.ensure_forwarding {
        if let Err(e) = sysctl::ensure_forwarding(&conf.service_cidrs) {
            return not_ready(format!("pods could not reach Service CIDRs: {e}"));
        }
    } else if let Some(p) = sysctl::forwarding_problem(&conf.service_cidrs) {
        return not_ready(format!("pods could not reach Service CIDRs: {p}"));
    }
    let node_ips = crate::plan::node_ips(conf, &host.addresses(bridge.index)?);
    let pools = match ipam::pools(conf, &node_ips) {
        Ok(p) => p,
        Err(e) => return not_ready(e.to_string()),
    };
    let locked = match ipam::store(conf)?.lock() {
        Ok(l) => l,
        Err(e) => return not_ready(format!("allocation store unusable: {e}")),
    };
    let now = now_secs();
    for (s, pool) in &pools {
        let free = pool
            .candidates_after(None)
            .any(|ip| locked.state.owner_of(ip, now).is_none());
        if !free {
            warn!(
                "the pool of subnet {} ({}) is exhausted: ADD fails with 101 until a pod is deleted; \
                 STATUS stays ready so the node's running pods are not evicted",
                s.subnet,
                pool.describe()
            );
        }
    }
    Ok(())
}

/// The checks that come before any sysctl, against the recording fake.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::fake::Fake;

    fn conf(bridge: &str) -> NetConf {
        let v = serde_json::json!({
            "cniVersion": "1.1.0", "name": "lan", "type": "flatlan", "bridge": bridge,
            "ipam": {"subnet": "192.168.2.0/24", "ranges": ["192.168.2.210-192.168.2.211"],
                     "dataDir": "/nonexistent/flatlan"}
        });
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_bridge_that_is_not_one_is_not_ready_and_untouched() {
        for (name, kind, says) in [
            ("veth9", Some("veth"), "veth device"),
            ("lo", None, "without a link kind"),
        ] {
            let mut host = Fake::default();
            host.insert(name, kind);
            let e = run(&conf(name), &mut host).unwrap_err();
            assert_eq!(e.code(), 50, "{e}");
            assert!(e.to_string().contains(says), "{e}");
            assert!(host.log.is_empty(), "{:?}", host.log);
        }
        let e = run(&conf("nobr0"), &mut Fake::default()).unwrap_err();
        assert_eq!(e.code(), 50, "{e}");
        assert!(e.to_string().contains("nobr0 does not exist"), "{e}");
    }
}
