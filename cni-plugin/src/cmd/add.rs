//! ADD: allocate, create the veth straight into the pod, address and route
//! it. Every step pushes its undo; on failure they run in reverse and the
//! original error is returned.

use std::fs::File;

use tracing::{debug, warn};

use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::ipam;
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
    /// The node-wide sysctls ADD repairs; run once the bridge is known good.
    pub sysctls: &'a mut dyn FnMut() -> Result<()>,
}

/// A successful ADD: the result, and whether the caller should start a
/// background probe-ahead.
pub struct Added {
    pub result: CniResult,
    pub probe_ahead: bool,
}

/// `requested` comes from [`NetConf::requested_ips`], parsed by the caller
/// before anything on the node changes.
pub fn add<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    requested: &[std::net::IpAddr],
    node: Node<'_, H>,
    open_pod: impl FnOnce() -> Result<P>,
) -> Result<Added> {
    let bridge = super::bridge(node.host, &conf.bridge)?;
    (node.sysctls)()?;
    super::pin_bridge_mac(node.host, &bridge);
    let node_ips = plan::node_ips(conf, &node.host.addresses(bridge.index)?);

    let mut undo = Vec::new();
    let out = steps(
        conf,
        att,
        &node_ips,
        requested,
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
    open_pod: impl FnOnce() -> Result<P>,
    undo: &mut Vec<Undo>,
) -> Result<Added> {
    use std::os::fd::AsRawFd;

    let requested_mac = conf.requested_mac(att.args.get("MAC").map(String::as_str))?;
    let ipam::Reservation {
        assigned,
        mac,
        probe_ahead,
    } = ipam::reserve(conf, att, node_ips, requested, requested_mac, &bridge.name)?;
    undo.push(Undo::Release);
    crate::hook::maybe_abort("allocated");
    debug!(?assigned, "allocated");

    let host_mac = names::host_mac(plan::derived_mac(&assigned).0);
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    let spec = VethSpec {
        host_name: host_name.clone(),
        host_mac,
        bridge_index: bridge.index,
        mtu: conf.mtu.unwrap_or(bridge.mtu),
        peer_name: att.ifname.clone(),
        peer_mac: mac.0,
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
    if conf.hairpin_mode {
        host.set_hairpin(&host_name)?;
    }
    crate::hook::maybe_abort("veth");

    let pod_plan = plan::pod_plan(conf, &assigned, node_ips);
    let mut pod = open_pod()?;
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
        mac: MacAddr(host_mac).to_string(),
        sandbox: None,
    };
    let pod_if = Interface {
        name: att.ifname.clone(),
        mac: mac.to_string(),
        sandbox: att.netns.as_ref().map(|p| p.display().to_string()),
    };
    Ok(Added {
        result: plan::result(host_if, pod_if, &assigned, &pod_plan),
        probe_ahead,
    })
}

/// ADD against the recording fake: the order of operations and the undo
/// stack, without root.
#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::netlink::fake::Fake;

    /// No host has it: pin_bridge_mac reads the real /sys/class/net, and a
    /// host's own br0 must not change what these tests see.
    const BRIDGE: &str = "fltest-nobr";

    fn conf(dir: &std::path::Path) -> NetConf {
        conf_with(dir, |_| {})
    }

    fn conf_with(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> NetConf {
        std::fs::write(dir.join("boot_id"), "b1\n").unwrap();
        let mut v = serde_json::json!({
            "cniVersion": "1.1.0", "name": "lan", "type": "flatlan",
            "bridge": BRIDGE, "serviceCIDRs": ["10.43.0.0/16"],
            "ipam": {"subnet": "192.168.2.0/24", "gateway": "192.168.2.1",
                     "ranges": ["192.168.2.210-192.168.2.211"],
                     "dataDir": dir.join("data"), "bootIdPath": dir.join("boot_id"),
                     "probe": {"enabled": false}}
        });
        edit(&mut v);
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    fn att() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            netns: Some("/run/netns/p".into()),
            ifname: "eth0".into(),
            args: Default::default(),
        }
    }

    /// What the store holds after the ADD.
    fn stored(dir: &std::path::Path) -> flatlan_ipam::store::State {
        flatlan_ipam::Store::new(&dir.join("data"), "lan")
            .unwrap()
            .peek()
            .unwrap()
    }

    /// ADD on `host`, with `pod` as what the pod's netlink socket sees.
    fn add_on(dir: &std::path::Path, host: &mut Fake, pod: Fake) -> Result<Added> {
        add_with(&conf(dir), &att(), host, pod, &mut || Ok(()))
    }

    fn add_with(
        conf: &NetConf,
        att: &Attachment,
        host: &mut Fake,
        pod: Fake,
        sysctls: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Added> {
        let ns = File::open("/dev/null").unwrap();
        let node = Node {
            host,
            pod_ns: &ns,
            sysctls,
        };
        add(conf, att, &[], node, || Ok(pod))
    }

    /// A node as [`run`] makes it, for tests that vary the config.
    fn node() -> (Fake, Fake) {
        let mut host = Fake::with_bridge(BRIDGE);
        let br = host.links[BRIDGE].index;
        host.addrs.push((br, "192.168.2.11/24".parse().unwrap()));
        let mut pod = Fake::default();
        pod.insert("eth0", Some("veth"));
        (host, pod)
    }

    /// A node with the bridge at 192.168.2.11, and a pod fake that gets an
    /// eth0 (the kernel would create it with the veth) and may fail on
    /// `fail_on`.
    fn run(dir: &std::path::Path, fail_on: Option<&str>) -> (Result<Added>, Fake) {
        let mut host = Fake::with_bridge(BRIDGE);
        let br = host.links[BRIDGE].index;
        host.addrs.push((br, "192.168.2.11/24".parse().unwrap()));
        let mut pod = Fake::default();
        pod.insert("eth0", Some("veth"));
        pod.fail_on = fail_on.map(str::to_string);
        let r = add_on(dir, &mut host, pod);
        (r, host)
    }

    #[test]
    fn success_creates_the_veth_then_addresses_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        let (r, host) = run(dir.path(), None);
        let added = r.unwrap();
        let veth = names::host_veth("c1", "eth0");
        assert_eq!(
            host.log,
            [
                format!("create_veth {veth} peer eth0"),
                format!("set_hairpin {veth}")
            ]
        );
        let j = added.result.to_json("1.1.0");
        assert_eq!(j["ips"][0]["address"], "192.168.2.210/24");
        assert_eq!(j["routes"][1]["dst"], "10.43.0.0/16");
        assert_eq!(j["routes"][1]["gw"], "192.168.2.11");
        assert_eq!(j["interfaces"][0]["mac"], "0e:58:c0:a8:02:d2");
        // The MAC reported is the one the host end was created with.
        assert_eq!(
            host.links[&veth].mac.map(|m| MacAddr(m).to_string()),
            Some("0e:58:c0:a8:02:d2".to_string())
        );
        let state = stored(dir.path());
        assert_eq!(state.allocations().len(), 1);
    }

    #[test]
    fn a_failure_in_the_pod_undoes_the_veth_and_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let (r, host) = run(dir.path(), Some("add_route"));
        let e = r.err().expect("ADD must fail");
        assert_eq!(e.code(), crate::error::code::NETLINK, "{e}");
        let veth = names::host_veth("c1", "eth0");
        assert_eq!(
            host.log,
            [
                format!("create_veth {veth} peer eth0"),
                format!("set_hairpin {veth}"),
                format!("delete_link {veth}")
            ],
            "the veth is removed in reverse order"
        );
        let state = stored(dir.path());
        assert!(state.allocations().is_empty(), "the address is released");
    }

    #[test]
    fn an_existing_host_veth_is_reported_and_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = Fake::with_bridge(BRIDGE);
        host.insert(&names::host_veth("c1", "eth0"), Some("veth"));
        let r = add_on(dir.path(), &mut host, Fake::default());
        let e = r.err().expect("ADD must fail");
        assert_eq!(e.code(), crate::error::code::INTERFACE_EXISTS, "{e}");
        assert!(
            !host.log.iter().any(|l| l.starts_with("delete_link")),
            "someone else's veth survives: {:?}",
            host.log
        );
        let state = stored(dir.path());
        assert!(state.allocations().is_empty());
    }

    #[test]
    fn a_bridge_that_is_not_a_bridge_fails_100_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind) in [("veth9", Some("veth")), ("lo", None)] {
            let mut host = Fake::default();
            host.insert(name, kind);
            let conf = conf_with(dir.path(), |v| v["bridge"] = name.into());
            let mut touched = false;
            let r = add_with(&conf, &att(), &mut host, Fake::default(), &mut || {
                touched = true;
                Ok(())
            });
            let e = r.err().expect("ADD must fail");
            assert_eq!(e.code(), crate::error::code::BRIDGE_NOT_FOUND, "{e}");
            assert!(e.to_string().contains(name), "{e}");
            assert!(host.log.is_empty(), "{name} was changed: {:?}", host.log);
            assert!(!touched, "node sysctls changed for {name}");
            assert!(stored(dir.path()).allocations().is_empty());
        }
    }

    #[test]
    fn hairpin_mode_off_skips_the_port_change() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf_with(dir.path(), |v| v["hairpinMode"] = false.into());
        let (mut host, pod) = node();
        add_with(&conf, &att(), &mut host, pod, &mut || Ok(())).expect("ADD");
        let veth = names::host_veth("c1", "eth0");
        assert_eq!(host.log, [format!("create_veth {veth} peer eth0")]);
    }

    #[test]
    fn a_requested_mac_is_the_pods_and_the_host_end_keeps_the_derived_one() {
        for (capability, mac) in [
            (Some("02:aa:bb:cc:dd:01"), "02:aa:bb:cc:dd:01"),
            (None, "02:aa:bb:cc:dd:02"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let conf = conf_with(dir.path(), |v| {
                if let Some(m) = capability {
                    v["runtimeConfig"] = serde_json::json!({ "mac": m });
                }
            });
            let mut a = att();
            a.args.insert("MAC".into(), "02:aa:bb:cc:dd:02".into());
            let (mut host, pod) = node();
            let added = add_with(&conf, &a, &mut host, pod, &mut || Ok(())).expect("ADD");
            let j = added.result.to_json("1.1.0");
            assert_eq!(
                j["interfaces"][1]["mac"], mac,
                "the capability wins over MAC="
            );
            assert_eq!(j["interfaces"][0]["mac"], "0e:58:c0:a8:02:d2");
            let state = stored(dir.path());
            assert_eq!(state.allocations()[0].mac, mac, "the store records it");
        }
    }
}
