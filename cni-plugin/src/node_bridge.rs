//! `flatlan node bridge --uplink IF`: moves a node's IP from its NIC into
//! a new bridge, for hosts without a br0 (issue 14 item 4).
//!
//! Observe, decide (plan.rs, pure), refuse if a network manager owns the
//! uplink (detect.rs), apply with an undo stack (apply.rs), then check
//! that the gateway answers through the bridge (gateway.rs) and roll back
//! by ourselves if it does not, as `netplan try` does. docs/bridge.md is
//! the user's side of it.

mod apply;
mod detect;
mod gateway;
mod opts;
mod plan;
mod signals;
mod snippet;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use flatlan_l2::mac::MacAddr;

use crate::error::{Error, Result};
use crate::netlink::host::HostNetlink;
use crate::netlink::Socket;

pub use detect::{Finding, Manager};
pub use opts::{Opts, USAGE};
pub use plan::{Decision, Observed, Plan, Request};

const RUNTIME_ONLY: &str =
    "This is a runtime change: a reboot (or a network manager restarting) undoes it.
docs/bridge.md shows how to make the bridge persistent (netplan, systemd-networkd, NetworkManager).
";

/// What the migration needs from the world besides netlink; the tests
/// give a scripted one.
pub trait World {
    /// Managers that own the uplink.
    fn managers(&mut self, root: &Path, uplink: &str, ifindex: u32) -> Vec<Finding>;
    /// The gateway's MAC and answer time through `ifname`, if it answers.
    fn gateway(
        &mut self,
        ifname: &str,
        gw: IpAddr,
        tries: u32,
    ) -> Result<Option<(MacAddr, Duration)>>;
    /// Whether `ifname` is a Wi-Fi NIC.
    fn wireless(&mut self, ifname: &str) -> bool;
}

struct Real;

impl World for Real {
    fn managers(&mut self, root: &Path, uplink: &str, ifindex: u32) -> Vec<Finding> {
        detect::detect(root, Path::new("/proc"), uplink, ifindex)
    }
    fn gateway(
        &mut self,
        ifname: &str,
        gw: IpAddr,
        tries: u32,
    ) -> Result<Option<(MacAddr, Duration)>> {
        gateway::answers(ifname, gw, tries)
    }
    fn wireless(&mut self, ifname: &str) -> bool {
        // sysfs is not under --root: it is the kernel's view of this
        // namespace's links.
        let dir = Path::new("/sys/class/net").join(ifname);
        dir.join("wireless").exists() || dir.join("phy80211").exists()
    }
}

/// `flatlan node ...`; `args` starts after `node`.
pub fn main(args: &[String]) -> Result<String> {
    let help = |a: &str| matches!(a, "-h" | "--help" | "help");
    match args.first().map(String::as_str) {
        Some("bridge") => {}
        Some(a) if help(a) => return Ok(format!("{USAGE}\n")),
        Some(v) => return Err(Error::Usage(format!("unknown command node {v:?}\n{USAGE}"))),
        None => {
            return Err(Error::Usage(format!(
                "`flatlan node` needs a command\n{USAGE}"
            )))
        }
    }
    let rest = args.get(1..).unwrap_or_default();
    if rest.iter().any(|a| help(a)) {
        return Ok(format!("{USAGE}\n"));
    }
    let o = opts::parse(rest)?;
    crate::init_logging(None);
    let mut nl = Socket::new()?;
    migrate(&mut nl, &o, &mut Real)
}

/// Reads the uplink, its addresses and routes, and its master's addresses.
pub fn observe<N: HostNetlink>(nl: &mut N, uplink: &str) -> Result<Observed> {
    let links = nl.host_links()?;
    let mut obs = Observed::default();
    if let Some(u) = links.iter().find(|l| l.name == uplink) {
        obs.addrs = nl.addrs(u.index)?;
        obs.routes = nl.routes_via(u.index)?;
        obs.uppers = nl.uppers(u.index)?;
        if let Some(m) = u.master {
            obs.master_addrs = nl.addrs(m)?;
        }
    }
    obs.links = links;
    Ok(obs)
}

