//! Who else configures the uplink? A network manager that owns it would
//! undo a runtime change (NetworkManager and networkd react to the
//! address leaving the NIC, a DHCP client renews its lease on the NIC),
//! so the migration refuses and says how to make the bridge in that
//! manager instead.
//!
//! Files are read under `root` (the tests seed a temporary one);
//! processes are found in `proc`, and only those in this network
//! namespace count: a dhclient for another namespace's `eth0` does not
//! own ours.

use std::fmt;
use std::path::{Path, PathBuf};

/// A manager that owns the uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manager {
    Netplan,
    NetworkManager,
    Networkd,
    Ifupdown,
    /// A DHCP client process (dhclient, dhcpcd, udhcpc).
    DhcpClient {
        program: String,
        pid: u32,
    },
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Manager::Netplan => f.write_str("netplan"),
            Manager::NetworkManager => f.write_str("NetworkManager"),
            Manager::Networkd => f.write_str("systemd-networkd"),
            Manager::Ifupdown => f.write_str("ifupdown"),
            Manager::DhcpClient { program, pid } => write!(f, "{program} (pid {pid})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub manager: Manager,
    /// What gave it away: a file, a process's command line.
    pub evidence: String,
}

/// Every manager found owning `uplink` (index `ifindex`), netplan first:
/// it renders the NetworkManager or networkd configuration, so it is the
/// one to edit.
pub fn detect(root: &Path, proc: &Path, uplink: &str, ifindex: u32) -> Vec<Finding> {
    let mut out = Vec::new();
    for dir in ["etc/netplan", "run/netplan", "lib/netplan"] {
        for f in files(&root.join(dir), ".yaml") {
            if read(&f).is_some_and(|y| netplan_names(&y, uplink)) {
                out.push(found(
                    Manager::Netplan,
                    format!("{} names {uplink}", f.display()),
                ));
            }
        }
    }
    let nm = root.join(format!("run/NetworkManager/devices/{ifindex}"));
    if read(&nm).is_some_and(|s| nm_managed(&s)) {
        out.push(found(
            Manager::NetworkManager,
            format!("{} says it manages the device", nm.display()),
        ));
    }
    let nd = root.join(format!("run/systemd/netif/links/{ifindex}"));
    if let Some(state) = read(&nd).and_then(|s| networkd_managed(&s)) {
        out.push(found(
            Manager::Networkd,
            format!("{} has {state}", nd.display()),
        ));
    }
    let mut ifupdown = vec![root.join("etc/network/interfaces")];
    ifupdown.extend(files(&root.join("etc/network/interfaces.d"), ""));
    for f in ifupdown {
        if read(&f).is_some_and(|s| ifupdown_names(&s, uplink)) {
            out.push(found(
                Manager::Ifupdown,
                format!("{} has a stanza for {uplink}", f.display()),
            ));
        }
    }
    out.extend(dhcp_clients(proc, uplink));
    out
}

