//! The pure half of `flatlan node bridge`: from what the host looks like,
//! the steps that move the uplink into a bridge, ordered so that the node
//! is unreachable for as short a time as possible, each with its inverse
//! (STYLE.md rules 2 and 6).
//!
//! Once the uplink is a port its frames go up the bridge, which has the
//! uplink's MAC; the stack still answers for the addresses left on the
//! uplink (Linux accepts a packet for any local address on any link), and
//! replies still leave by the uplink's routes. So the outage is only the
//! time between an address leaving the uplink and reaching the bridge: a
//! few netlink messages on one socket. Everything else is done before:
//! the bridge is created up, with the uplink's MAC and MTU, STP off and no
//! forward delay, so the new port forwards at once. (The lab test sees 0
//! lost pings at 20 ms; 100 ms of sleep between the two loses 4.)

use std::fmt::Write as _;
use std::net::IpAddr;

use flatlan_l2::mac::MacAddr;

use crate::error::{Error, Result};
use crate::netlink::host::{Addr, BridgeSpec, Route, FOREVER, PROTO_BOOT, PROTO_KERNEL};
use crate::netlink::Link;

/// What the operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub uplink: String,
    pub bridge: String,
    /// The host whose answer proves the bridge works; the default route's
    /// next hop when not given.
    pub gateway: Option<IpAddr>,
}

/// The host as observed before any change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub links: Vec<Link>,
    /// The uplink's addresses, in the kernel's order (primaries first).
    pub addrs: Vec<Addr>,
    /// Routes through the uplink (every table but `local`).
    pub routes: Vec<Route>,
    /// The addresses of the uplink's master, when it has one.
    pub master_addrs: Vec<Addr>,
    /// Links stacked on the uplink (IFLA_LINK): name and kind.
    pub uppers: Vec<(String, String)>,
    /// The uplink is a Wi-Fi NIC (sysfs has its `wireless` directory).
    pub wireless: bool,
}

/// Which of the two links a step acts on; the bridge's index is only
/// known once it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dev {
    Uplink,
    Bridge,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    CreateBridge(BridgeSpec),
    DeleteBridge(String),
    Enslave,
    Release,
    AddAddr(Dev, Addr),
    DelAddr(Dev, Addr),
    AddRoute(Dev, Route),
    DelRoute(Dev, Route),
}

impl Step {
    /// The step that undoes this one.
    pub fn inverse(&self) -> Step {
        match self {
            Step::CreateBridge(s) => Step::DeleteBridge(s.name.clone()),
            Step::DeleteBridge(n) => Step::DeleteBridge(n.clone()),
            Step::Enslave => Step::Release,
            Step::Release => Step::Enslave,
            Step::AddAddr(d, a) => Step::DelAddr(*d, a.clone()),
            Step::DelAddr(d, a) => Step::AddAddr(*d, a.clone()),
            Step::AddRoute(d, r) => Step::DelRoute(*d, r.clone()),
            Step::DelRoute(d, r) => Step::AddRoute(*d, r.clone()),
        }
    }

    /// True when deleting the bridge does this step too: the kernel
    /// releases a deleted bridge's ports and drops its addresses and
    /// routes.
    pub fn goes_with_the_bridge(&self) -> bool {
        matches!(
            self,
            Step::Enslave
                | Step::Release
                | Step::AddAddr(Dev::Bridge, _)
                | Step::DelAddr(Dev::Bridge, _)
                | Step::AddRoute(Dev::Bridge, _)
                | Step::DelRoute(Dev::Bridge, _)
        )
    }

