//! The one executor of every verb's plan: runs its ops in order through
//! the typed [`Netlink`] seam, pushes the undo of each op before the next,
//! and on failure runs the undos in reverse and returns the op's error.
//!
//! Ops name interfaces, never indexes: the plan is computed before any of
//! them exist. Pod-side ops run on the pod's socket, opened (and the pod
//! interface looked up) only when the first of them runs, because the
//! pod's interface exists only once the veth does.

use ipnet::IpNet;
use std::net::IpAddr;
use tracing::warn;

use crate::error::{Error, Result};
use crate::netlink::{Link, Netlink, RouteSpec, VethSpec};

/// One change a verb makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The veth pair, the peer created inside the pod namespace.
    CreateVeth(VethSpec),
    /// Hairpin mode on this bridge port.
    SetHairpin(String),
    /// An address on the pod's interface.
    PodAddress(IpNet),
    /// The pod's interface up (skipped when it already is).
    PodUp,
    /// A route in the pod via `gateway`, out of its interface.
    PodRoute { dst: IpNet, gateway: IpAddr },
    /// A host link, when it exists.
    DeleteHostLink(String),
    /// The pod's interface, only when it carries `mac`: after a failed ADD
    /// an interface of that name may be someone else's.
    DeletePodLink { mac: [u8; 6] },
}

impl Op {
    /// The crash-test step (`hook.rs`) this op belongs to; the hook fires
    /// when a step's last op is done.
    fn step(&self) -> &'static str {
        match self {
            Op::CreateVeth(_) | Op::SetHairpin(_) => "veth",
            Op::PodAddress(_) => "addresses",
            Op::PodUp => "up",
            Op::PodRoute { .. } => "routes",
            Op::DeleteHostLink(_) | Op::DeletePodLink { .. } => "delete",
        }
    }
}

/// What undoes an op, or a step before the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// The attachment's reservation (pushed by the verb, not an op).
    Release,
    DeleteHostLink(String),
}

/// The pod side: its socket, opened on first use, and its interface.
pub struct Pod<P, F> {
    ifname: String,
    open: Option<F>,
    open_link: Option<(P, Link)>,
}

impl<P: Netlink, F: FnOnce() -> Result<P>> Pod<P, F> {
    /// `open` yields a socket in the pod's namespace.
    pub fn new(ifname: &str, open: F) -> Self {
        Pod {
            ifname: ifname.to_string(),
            open: Some(open),
            open_link: None,
        }
    }

    /// The pod's socket and its interface (`None`: the interface is gone).
    fn get(&mut self) -> Result<Option<&mut (P, Link)>> {
        if self.open_link.is_none() {
            let Some(open) = self.open.take() else {
                return Ok(None);
            };
            let mut nl = open()?;
            if let Some(link) = nl.link_by_name(&self.ifname)? {
                self.open_link = Some((nl, link));
            }
        }
        Ok(self.open_link.as_mut())
    }

    /// The pod's socket and interface, which a pod-side op of ADD requires.
    fn link(&mut self) -> Result<&mut (P, Link)> {
        let name = self.ifname.clone();
        self.get()?
            .ok_or_else(|| Error::TryAgain(format!("{name} vanished from the pod namespace")))
    }
}

impl<P: Netlink> Pod<P, fn() -> Result<P>> {
    /// For a verb that never enters a pod (GC): pod-side ops fail.
    pub fn none() -> Self {
        Pod {
            ifname: String::new(),
            open: None,
            open_link: None,
        }
    }
}

/// Runs `ops` in order; each pushes its undo onto `undo`. On failure,
/// `undo` (with what the caller pushed before) runs in reverse through
/// `rollback`, and the op's error is returned.
pub fn apply<H: Netlink, P: Netlink, F: FnOnce() -> Result<P>>(
    ops: &[Op],
    host: &mut H,
    pod: &mut Pod<P, F>,
    mut undo: Vec<Undo>,
    mut rollback: impl FnMut(&mut H, &Undo) -> Result<()>,
) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        match run(op, host, pod) {
            Ok(u) => undo.extend(u),
            Err(e) => {
                for u in undo.iter().rev() {
                    if let Err(r) = rollback(host, u) {
                        warn!("undo after a failed step: {r}");
                    }
                }
                return Err(e);
            }
        }
        if ops.get(i + 1).map(Op::step) != Some(op.step()) {
            crate::hook::maybe_abort(op.step());
        }
    }
    Ok(())
}

/// One op; returns its undo.
fn run<H: Netlink, P: Netlink, F: FnOnce() -> Result<P>>(
    op: &Op,
    host: &mut H,
    pod: &mut Pod<P, F>,
) -> Result<Option<Undo>> {
    match op {
        Op::CreateVeth(spec) => match host.create_veth(spec) {
            Ok(()) => return Ok(Some(Undo::DeleteHostLink(spec.host_name.clone()))),
            Err(Error::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Error::InterfaceExists(format!(
                    "interface {} already exists in the pod namespace, or host veth {} exists on the node",
                    spec.peer_name, spec.host_name
                )));
            }
            Err(e) => return Err(e),
        },
        Op::SetHairpin(name) => host.set_hairpin(name)?,
        Op::PodAddress(addr) => {
            let (nl, link) = pod.link()?;
            nl.add_address(link.index, *addr)?;
        }
        Op::PodUp => {
            let (nl, link) = pod.link()?;
            if !link.up {
                nl.set_up(link.index)?;
            }
        }
        Op::PodRoute { dst, gateway } => {
            let (nl, link) = pod.link()?;
            nl.add_route(&RouteSpec {
                dst: *dst,
                gateway: Some(*gateway),
                oif: link.index,
            })?;
        }
        Op::DeleteHostLink(name) => {
            host.delete_link(name)?;
        }
        Op::DeletePodLink { mac } => {
            // Best effort: DEL must succeed even when the namespace is gone.
            let r = pod.get().and_then(|p| match p {
                Some((nl, link)) if link.mac == Some(*mac) => {
                    let name = link.name.clone();
                    nl.delete_link(&name).map(|_| ())
                }
                _ => Ok(()),
            });
            if let Err(e) = r {
                warn!("cannot remove {} inside the pod: {e}", pod.ifname);
            }
        }
    }
    Ok(None)
}