fn found(manager: Manager, evidence: String) -> Finding {
    Finding { manager, evidence }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Regular files in `dir` ending in `suffix`, sorted; none if it is absent.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// NetworkManager's per-device state file (`[device]` keyfile): it is
/// written for devices it knows; `managed=false` is one it leaves alone.
pub fn nm_managed(keyfile: &str) -> bool {
    !keyfile
        .lines()
        .map(|l| l.replace(' ', ""))
        .any(|l| l.eq_ignore_ascii_case("managed=false") || l == "managed=0")
}

/// networkd's per-link state file: the `ADMIN_STATE` unless networkd
/// leaves the link alone (`unmanaged`) or has forgotten it (`linger`).
pub fn networkd_managed(state: &str) -> Option<String> {
    let admin = state
        .lines()
        .find_map(|l| l.trim().strip_prefix("ADMIN_STATE="))?
        .trim();
    if matches!(admin, "unmanaged" | "linger" | "") {
        return None;
    }
    let file = state
        .lines()
        .find_map(|l| l.trim().strip_prefix("NETWORK_FILE="))
        .map(|f| format!(", NETWORK_FILE={}", f.trim()))
        .unwrap_or_default();
    Some(format!("ADMIN_STATE={admin}{file}"))
}

/// Does a netplan YAML name the interface? As a key (`eth0:` under
/// `ethernets`), a value (`set-name: eth0`, `interfaces: [eth0]`, a
/// `- eth0` item) or a `match: {name: en*}` glob. A token scan, not a
/// YAML parser: the plugin stays lean, and a false alarm costs only a
/// `--force`.
pub fn netplan_names(yaml: &str, ifname: &str) -> bool {
    yaml.lines().any(|line| {
        let l = line.split('#').next().unwrap_or("");
        let mut tokens = l
            .split(|c: char| matches!(c, '[' | ']' | '{' | '}' | ',' | ':') || c.is_whitespace())
            .map(|t| t.trim_matches(|c| c == '"' || c == '\''))
            .filter(|t| !t.is_empty() && *t != "-");
        let mut after_name = false;
        tokens.any(|t| {
            let hit = t == ifname || (after_name && glob(t, ifname));
            after_name = t == "name";
            hit
        })
    })
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => !prefix.is_empty() && name.starts_with(prefix),
        None => pattern == name,
    }
}

/// An `/etc/network/interfaces` stanza for the interface.
pub fn ifupdown_names(text: &str, ifname: &str) -> bool {
    text.lines().any(|l| {
        let w: Vec<&str> = l
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        match w.first() {
            Some(&"iface") => w.get(1) == Some(&ifname),
            Some(&("auto" | "allow-hotplug")) => w[1..].contains(&ifname),
            _ => false,
        }
    })
}

/// The DHCP client program if `argv` runs one for `ifname`: named on its
/// command line, or dhcpcd in manager mode (no interface named at all,
/// as Raspberry Pi OS runs `dhcpcd -q -b`), which manages every one.
pub fn dhcp_client_for(argv: &[String], ifname: &str) -> Option<String> {
    let prog = argv.first()?.rsplit('/').next()?.to_string();
    if !matches!(
        prog.as_str(),
        "dhclient" | "dhclient3" | "dhcpcd" | "udhcpc" | "dhcpcd5"
    ) {
        return None;
    }
    let args = argv.get(1..).unwrap_or_default();
    let named = args.iter().any(|a| {
        a == ifname
            || a.strip_prefix("-i") == Some(ifname)
            || a.strip_prefix("--interface=") == Some(ifname)
    });
    let manager_mode = prog.starts_with("dhcpcd") && dhcpcd_interfaces(args) == 0;
    (named || manager_mode).then_some(prog)
}

/// How many interfaces a dhcpcd command line names: its arguments that
/// are neither options nor an option's separate value.
fn dhcpcd_interfaces(args: &[String]) -> usize {
    // dhcpcd(8)'s short options that take a value.
    const WITH_VALUE: &str = "cefhilmOorSstuvyzZ";
    let mut n = 0;
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if let Some(opt) = a.strip_prefix('-') {
            let short = opt.len() == 1 && !opt.starts_with('-');
            skip = short && WITH_VALUE.contains(opt);
        } else {
            n += 1;
        }
    }
    n
}

fn dhcp_clients(proc: &Path, ifname: &str) -> Vec<Finding> {
    let ours = std::fs::read_link(proc.join("self/ns/net")).ok();
    let Ok(rd) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(program) = dhcp_client_for(&argv, ifname) else {
            continue;
        };
        // Same namespace only; one we cannot tell counts (safer to ask
        // for --force than to race a client we could not see into).
        let theirs = std::fs::read_link(e.path().join("ns/net")).ok();
        if ours.is_some() && theirs.is_some() && theirs != ours {
            continue;
        }
        out.push(found(
            Manager::DhcpClient { program, pid },
            format!("process {pid} runs `{}`", argv.join(" ")),
        ));
    }
    out
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
