//! GC (CNI 1.1), top to bottom: validate the runtime's list → free what it
//! does not name (one IPAM transaction, `Locked::collect_garbage`) →
//! observe the bridge's ports → plan the deletion of exactly the freed
//! attachments' host veths → apply, one op at a time, best effort.

use std::collections::HashSet;

use flatlan_ipam::store::{now_secs, read_boot_id};
use flatlan_ipam::Allocation;
use tracing::{info, warn};

use crate::apply::{self, Op, Pod};
use crate::config::NetConf;
use crate::error::{Error, Result};
use crate::netlink::{Netlink, Socket};
use crate::{ipam, names};

/// The verb as `dispatch` calls it, on the real socket.
pub fn gc(conf: &NetConf) -> Result<()> {
    run(conf, &mut Socket::new()?)
}

/// GC against any [`Netlink`].
pub fn run<H: Netlink>(conf: &NetConf, host: &mut H) -> Result<()> {
    let valid = validate(conf)?;
    let boot_id = read_boot_id(&conf.ipam.boot_id_path)?;
    // The lock is held across link removal so an ADD cannot allocate in
    // between and have its fresh veth mistaken for an orphan.
    let mut locked = ipam::store(conf)?.lock()?;
    let freed = locked.collect_garbage(&valid, &boot_id, now_secs())?;
    let ops = plan(conf, host, &valid, locked.state.allocations(), &freed)?;
    let mut removed = 0;
    for op in &ops {
        // One link that cannot go must not keep the others.
        let mut no_pod = Pod::<H, fn() -> Result<H>>::none();
        match apply::apply(
            std::slice::from_ref(op),
            host,
            &mut no_pod,
            Vec::new(),
            |_, _| Ok(()),
        ) {
            Ok(()) => removed += 1,
            Err(e) => warn!("GC: {op:?}: {e}"),
        }
    }
    drop(locked);
    info!(addresses = freed.len(), links = removed, "GC done");
    Ok(())
}

/// The attachments the runtime still has. An absent list must not be read
/// as "nothing is valid": that would tear down every pod on the node.
fn validate(conf: &NetConf) -> Result<Vec<(String, String)>> {
    Ok(conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("GC requires `cni.dev/valid-attachments`".into()))?
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect())
}

/// The valid list names only this network's attachments (CRI-O runs GC
/// once per network; Multus puts several on one bridge), so a veth this
/// store never recorded may be another network's live pod. Only the
/// bridge ports that are veths of what GC just freed here go.
fn plan(
    conf: &NetConf,
    host: &mut impl Netlink,
    valid: &[(String, String)],
    kept: &[Allocation],
    freed: &[Allocation],
) -> Result<Vec<Op>> {
    let keep: HashSet<String> = valid
        .iter()
        .map(|(c, i)| names::host_veth(c, i))
        .chain(
            kept.iter()
                .map(|a| names::host_veth(&a.container_id, &a.ifname)),
        )
        .collect();
    let doomed: HashSet<String> = freed
        .iter()
        .map(|a| names::host_veth(&a.container_id, &a.ifname))
        .filter(|n| !keep.contains(n))
        .collect();
    let Some(bridge) = host.link_by_name(&conf.bridge)? else {
        return Ok(Vec::new());
    };
    Ok(host
        .links()?
        .into_iter()
        .filter(|l| l.master == Some(bridge.index) && doomed.contains(&l.name))
        .map(|l| Op::DeleteHostLink(l.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::add::tests::conf;
    use crate::netlink::fake::Fake;

    fn alloc(cid: &str) -> Allocation {
        Allocation {
            ip: "192.168.2.210".parse().unwrap(),
            prefix_len: 24,
            mac: String::new(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            pod: None,
            boot_id: "b1".into(),
            since: 1,
            adder: None,
        }
    }

    /// Only the bridge ports of what this GC freed go: not a live pod of
    /// another network on the same bridge, nor a freed veth elsewhere.
    #[test]
    fn the_plan_deletes_exactly_the_freed_veths_on_the_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let mut host = Fake::with_bridge(&conf.bridge);
        let br = host.links[&conf.bridge].index;
        for cid in ["freed", "kept", "valid", "other-net", "freed-off-bridge"] {
            let name = names::host_veth(cid, "eth0");
            host.insert(&name, Some("veth"));
            if cid != "freed-off-bridge" {
                host.links.get_mut(&name).unwrap().master = Some(br);
            }
        }
        let valid = [("valid".to_string(), "eth0".to_string())];
        let ops = plan(
            &conf,
            &mut host,
            &valid,
            &[alloc("kept")],
            &[alloc("freed"), alloc("freed-off-bridge")],
        )
        .unwrap();
        assert_eq!(ops, [Op::DeleteHostLink(names::host_veth("freed", "eth0"))]);
        assert!(host.log.is_empty(), "planning changes nothing");
    }
}
