//! ADD, top to bottom: validate (pure) → observe the node → reserve the
//! addresses → plan the changes (pure) → apply them, an undo per op → the
//! result. Nothing on the node changes before the reservation, and the
//! plan is complete before the first link exists.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use serde_json::Value;
use tracing::debug;

use crate::apply::{self, Op, Pod, Undo};
use crate::config::NetConf;
use crate::env::Attachment;
use crate::error::{Error, Result};
use crate::ipam::{self, Reservation};
use crate::netlink::{Link, Netlink, Socket, VethSpec};
use crate::result::{CniResult, Interface};
use crate::{names, netns, plan, sysctl};
use flatlan_l2::mac::MacAddr;

/// The verb as `dispatch` calls it: opens the pod namespace and the two
/// netlink sockets, runs ADD, and starts the probe-ahead it asks for.
pub fn add(conf: &NetConf, att: &Attachment, stdin: &[u8]) -> Result<Value> {
    let req = validate(conf, att)?;
    let pod_ns = netns::open(req.netns)?;
    netns::refuse_own(&pod_ns, req.netns)?;
    let ifname = att.ifname.as_str();
    std::thread::scope(|s| {
        // The pod's socket is opened while the node side works; its
        // interface, and so its sysctls, exist only after the veth.
        let pod = netns::start_in(s, &pod_ns, Socket::new, |sock| {
            sysctl::pod_ipv6_policy(ifname, !req.v6_default)?;
            Ok(sock)
        });
        let mut host = Socket::new()?;
        let mut sysctls = || node_sysctls(conf);
        let node = Node {
            host: &mut host,
            pod_ns: &pod_ns,
            sysctls: &mut sysctls,
        };
        let added = run(conf, att, &req, node, || pod.finish())?;
        if added.probe_ahead {
            crate::spawn_probe_ahead(stdin);
        }
        Ok(added.result.to_json(&conf.cni_version))
    })
}

/// What ADD was asked for, checked before the first change to the node.
pub struct Request<'a> {
    pub netns: &'a Path,
    /// `IP=` in CNI_ARGS, or the `ips` capability.
    pub ips: Vec<IpAddr>,
    /// The `mac` capability, else `MAC=` (podman's `--mac-address`).
    pub mac: Option<MacAddr>,
    /// An IPv6 gateway is configured: the pod's default route is ours, so
    /// it must ignore router advertisements.
    pub v6_default: bool,
}

/// Step 1, validate: everything the runtime sent, touching nothing.
pub fn validate<'a>(conf: &NetConf, att: &'a Attachment) -> Result<Request<'a>> {
    let netns = att.netns.as_deref().ok_or_else(|| Error::InvalidEnv {
        var: "CNI_NETNS",
        reason: "required for ADD".into(),
    })?;
    Ok(Request {
        netns,
        ips: conf.requested_ips(att.args.get("IP").map(String::as_str))?,
        mac: conf.requested_mac(att.args.get("MAC").map(String::as_str))?,
        v6_default: conf
            .subnets()
            .iter()
            .any(|s| s.subnet.addr().is_ipv6() && s.gateway.is_some()),
    })
}