    /// The step as the `ip` command that does the same, for `--dry-run`
    /// and for an operator finishing a rollback by hand.
    pub fn command(&self, uplink: &str, bridge: &str) -> String {
        let dev = |d: &Dev| match d {
            Dev::Uplink => uplink,
            Dev::Bridge => bridge,
        };
        match self {
            Step::CreateBridge(s) => format!(
                "ip link add {} address {} mtu {} type bridge stp_state 0 forward_delay 0 && ip link set {} up",
                s.name,
                MacAddr(s.mac),
                s.mtu,
                s.name
            ),
            Step::DeleteBridge(n) => format!("ip link del {n}"),
            Step::Enslave => format!("ip link set {uplink} master {bridge}"),
            Step::Release => format!("ip link set {uplink} nomaster"),
            Step::AddAddr(d, a) => {
                let mut s = format!("ip addr add {} dev {}", a.net, dev(d));
                if let Some(b) = a.broadcast {
                    let _ = write!(s, " broadcast {b}");
                }
                if let Some(l) = &a.label {
                    let _ = write!(s, " label {l}");
                }
                if a.valid_lft != FOREVER {
                    let _ = write!(
                        s,
                        " valid_lft {} preferred_lft {}",
                        a.valid_lft, a.preferred_lft
                    );
                }
                if let Some(m) = a.route_metric {
                    let _ = write!(s, " metric {m}");
                }
                for (bit, word) in [(NODAD, "nodad"), (NOPREFIXROUTE, "noprefixroute")] {
                    if a.flags & bit != 0 {
                        let _ = write!(s, " {word}");
                    }
                }
                s
            }
            Step::DelAddr(d, a) => format!("ip addr del {} dev {}", a.net, dev(d)),
            Step::AddRoute(d, r) => route_command("add", r, dev(d)),
            Step::DelRoute(d, r) => route_command("del", r, dev(d)),
        }
    }
}