/// The executor against the recording fake: order, undo order, and the
/// pod side opened only when needed.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::fake::Fake;

    fn veth() -> VethSpec {
        VethSpec {
            host_name: "flhost".into(),
            host_mac: [0x0e, 0x58, 0, 0, 0, 1],
            bridge_index: 1,
            mtu: 1500,
            peer_name: "eth0".into(),
            peer_mac: [0x0a, 0x58, 0, 0, 0, 1],
            peer_netns_fd: -1,
        }
    }

    fn ops() -> Vec<Op> {
        vec![
            Op::CreateVeth(veth()),
            Op::SetHairpin("flhost".into()),
            Op::PodAddress("192.168.2.210/24".parse().unwrap()),
            Op::PodUp,
            Op::PodRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: "192.168.2.1".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn a_failing_op_runs_every_undo_in_reverse_before_what_the_verb_pushed() {
        let mut host = Fake::with_bridge("br0");
        let mut pod = Fake::default();
        pod.insert("eth0", Some("veth"));
        pod.fail_on = Some("add_route".into());
        let mut undone = Vec::new();
        let r = apply(
            &ops(),
            &mut host,
            &mut Pod::new("eth0", || Ok(&mut pod)),
            vec![Undo::Release],
            |h, u| {
                undone.push(u.clone());
                match u {
                    Undo::DeleteHostLink(n) => h.delete_link(n).map(|_| ()),
                    Undo::Release => Ok(()),
                }
            },
        );
        assert!(r.is_err());
        assert_eq!(
            undone,
            [Undo::DeleteHostLink("flhost".into()), Undo::Release]
        );
        assert_eq!(
            host.log,
            [
                "create_veth flhost peer eth0",
                "set_hairpin flhost",
                "delete_link flhost"
            ]
        );
        // eth0 was already up in the fake: no set_up.
        let eth0 = pod.links["eth0"].index;
        assert_eq!(pod.log, [format!("add_address {eth0} 192.168.2.210/24")]);
    }

    #[test]
    fn host_ops_that_fail_never_open_the_pod() {
        let mut host = Fake::with_bridge("br0");
        host.fail_on = Some("create_veth".into());
        let mut undone = 0;
        let r = apply(
            &ops(),
            &mut host,
            &mut Pod::new("eth0", || -> Result<Fake> { panic!("pod opened") }),
            vec![Undo::Release],
            |_, _| {
                undone += 1;
                Ok(())
            },
        );
        assert_eq!(r.unwrap_err().code(), crate::error::code::NETLINK);
        assert_eq!(undone, 1, "only the verb's own undo");
    }

    #[test]
    fn a_pod_interface_that_vanished_is_try_again() {
        let mut host = Fake::with_bridge("br0");
        let r = apply(
            &ops(),
            &mut host,
            &mut Pod::new("eth0", || Ok(Fake::default())),
            Vec::new(),
            |h, u| match u {
                Undo::DeleteHostLink(n) => h.delete_link(n).map(|_| ()),
                Undo::Release => Ok(()),
            },
        );
        assert_eq!(r.unwrap_err().code(), 11);
        assert_eq!(
            host.log.last().map(String::as_str),
            Some("delete_link flhost")
        );
    }

    #[test]
    fn a_pod_link_is_deleted_only_with_the_recorded_mac() {
        for (recorded, deleted) in [(None, true), (Some([2, 9, 9, 9, 9, 9]), false)] {
            let mut host = Fake::default();
            let mut pod = Fake::default();
            pod.insert("eth0", Some("veth"));
            let mac = recorded.or(pod.links["eth0"].mac).unwrap();
            let op = [Op::DeletePodLink { mac }];
            apply(
                &op,
                &mut host,
                &mut Pod::new("eth0", || Ok(&mut pod)),
                Vec::new(),
                |_, _| Ok(()),
            )
            .expect("best effort");
            assert_eq!(
                pod.log.contains(&"delete_link eth0".to_string()),
                deleted,
                "{mac:?}"
            );
        }
        // A namespace that cannot be entered does not fail DEL.
        let op = [Op::DeletePodLink {
            mac: [2, 0, 0, 0, 0, 1],
        }];
        let gone = || -> Result<Fake> { Err(Error::UnknownContainer("/run/netns/gone".into())) };
        apply(
            &op,
            &mut Fake::default(),
            &mut Pod::new("eth0", gone),
            Vec::new(),
            |_, _| Ok(()),
        )
        .expect("best effort");
    }
}