/// The node-wide sysctls ADD repairs.
fn node_sysctls(conf: &NetConf) -> Result<()> {
    if conf.ensure_br_netfilter {
        sysctl::ensure_br_netfilter()?;
    }
    if conf.ensure_forwarding {
        sysctl::ensure_forwarding(&conf.service_cidrs)?;
    }
    Ok(())
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

/// What ADD found on the node.
struct Observed {
    bridge: Link,
    /// The node's own addresses in the LAN subnets: never handed out, and
    /// the pod's next hop to Service CIDRs.
    node_ips: Vec<IpAddr>,
}

/// Steps 2 to 6, against any [`Netlink`]; `open_pod` yields the pod's socket.
pub fn run<H: Netlink, P: Netlink>(
    conf: &NetConf,
    att: &Attachment,
    req: &Request,
    node: Node<'_, H>,
    open_pod: impl FnOnce() -> Result<P>,
) -> Result<Added> {
    let seen = observe(conf, node.host, node.sysctls)?;
    let reserved = ipam::reserve(
        conf,
        att,
        &seen.node_ips,
        &req.ips,
        req.mac,
        &seen.bridge.name,
    )?;
    crate::hook::maybe_abort("allocated");
    debug!(?reserved, "allocated");
    let (ops, result) = plan(conf, att, &seen, &reserved, node.pod_ns);
    let mut pod = Pod::new(&att.ifname, open_pod);
    apply::apply(
        &ops,
        node.host,
        &mut pod,
        vec![Undo::Release],
        |host, undo| match undo {
            Undo::Release => ipam::release(conf, &att.container_id, &att.ifname).map(|_| ()),
            Undo::DeleteHostLink(name) => host.delete_link(name).map(|_| ()),
        },
    )?;
    Ok(Added {
        result,
        probe_ahead: reserved.probe_ahead,
    })
}

/// Step 2, observe: the bridge (checked to be one before anything touches
/// it), the node sysctls it needs, its pinned MAC, the node's addresses.
fn observe(
    conf: &NetConf,
    host: &mut impl Netlink,
    sysctls: &mut dyn FnMut() -> Result<()>,
) -> Result<Observed> {
    let bridge = super::bridge(host, &conf.bridge)?;
    sysctls()?;
    super::pin_bridge_mac(host, &bridge);
    let node_ips = plan::node_ips(conf, &host.addresses(bridge.index)?);
    Ok(Observed { bridge, node_ips })
}

/// Step 4, plan (pure): the ops that build the pod's interface, and the
/// result they will have built.
fn plan(
    conf: &NetConf,
    att: &Attachment,
    seen: &Observed,
    reserved: &Reservation,
    pod_ns: &File,
) -> (Vec<Op>, CniResult) {
    let host_mac = names::host_mac(plan::derived_mac(&reserved.assigned).0);
    let host_name = names::host_veth(&att.container_id, &att.ifname);
    let pod_plan = plan::pod_plan(conf, &reserved.assigned, &seen.node_ips);
    let mut ops = vec![Op::CreateVeth(VethSpec {
        host_name: host_name.clone(),
        host_mac,
        bridge_index: seen.bridge.index,
        mtu: conf.mtu.unwrap_or(seen.bridge.mtu),
        peer_name: att.ifname.clone(),
        peer_mac: reserved.mac.0,
        peer_netns_fd: pod_ns.as_raw_fd(),
    })];
    if conf.hairpin_mode {
        ops.push(Op::SetHairpin(host_name.clone()));
    }
    ops.extend(pod_plan.addresses.iter().map(|a| Op::PodAddress(*a)));
    ops.push(Op::PodUp);
    ops.extend(pod_plan.routes.iter().map(|(dst, gw)| Op::PodRoute {
        dst: *dst,
        gateway: *gw,
    }));
    // Step 6, the result: what the ops above build.
    let host_if = Interface {
        name: host_name,
        mac: MacAddr(host_mac).to_string(),
        sandbox: None,
    };
    let pod_if = Interface {
        name: att.ifname.clone(),
        mac: reserved.mac.to_string(),
        sandbox: att.netns.as_ref().map(|p| p.display().to_string()),
    };
    let result = plan::result(host_if, pod_if, &reserved.assigned, &pod_plan);
    (ops, result)
}

/// ADD against the recording fake: the order of operations and the undo
/// stack, without root.
#[cfg(test)]
pub(crate) mod tests {
    use std::fs::File;

    use super::*;
    use crate::netlink::fake::Fake;

    /// No host has it: pin_bridge_mac reads the real /sys/class/net, and a
    /// host's own br0 must not change what these tests see.
    const BRIDGE: &str = "fltest-nobr";

    pub(crate) fn conf(dir: &std::path::Path) -> NetConf {
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

    pub(crate) fn att() -> Attachment {
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
        let req = validate(conf, att)?;
        super::run(conf, att, &req, node, || Ok(pod))
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

    /// Step 4 is pure and complete: every change ADD will make, known
    /// before the first (issue 11 item 3: the plan used to be computed
    /// only once the veth existed).
    #[test]
    fn the_plan_lists_every_change_before_any_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let conf = conf(dir.path());
        let (host, _) = node();
        let seen = Observed {
            bridge: host.links[BRIDGE].clone(),
            node_ips: vec!["192.168.2.11".parse().unwrap()],
        };
        let reserved = Reservation {
            assigned: vec![crate::ipam::Assigned {
                address: "192.168.2.210/24".parse().unwrap(),
                gateway: Some("192.168.2.1".parse().unwrap()),
            }],
            mac: "02:aa:bb:cc:dd:01".parse().unwrap(),
            probe_ahead: false,
        };
        let ns = File::open("/dev/null").unwrap();
        let (ops, result) = plan(&conf, &att(), &seen, &reserved, &ns);
        let veth = names::host_veth("c1", "eth0");
        let Op::CreateVeth(spec) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(spec.host_name, veth);
        assert_eq!(
            spec.peer_mac, reserved.mac.0,
            "the requested MAC, reserved once"
        );
        assert_eq!(MacAddr(spec.host_mac).to_string(), "0e:58:c0:a8:02:d2");
        assert_eq!(
            ops[1..],
            [
                Op::SetHairpin(veth),
                Op::PodAddress("192.168.2.210/24".parse().unwrap()),
                Op::PodUp,
                Op::PodRoute {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gateway: "192.168.2.1".parse().unwrap()
                },
                Op::PodRoute {
                    dst: "10.43.0.0/16".parse().unwrap(),
                    gateway: "192.168.2.11".parse().unwrap()
                },
            ]
        );
        let j = result.to_json("1.1.0");
        assert_eq!(j["interfaces"][1]["mac"], "02:aa:bb:cc:dd:01");
        assert_eq!(j["routes"][1]["gw"], "192.168.2.11");
    }
}
