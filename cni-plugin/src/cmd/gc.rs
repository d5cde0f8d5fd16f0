//! GC (CNI 1.1): free every address of this network that is not among the
//! runtime's valid attachments, and the host veths of exactly those.

use std::collections::HashSet;

use flatlan_ipam::store::{now_secs, read_boot_id};
use tracing::{info, warn};

use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::netlink::{Netlink, Socket};
use crate::{ipam, names};

/// The verb as `dispatch` calls it, on the real socket.
pub fn gc(conf: &NetConf) -> Result<()> {
    run(conf, &mut Socket::new()?)
}

/// GC against any [`Netlink`].
pub fn run(conf: &NetConf, host: &mut impl Netlink) -> Result<()> {
    let valid: Vec<(String, String)> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| {
            // An absent list must not be read as "nothing is valid": that
            // would tear down every pod on the node.
            Error::InvalidConfig("GC requires `cni.dev/valid-attachments`".into())
        })?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let now = now_secs();
    let boot_id = read_boot_id(&conf.ipam.boot_id_path)?;

    // The lock is held across link removal so an ADD cannot allocate in
    // between and have its fresh veth mistaken for an orphan.
    let mut locked = ipam::store(conf)?.lock()?;
    let mut freed = locked.state.reclaim_other_boots(&boot_id, now);
    freed.extend(locked.state.gc(&valid, now));
    locked.commit()?;

    // The valid list names only this network's attachments (CRI-O runs GC
    // once per network; Multus puts several on one bridge), so a veth
    // this store never recorded may be another network's live pod. Only
    // the veths of what GC just freed here go.
    let keep: HashSet<String> = valid
        .iter()
        .map(|(c, i)| names::host_veth(c, i))
        .chain(
            locked
                .state
                .allocations()
                .iter()
                .map(|a| names::host_veth(&a.container_id, &a.ifname)),
        )
        .collect();
    let doomed: HashSet<String> = freed
        .iter()
        .map(|a| names::host_veth(&a.container_id, &a.ifname))
        .filter(|n| !keep.contains(n))
        .collect();
    let bridge = host.link_by_name(&conf.bridge)?;
    let mut removed = 0;
    for link in host.links()? {
        let on_bridge = bridge
            .as_ref()
            .is_some_and(|b| link.master == Some(b.index));
        if on_bridge && doomed.contains(&link.name) {
            match host.delete_link(&link.name) {
                Ok(_) => removed += 1,
                Err(e) => warn!("GC: cannot delete {}: {e}", link.name),
            }
        }
    }
    drop(locked);
    info!(addresses = freed.len(), links = removed, "GC done");
    Ok(())
}