/// The whole command against `nl` and `world`.
pub fn migrate<N: HostNetlink>(nl: &mut N, o: &Opts, world: &mut dyn World) -> Result<String> {
    let req = Request {
        uplink: o.uplink.clone(),
        bridge: o.bridge.clone(),
        gateway: o.gateway,
    };
    let mut before = observe(nl, &o.uplink)?;
    before.wireless = world.wireless(&o.uplink);
    let plan = match plan::plan(&req, &before)? {
        Decision::AlreadyDone(msg) => return Ok(msg),
        Decision::Migrate(p) => p,
    };
    let (up, br) = (plan.uplink.name.as_str(), plan.bridge.name.as_str());
    let found = world.managers(&o.root, up, plan.uplink.index);
    if o.dry_run {
        let mut out = format!(
            "would move {up} into {br} (nothing changed; --dry-run):\n{}then check that {} answers through {br}, and roll back if not\n",
            plan.commands(),
            plan.gateway
        );
        for f in &found {
            let _ = writeln!(
                out,
                "{} manages {up} ({}): without --force this would be refused",
                f.manager, f.evidence
            );
        }
        return Ok(out);
    }
    if let Some(first) = found.first() {
        if !o.force {
            return Err(refusal(&plan, &found, first));
        }
    }
    // Before any change: does the gateway answer at all? Only to explain
    // a failure afterwards.
    let answered_before = world.gateway(up, plan.gateway, 1).ok().flatten().is_some();

    // From the first change until the host is verified or put back, a
    // signal (an SSH session's SIGHUP) must not end flatlan: it waits.
    let held = signals::Held::new()?;
    let mut exec = apply::Executor::new(nl, &plan);
    if let Err(why) = exec.apply(&plan.steps) {
        if !exec.changed() {
            return Err(Error::BridgeMigration {
                uplink: up.to_string(),
                bridge: br.to_string(),
                reason: why,
                rollback: "nothing was changed".into(),
                incomplete: false,
            });
        }
        let left = exec.undo();
        // Nothing left to protect: a signal that came meanwhile has had
        // its effect (the undo), it must not kill the report.
        let _ = held.take();
        return Err(failed(nl, &plan, &before, why, left));
    }
    let check = match held.take() {
        Some(sig) => Err(sig),
        None => {
            eprintln!(
                "checking the gateway {} through {br} (at most {} s; do not interrupt)",
                plan.gateway,
                gateway::budget(gateway::TRIES).as_secs_f32()
            );
            let check = world.gateway(br, plan.gateway, gateway::TRIES);
            // One that came during the check: the operator wants out, and
            // out is the state before.
            held.take().map_or(Ok(check), Err)
        }
    };
    let (mac, took) = match check {
        Ok(Ok(Some(answer))) => answer,
        other => {
            let left = exec.undo();
            let _ = held.take();
            let why = match other {
                Err(sig) => format!("interrupted by {sig} before the gateway check ended"),
                Ok(Err(e)) => format!(
                    "cannot check the gateway {} through {br}: {e}",
                    plan.gateway
                ),
                _ => unanswered(&plan, answered_before),
            };
            return Err(failed(nl, &plan, &before, why, left));
        }
    };
    let mut out = format!(
        "moved {up} into {br} (MAC {}, MTU {}, STP off, forward delay 0)\n  addresses: {}\n  routes: {}\nthe gateway {} ({mac}) answered through {br} after {} ms\n",
        MacAddr(plan.bridge.mac),
        plan.bridge.mtu,
        plan.addrs.iter().map(|a| a.net.to_string()).collect::<Vec<_>>().join(", "),
        if plan.routes.is_empty() {
            "none but the addresses' own".to_string()
        } else {
            plan.routes.iter().map(route_text).collect::<Vec<_>>().join(", ")
        },
        plan.gateway,
        took.as_millis()
    );
    for f in &found {
        let _ = writeln!(
            out,
            "warning: {} manages {up} ({}) and may undo this (--force): make the bridge there (docs/bridge.md)",
            f.manager, f.evidence
        );
    }
    for a in plan.addrs.iter().filter(|a| a.is_dynamic()) {
        let _ = writeln!(
            out,
            "note: {} has a lease ({} s left): whatever renews it (a DHCP client) must now run on {br}, or the kernel drops it when it runs out",
            a.net, a.valid_lft
        );
    }
    out.push_str(RUNTIME_ONLY);
    Ok(out)
}

fn route_text(r: &crate::netlink::host::Route) -> String {
    let dst = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    match r.gateway {
        Some(g) => format!("{dst} via {g}"),
        None => dst,
    }
}