fn route_command(verb: &str, r: &Route, dev: &str) -> String {
    let v6 = if r.dst.addr().is_ipv6() { "-6 " } else { "" };
    let dst = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    let mut s = format!("ip {v6}route {verb} {dst}");
    if let Some(g) = r.gateway {
        let _ = write!(s, " via {g}");
    }
    let _ = write!(s, " dev {dev}");
    if r.protocol != PROTO_BOOT {
        let _ = write!(s, " proto {}", r.protocol);
    }
    if let Some(m) = r.metric {
        let _ = write!(s, " metric {m}");
    }
    if r.table != 254 {
        let _ = write!(s, " table {}", r.table);
    }
    if let Some(p) = r.prefsrc {
        let _ = write!(s, " src {p}");
    }
    if r.gateway.is_none() && r.scope == crate::netlink::host::SCOPE_LINK {
        s.push_str(" scope link");
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

/// IFA_F_NODAD.
const NODAD: u32 = 0x02;
/// IFA_F_NOPREFIXROUTE.
const NOPREFIXROUTE: u32 = 0x200;
/// IFA_F_SECONDARY, which for IPv6 means a temporary (privacy) address.
const SECONDARY: u32 = 0x01;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The uplink already is a port of the bridge: the message says so.
    AlreadyDone(String),
    Migrate(Plan),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub uplink: Link,
    pub bridge: BridgeSpec,
    pub gateway: IpAddr,
    pub steps: Vec<Step>,
    /// Addresses and routes that move (as the uplink has them).
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

impl Plan {
    /// The plan as `ip` commands, one a line.
    pub fn commands(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("  {}\n", s.command(&self.uplink.name, &self.bridge.name)))
            .collect()
    }
}

fn refuse(msg: String) -> Error {
    Error::NodeBridge(format!("{msg}; nothing was changed"))
}

/// Decides what to do, or why not, before anything changes.
pub fn plan(req: &Request, obs: &Observed) -> Result<Decision> {
    let uplink = obs
        .links
        .iter()
        .find(|l| l.name == req.uplink)
        .ok_or_else(|| {
            let names: Vec<&str> = obs.links.iter().map(|l| l.name.as_str()).collect();
            refuse(format!(
                "no interface named {:?} here (there are: {}): pass the NIC that carries the node's IP with --uplink",
                req.uplink,
                names.join(", ")
            ))
        })?;
    let name = &uplink.name;
    if let Some(m) = uplink.master {
        let master = obs.links.iter().find(|l| l.index == m);
        return match master {
            // A port of the bridge whose bridge holds no address that
            // would have moved is a migration cut short (killed, or undone
            // by hand halfway): "nothing to do" would leave the node
            // without its IP on the bridge.
            Some(b)
                if b.name == req.bridge
                    && b.kind.as_deref() == Some("bridge")
                    && !obs.master_addrs.iter().any(moves) =>
            {
                let (br, up) = (&b.name, name);
                Err(refuse(format!(
                    "{up} is a port of {br} but {br} has no address to carry the node's IP (a half-done migration?): undo it with `ip link set {up} nomaster; ip link del {br}`, check that {up} has its addresses and routes again, and run this again"
                )))
            }
            Some(b) if b.name == req.bridge && b.kind.as_deref() == Some("bridge") => {
                let addrs: Vec<String> = obs.master_addrs.iter().map(|a| a.net.to_string()).collect();
                Ok(Decision::AlreadyDone(format!(
                    "{name} is already a port of {} ({}, MAC {}): nothing to do\n",
                    b.name,
                    if addrs.is_empty() { "no addresses".to_string() } else { addrs.join(", ") },
                    b.mac.map(|m| MacAddr(m).to_string()).unwrap_or_default()
                )))
            }
            Some(b) => Err(refuse(format!(
                "{name} is already a port of {} (a {}); flatlan needs its NIC in a bridge of its own: release it first, or pass --bridge {} if that is the node's bridge",
                b.name,
                b.kind.as_deref().unwrap_or("link"),
                b.name
            ))),
            None => Err(refuse(format!("{name} has a master (index {m}) that is not in this namespace"))),
        };
    }
    if uplink.kind.as_deref() == Some("bridge") {
        return Err(refuse(format!(
            "{name} is itself a bridge: pass the NIC inside it with --uplink (or, if the node's IP is already on {name}, no migration is needed: set `bridge` in the CNI config to {name})"
        )));
    }
    let mac = uplink.mac.filter(|m| *m != [0; 6]).ok_or_else(|| {
        refuse(format!(
            "{name} has no Ethernet address (loopback, a tunnel?): only an Ethernet NIC can be a bridge port"
        ))
    })?;
    if !uplink.up {
        return Err(refuse(format!(
            "{name} is down: bring it up and let it get its address first (ip link set {name} up)"
        )));
    }
    // The bridge takes the port's rx handler, which a macvlan or ipvlan
    // (the usual shim that lets a Pi-hole or Home Assistant container
    // reach its host) already holds: enslaving fails EBUSY.
    if let Some((upper, kind)) = obs
        .uppers
        .iter()
        .find(|(_, k)| matches!(k.as_str(), "macvlan" | "macvtap" | "ipvlan" | "ipvtap"))
    {
        return Err(refuse(format!(
            "{name} carries {upper} (a {kind}), and a NIC with a {kind} on it cannot be a bridge port (the kernel refuses with EBUSY): delete {upper} (ip link del {upper}), migrate, then make it again on {} (ip link add {upper} link {} type {kind} ...)",
            req.bridge, req.bridge
        )));
    }
    if obs.wireless {
        return Err(refuse(format!(
            "{name} is a Wi-Fi NIC: in client (managed) mode it cannot be a bridge port (the kernel refuses with EOPNOTSUPP; the access point accepts frames only from the MAC that associated). Use a wired NIC, or a routed setup instead of a bridge"
        )));
    }
    if let Some(b) = obs.links.iter().find(|l| l.name == req.bridge) {
        return Err(refuse(format!(
            "{} already exists (a {}) and {name} is not its port: pick another name with --bridge, or add {name} to it yourself",
            b.name,
            b.kind.as_deref().unwrap_or("link")
        )));
    }
    let addrs: Vec<Addr> = obs.addrs.iter().filter(|a| moves(a)).cloned().collect();
    if addrs.is_empty() {
        return Err(refuse(format!(
            "{name} has no address to move (only link-local ones): this command moves a node's IP from its NIC to a bridge; let {name} get its address first"
        )));
    }
    // The kernel remakes an address's prefix route wherever the address
    // goes, except for an address flagged noprefixroute: NetworkManager
    // adds its addresses so and the prefix route itself (still `proto
    // kernel`). That one must move, or the bridge has no subnet route and
    // the default route's gateway is unreachable (ENETUNREACH).
    let own_prefix = |r: &Route| {
        addrs
            .iter()
            .any(|a| a.flags & NOPREFIXROUTE != 0 && a.net.trunc() == r.dst)
    };
    let routes: Vec<Route> = obs
        .routes
        .iter()
        .filter(|r| r.protocol != PROTO_KERNEL || own_prefix(r))
        .cloned()
        .collect();
    let gateway = match req.gateway {
        Some(g) => g,
        None => default_gateway(&routes).ok_or_else(|| {
            refuse(format!(
                "there is no default route via {name}, so no gateway to check the bridge with: pass --gateway IP (a LAN host that answers ARP)"
            ))
        })?,
    };
    let bridge = BridgeSpec {
        name: req.bridge.clone(),
        mac,
        mtu: uplink.mtu,
    };
    let steps = steps(&bridge, &addrs, &routes, name);
    Ok(Decision::Migrate(Plan {
        uplink: uplink.clone(),
        bridge,
        gateway,
        steps,
        addrs,
        routes,
    }))
}

/// IPv6 link-local addresses stay (the bridge makes its own, the same
/// one since it has the same MAC), and so do temporary addresses (the
/// kernel makes new ones on the bridge).
fn moves(a: &Addr) -> bool {
    match a.net.addr() {
        IpAddr::V4(_) => true,
        IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) != 0xfe80 && a.flags & SECONDARY == 0,
    }
}

