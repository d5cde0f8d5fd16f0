//! DEL, top to bottom: observe (the host veth, or the MAC the store
//! recorded when it is gone) → plan → apply → free the addresses. It is
//! idempotent and best-effort: it succeeds when the namespace is gone,
//! after a failed ADD, and when called twice.

use flatlan_l2::mac::MacAddr;
use tracing::{debug, warn};

use crate::apply::{self, Op, Pod};
use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::netlink::{Netlink, Socket};
use crate::{ipam, names, netns};

/// The verb as `dispatch` calls it, on the real sockets.
pub fn del(conf: &NetConf, att: &Attachment) -> Result<()> {
    let open_pod = || {
        let path = att.netns.as_deref().ok_or_else(|| Error::InvalidEnv {
            var: "CNI_NETNS",
            reason: "no pod namespace to look in".into(),
        })?;
        netns::run_in(&netns::open(path)?, Socket::new)
    };
    run(conf, att, &mut Socket::new()?, open_pod)
}

/// DEL against any [`Netlink`]; `open_pod` yields a socket in the pod's
/// namespace, opened only for the fallback.
pub fn run<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    host: &mut H,
    open_pod: impl FnOnce() -> Result<P>,
) -> Result<()> {
    let ops = plan(conf, att, host)?;
    // Links go before addresses: freeing an address while its interface
    // still answers for it would let the next ADD hand it out twice.
    apply::apply(
        &ops,
        host,
        &mut Pod::new(&att.ifname, open_pod),
        Vec::new(),
        |_, _| Ok(()),
    )?;
    let gone = ipam::release(conf, &att.container_id, &att.ifname)?;
    debug!(?ops, released = gone.len(), "DEL done");
    Ok(())
}

/// The host veth by its deterministic name; when it is gone (renamed or
/// moved by someone else), the pod's interface, but only if it carries the
/// MAC flatlan recorded: after a failed ADD, the pod's interface of that
/// name belongs to someone else.
fn plan(conf: &NetConf, att: &Attachment, host: &mut impl Netlink) -> Result<Vec<Op>> {
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    if host.link_by_name(&host_name)?.is_some() {
        return Ok(vec![Op::DeleteHostLink(host_name)]);
    }
    if att.netns.is_none() {
        return Ok(Vec::new());
    }
    // Only a fallback, so an unreadable store must not fail DEL here: the
    // release after it takes the store's lock, which recovers it (issue 10,
    // item 3).
    match ipam::find(conf, &att.container_id, &att.ifname) {
        Ok(allocs) => Ok(allocs
            .first()
            .and_then(|a| a.mac.parse::<MacAddr>().ok())
            .map(|mac| vec![Op::DeletePodLink { mac: mac.0 }])
            .unwrap_or_default()),
        Err(e) => {
            warn!("DEL: cannot look up the pod's MAC: {e}");
            Ok(Vec::new())
        }
    }
}

/// DEL against the recording fake: the host veth by name, the pod-side
/// fallback through the same seam, and the address freed last.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::add::tests::{att, conf};
    use crate::netlink::fake::Fake;

    /// A conf whose store holds c1/eth0, and the MAC it recorded.
    fn added(dir: &std::path::Path) -> (NetConf, [u8; 6]) {
        let conf = conf(dir);
        let r = ipam::reserve(&conf, &att(), &[], &[], None, "fltest-nobr").unwrap();
        (conf, r.mac.0)
    }

    fn allocations(conf: &NetConf) -> usize {
        ipam::store(conf)
            .unwrap()
            .peek()
            .unwrap()
            .allocations()
            .len()
    }

    #[test]
    fn the_host_veth_goes_then_the_address_and_the_pod_is_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let (conf, _) = added(dir.path());
        let veth = names::host_veth("c1", "eth0");
        let mut host = Fake::default();
        host.insert(&veth, Some("veth"));
        run(&conf, &att(), &mut host, || -> Result<Fake> {
            panic!("the pod is not entered")
        })
        .unwrap();
        assert_eq!(host.log, [format!("delete_link {veth}")]);
        assert_eq!(allocations(&conf), 0);
        // Twice: nothing left, still success.
        run(&conf, &att(), &mut host, || -> Result<Fake> { panic!() }).unwrap();
    }

    /// Issue 11 item 3: the fallback used to open its own netlink socket,
    /// out of reach of the fake.
    #[test]
    fn without_the_host_veth_the_pod_interface_goes_only_with_our_mac() {
        for ours in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (conf, mac) = added(dir.path());
            let mut pod = Fake::default();
            pod.insert("eth0", Some("veth"));
            if ours {
                pod.links.get_mut("eth0").unwrap().mac = Some(mac);
            }
            let mut host = Fake::default();
            run(&conf, &att(), &mut host, || Ok(&mut pod)).unwrap();
            assert!(host.log.is_empty(), "{:?}", host.log);
            let want: &[&str] = if ours { &["delete_link eth0"] } else { &[] };
            assert_eq!(pod.log, want, "ours: {ours}");
            assert_eq!(allocations(&conf), 0);
        }
    }
}
