//! DEL: idempotent and best-effort. It succeeds when the namespace is gone,
//! after a failed ADD, and when called twice.

use std::path::Path;

use flatlan_ipam::mac::MacAddr;
use tracing::{debug, warn};

use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::Result;
use crate::netlink::{Netlink, Socket};
use crate::{ipam, names, netns};

pub fn del(conf: &NetConf, att: &Attachment, host: &mut impl Netlink) -> Result<()> {
    // Links go before addresses: freeing an address while its interface
    // still answers for it would let the next ADD hand it out twice.
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    let deleted = host.delete_link(&host_name)?;
    if let (false, Some(path)) = (deleted, &att.netns) {
        // Only a fallback, so an unreadable store must not fail DEL here:
        // the release below takes the store's lock, which recovers it
        // (issue 10, item 3).
        match ipam::find(conf, &att.container_id, &att.ifname) {
            Ok(allocs) => {
                if let Some(mac) = allocs.first().and_then(|a| a.mac.parse::<MacAddr>().ok()) {
                    delete_in_pod(path, &att.ifname, mac);
                }
            }
            Err(e) => warn!("DEL: cannot look up the pod's MAC: {e}"),
        }
    }
    let gone = ipam::release(conf, &att.container_id, &att.ifname)?;
    debug!(veth = deleted, released = gone.len(), "DEL done");
    Ok(())
}

/// Fallback for a veth whose host end was renamed or moved by someone else.
/// Only an interface carrying the MAC flatlan recorded is removed: after a
/// failed ADD the pod's interface of that name belongs to someone else.
fn delete_in_pod(path: &Path, ifname: &str, mac: MacAddr) {
    let Ok(ns) = netns::open(path) else { return };
    let r = netns::run_in(&ns, || {
        let mut nl = Socket::new()?;
        match nl.link_by_name(ifname)? {
            Some(l) if l.mac == Some(mac.0) => nl.delete_link(ifname).map(|_| ()),
            _ => Ok(()),
        }
    });
    if let Err(e) = r {
        warn!("DEL: cannot remove {ifname} inside {}: {e}", path.display());
    }
}