fn refusal(plan: &Plan, found: &[Finding], first: &Finding) -> Error {
    let up = &plan.uplink.name;
    let mut msg = format!(
        "{up} is managed by {}, which would undo a runtime change; nothing was changed.\n",
        first.manager
    );
    for f in found {
        let _ = writeln!(msg, "  {}: {}", f.manager, f.evidence);
    }
    let _ = write!(
        msg,
        "Make {} in {} instead ({up} as its port, {up}'s MAC on the bridge):\n\n{}\n\
         docs/bridge.md explains. To move {up} at runtime anyway, knowing {} may undo it: --force",
        plan.bridge.name,
        first.manager,
        snippet::snippet(&first.manager, plan),
        first.manager
    );
    Error::NodeBridge(msg)
}

fn unanswered(plan: &Plan, answered_before: bool) -> String {
    let (up, br, gw) = (&plan.uplink.name, &plan.bridge.name, plan.gateway);
    let what = if gw.is_ipv4() {
        "ARP"
    } else {
        "neighbour solicitations"
    };
    let mut s = format!(
        "the gateway {gw} did not answer {what} through {br} within {} s ({} tries)",
        gateway::budget(gateway::TRIES).as_secs_f32(),
        gateway::TRIES
    );
    if answered_before {
        let _ = write!(
            s,
            ", although it answered through {up} before (is {up} a Wi-Fi NIC? In client mode most cannot be bridge ports)"
        );
    } else {
        let _ = write!(
            s,
            " (it did not answer through {up} before the change either: is {gw} reachable? Pass --gateway with a LAN host that answers)"
        );
    }
    s
}

/// The error after an undo, saying whether the host is as it was.
fn failed<N: HostNetlink>(
    nl: &mut N,
    plan: &Plan,
    before: &Observed,
    reason: String,
    left: Vec<String>,
) -> Error {
    let (up, br) = (&plan.uplink.name, &plan.bridge.name);
    let rollback = if left.is_empty() {
        match observe(nl, up).map(|now| same(before, &now, up, br)) {
            Ok(Ok(())) => format!(
                "rolled back: {up} has its addresses, routes and MAC again and {br} is gone"
            ),
            Ok(Err(diff)) => format!("rolled back, but {up} is not quite as it was: {diff}"),
            Err(e) => format!("rolled back, but cannot read {up} back to compare: {e}"),
        }
    } else {
        format!(
            "ROLLBACK INCOMPLETE, finish it by hand:\n  {}",
            left.join("\n  ")
        )
    };
    Error::BridgeMigration {
        uplink: up.clone(),
        bridge: br.clone(),
        reason,
        rollback,
        incomplete: !left.is_empty(),
    }
}

/// Compares the uplink and the bridge in two observations: the link
/// entries (the uplink's MAC, master, MTU; the bridge gone), the uplink's
/// addresses without their lifetimes (they tick) and its routes. Other
/// links are not compared: a pod's veth made meanwhile is not ours.
fn same(a: &Observed, b: &Observed, uplink: &str, bridge: &str) -> std::result::Result<(), String> {
    let entry = |o: &Observed, name: &str| {
        o.links.iter().find(|l| l.name == name).map(|l| {
            format!(
                "{name} MAC {} MTU {} master {:?} {}",
                l.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default(),
                l.mtu,
                l.master,
                if l.up { "up" } else { "down" }
            )
        })
    };
    let addrs = |o: &Observed| {
        // Without the DAD state bits (tentative, optimistic, dadfailed,
        // deprecated): a fresh link-local may finish DAD meanwhile.
        let mut v: Vec<String> = o
            .addrs
            .iter()
            .map(|a| format!("{} flags {:#x}", a.net, a.flags & !0x6c))
            .collect();
        v.sort();
        v
    };
    let routes = |o: &Observed| {
        let mut v: Vec<String> = o.routes.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    for name in [uplink, bridge] {
        let (was, is) = (entry(a, name), entry(b, name));
        if was != is {
            let show = |e: Option<String>| e.unwrap_or_else(|| format!("no {name}"));
            return Err(format!("{name} was {}, is {}", show(was), show(is)));
        }
    }
    if addrs(a) != addrs(b) {
        return Err(format!("addresses were {:?}, are {:?}", addrs(a), addrs(b)));
    }
    if routes(a) != routes(b) {
        return Err(format!("routes were {:?}, are {:?}", routes(a), routes(b)));
    }
    Ok(())
}

#[cfg(test)]
#[path = "node_bridge/tests.rs"]
mod tests;
