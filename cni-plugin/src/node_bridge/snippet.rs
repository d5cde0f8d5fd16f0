//! The configuration to use instead, when a manager owns the uplink: the
//! same bridge (the uplink as its port, the uplink's MAC, STP off, no
//! forward delay), made by that manager, with this host's own addresses,
//! gateway and MAC filled in. docs/bridge.md has the same examples.

use std::fmt::Write as _;
use std::net::IpAddr;

use flatlan_l2::mac::MacAddr;

use super::detect::Manager;
use super::plan::Plan;

/// The parts of a plan a configuration needs.
struct Facts {
    uplink: String,
    bridge: String,
    mac: String,
    dhcp4: bool,
    /// Addresses from DHCP or router advertisements (a lifetime).
    dynamic6: bool,
    statics: Vec<String>,
    gw4: Option<IpAddr>,
    gw6: Option<IpAddr>,
}

fn facts(p: &Plan) -> Facts {
    let gw = |v6: bool| {
        p.routes
            .iter()
            .filter(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv6() == v6)
            .min_by_key(|r| r.metric.unwrap_or(0))
            .and_then(|r| r.gateway)
    };
    Facts {
        uplink: p.uplink.name.clone(),
        bridge: p.bridge.name.clone(),
        mac: MacAddr(p.bridge.mac).to_string(),
        dhcp4: p
            .addrs
            .iter()
            .any(|a| a.net.addr().is_ipv4() && a.is_dynamic()),
        dynamic6: p
            .addrs
            .iter()
            .any(|a| a.net.addr().is_ipv6() && a.is_dynamic()),
        statics: p
            .addrs
            .iter()
            .filter(|a| !a.is_dynamic())
            .map(|a| a.net.to_string())
            .collect(),
        gw4: gw(false),
        gw6: gw(true),
    }
}

/// The snippet for `m`, ready to paste.
pub fn snippet(m: &Manager, p: &Plan) -> String {
    let f = facts(p);
    match m {
        Manager::Netplan => netplan(&f),
        Manager::NetworkManager => network_manager(&f),
        Manager::Networkd => networkd(&f),
        Manager::Ifupdown => ifupdown(&f),
        Manager::DhcpClient { program, .. } => format!(
            "# {program} renews its lease on {u}, which would no longer carry the address.\n\
             # Make the bridge in the configuration that starts {program} (docs/bridge.md),\n\
             # or by hand: stop it, migrate, and run it on the bridge (same MAC, same lease):\n\
             kill <its pid>; flatlan node bridge --uplink {u} --bridge {b} --force; {program} {b}\n",
            u = f.uplink,
            b = f.bridge
        ),
    }
}

fn netplan(f: &Facts) -> String {
    let mut s = format!(
        "# /etc/netplan/60-{b}.yaml (and take {u}'s addresses, dhcp and routes out of the\n\
         # file that names it), then: netplan try\n\
         network:\n  version: 2\n  ethernets:\n    {u}: {{ dhcp4: false, dhcp6: false, accept-ra: false }}\n\
         \x20 bridges:\n    {b}:\n      interfaces: [{u}]\n      macaddress: \"{m}\"\n",
        b = f.bridge,
        u = f.uplink,
        m = f.mac
    );
    if f.dhcp4 {
        s.push_str("      dhcp4: true\n");
    }
    if f.dynamic6 {
        s.push_str("      accept-ra: true\n");
    }
    if !f.statics.is_empty() {
        let _ = writeln!(s, "      addresses: [{}]", f.statics.join(", "));
    }
    let routes: Vec<String> = [f.gw4, f.gw6]
        .iter()
        .flatten()
        .filter(|g| !(f.dhcp4 && g.is_ipv4()))
        .map(|g| format!("{{ to: default, via: {g} }}"))
        .collect();
    if !routes.is_empty() {
        let _ = writeln!(s, "      routes: [{}]", routes.join(", "));
    }
    s.push_str("      parameters: { stp: false, forward-delay: 0 }\n");
    s
}

fn network_manager(f: &Facts) -> String {
    let mut ip = String::new();
    if f.dhcp4 || f.statics.iter().all(|a| !a.contains('.')) {
        ip.push_str(" ipv4.method auto");
    } else {
        let v4: Vec<&str> = f
            .statics
            .iter()
            .filter(|a| a.contains('.'))
            .map(String::as_str)
            .collect();
        let _ = write!(ip, " ipv4.method manual ipv4.addresses {}", v4.join(","));
        if let Some(g) = f.gw4 {
            let _ = write!(ip, " ipv4.gateway {g}");
        }
    }
    let v6: Vec<&str> = f
        .statics
        .iter()
        .filter(|a| a.contains(':'))
        .map(String::as_str)
        .collect();
    if !v6.is_empty() {
        let _ = write!(ip, " ipv6.method manual ipv6.addresses {}", v6.join(","));
        if let Some(g) = f.gw6 {
            let _ = write!(ip, " ipv6.gateway {g}");
        }
    }
    format!(
        "nmcli connection add type bridge ifname {b} con-name {b} \\\n  \
         bridge.stp no bridge.forward-delay 0 ethernet.cloned-mac-address {m} \\\n  {ip}\n\
         nmcli connection add type bridge-slave ifname {u} master {b} con-name {b}-port-{u}\n\
         # then move over in one go (the old connection of {u} goes down):\n\
         nmcli connection up {b}\n",
        b = f.bridge,
        u = f.uplink,
        m = f.mac,
        ip = ip.trim_start()
    )
}

fn networkd(f: &Facts) -> String {
    let mut net = String::new();
    if f.dhcp4 {
        net.push_str("DHCP=ipv4\n");
    }
    for a in &f.statics {
        let _ = writeln!(net, "Address={a}");
    }
    for g in [f.gw4, f.gw6].iter().flatten() {
        if !(f.dhcp4 && g.is_ipv4()) {
            let _ = writeln!(net, "Gateway={g}");
        }
    }
    format!(
        "# /etc/systemd/network/50-{b}.netdev\n[NetDev]\nName={b}\nKind=bridge\nMACAddress={m}\n\n\
         [Bridge]\nSTP=no\nForwardDelaySec=0\n\n\
         # /etc/systemd/network/50-{u}.network (replaces the .network that configures {u} now)\n\
         [Match]\nName={u}\n\n[Network]\nBridge={b}\n\n\
         # /etc/systemd/network/50-{b}.network\n[Match]\nName={b}\n\n[Network]\n{net}\
         # then: networkctl reload && networkctl reconfigure {u} {b}\n",
        b = f.bridge,
        u = f.uplink,
        m = f.mac,
    )
}

fn ifupdown(f: &Facts) -> String {
    let mut s = format!(
        "# /etc/network/interfaces (needs bridge-utils); replaces the stanza for {u}\n\
         auto {b}\n",
        u = f.uplink,
        b = f.bridge
    );
    let v4 = f.statics.iter().find(|a| a.contains('.'));
    match (f.dhcp4, v4) {
        (false, Some(a)) => {
            let _ = writeln!(s, "iface {} inet static\n    address {a}", f.bridge);
            if let Some(g) = f.gw4 {
                let _ = writeln!(s, "    gateway {g}");
            }
        }
        _ => {
            let _ = writeln!(s, "iface {} inet dhcp", f.bridge);
        }
    }
    let _ = write!(
        s,
        "    bridge_ports {u}\n    bridge_stp off\n    bridge_fd 0\n    hwaddress ether {m}\n\
         # then: ifdown {u} && ifup {b}\n",
        u = f.uplink,
        b = f.bridge,
        m = f.mac
    );
    s
}