/// The next hop of the best default route: IPv4 first, lowest metric.
fn default_gateway(routes: &[Route]) -> Option<IpAddr> {
    routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 0 && r.gateway.is_some() && r.table == 254)
        .min_by_key(|r| (r.dst.addr().is_ipv6(), r.metric.unwrap_or(0)))
        .and_then(|r| r.gateway)
}

/// The address as the bridge gets it: the same, with its label renamed
/// and without duplicate address detection, which would keep an IPv6
/// address unusable for a second although it has been this host's all
/// along (and still is: same MAC, same LAN).
fn on_bridge(a: &Addr, uplink: &str, bridge: &str) -> Addr {
    let mut b = a.clone();
    b.label = a
        .label
        .as_deref()
        .and_then(|l| l.strip_prefix(uplink))
        .filter(|rest| rest.starts_with(':'))
        .map(|rest| format!("{bridge}{rest}"));
    if a.net.addr().is_ipv6() {
        b.flags |= NODAD;
    }
    b
}

fn steps(bridge: &BridgeSpec, addrs: &[Addr], routes: &[Route], uplink: &str) -> Vec<Step> {
    let mut s = vec![Step::CreateBridge(bridge.clone()), Step::Enslave];
    // A route through a gateway needs the route to the gateway: those go
    // last and come back first.
    let (via, direct): (Vec<&Route>, Vec<&Route>) =
        routes.iter().partition(|r| r.gateway.is_some());
    for r in via.iter().chain(&direct) {
        s.push(Step::DelRoute(Dev::Uplink, (*r).clone()));
    }
    // Secondaries before their primary: deleting an IPv4 primary takes its
    // secondaries with it.
    for a in addrs.iter().rev() {
        s.push(Step::DelAddr(Dev::Uplink, a.clone()));
    }
    for a in addrs {
        s.push(Step::AddAddr(
            Dev::Bridge,
            on_bridge(a, uplink, &bridge.name),
        ));
    }
    for r in direct.iter().chain(&via) {
        s.push(Step::AddRoute(Dev::Bridge, (*r).clone()));
    }
    s
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(super) mod tests;
