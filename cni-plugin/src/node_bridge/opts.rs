//! `flatlan node bridge`'s command line, parsed by hand like the rest of
//! the plugin's (cli.rs says why).

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::flags::Flags;

pub const USAGE: &str = "usage: flatlan node bridge --uplink IF [--bridge NAME] [--gateway IP] [--force] [--dry-run] [--root DIR]

Moves the node's IP from its NIC (the uplink) into a new Linux bridge, for
hosts that have no br0 yet: the uplink's addresses and routes, and its MAC
on the bridge (DHCP reservations and the neighbours' ARP caches stay
valid). STP is off and the forward delay 0, so the node is unreachable for
a few milliseconds, not 30 s. Afterwards the gateway must answer through
the bridge, or everything is rolled back. A runtime change: docs/bridge.md
says how to make it persistent.

Refuses (changing nothing, printing the configuration to use instead) when
netplan, NetworkManager, systemd-networkd, ifupdown or a DHCP client
manages the uplink: they would undo a runtime change.

  --uplink IF      the NIC that carries the node's IP (required)
  --bridge NAME    the bridge to create (default br0)
  --gateway IP     the host that must answer through the bridge (default:
                   the default route's next hop)
  --force          migrate even though a network manager owns the uplink
  --dry-run        print the plan as `ip` commands and change nothing
  --root DIR       where to look for the managers' files (default /)

Exit codes: 0 migrated (or nothing to do), 1 refused or failed with the
host as it was (nothing changed, or rolled back), 2 a bad command line,
3 ROLLBACK INCOMPLETE: the host is half migrated, run the `ip` commands
printed.";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opts {
    pub uplink: String,
    pub bridge: String,
    pub gateway: Option<IpAddr>,
    pub force: bool,
    pub dry_run: bool,
    pub root: PathBuf,
}

fn usage(msg: String) -> Error {
    Error::Usage(format!("{msg}\n{USAGE}"))
}

/// A name the kernel accepts for a new link (dev_valid_name).
fn valid_ifname(n: &str) -> bool {
    !n.is_empty()
        && n.len() < 16
        && n != "."
        && n != ".."
        && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

pub fn parse(args: &[String]) -> Result<Opts> {
    let mut uplink = None;
    let mut o = Opts {
        uplink: String::new(),
        bridge: "br0".into(),
        gateway: None,
        force: false,
        dry_run: false,
        root: "/".into(),
    };
    let mut f = Flags::new(args, USAGE);
    while let Some(a) = f.next()? {
        match a {
            "--uplink" => uplink = Some(f.value()?),
            "--bridge" => o.bridge = f.value()?,
            "--gateway" => {
                let v = f.value()?;
                o.gateway = Some(
                    v.parse()
                        .map_err(|_| usage(format!("--gateway {v:?} is not an IP address")))?,
                );
            }
            "--root" => o.root = f.value()?.into(),
            "--force" => o.force = true,
            "--dry-run" => o.dry_run = true,
            _ => return Err(f.unknown()),
        }
    }
    o.uplink = uplink.ok_or_else(|| usage("--uplink IF is required".into()))?;
    for (flag, n) in [("--uplink", &o.uplink), ("--bridge", &o.bridge)] {
        if !valid_ifname(n) {
            return Err(usage(format!(
                "{flag} {n:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
            )));
        }
    }
    if o.uplink == o.bridge {
        return Err(usage(format!(
            "--uplink and --bridge are both {:?}: the bridge is a new interface",
            o.uplink
        )));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::args;

    #[test]
    fn defaults_and_flags() {
        let o = parse(&args("--uplink eth0")).expect("parses");
        assert_eq!((o.uplink.as_str(), o.bridge.as_str()), ("eth0", "br0"));
        assert!(!o.force && !o.dry_run && o.gateway.is_none());
        assert_eq!(o.root, PathBuf::from("/"));
        let o = parse(&args(
            "--uplink eno1 --bridge lan0 --gateway fd00::1 --force --dry-run --root /tmp/x",
        ))
        .expect("parses");
        assert_eq!(o.bridge, "lan0");
        assert_eq!(o.gateway, Some("fd00::1".parse().expect("ip")));
        assert!(o.force && o.dry_run);
        assert_eq!(o.root, PathBuf::from("/tmp/x"));
        let joined = parse(&args(
            "--uplink=eno1 --bridge=lan0 --gateway=fd00::1 --force --dry-run --root=/tmp/x",
        ))
        .expect("parses");
        assert_eq!(joined, o);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            "",
            "--bridge br0",
            "--uplink",
            "--uplink eth0 --gateway router",
            "--uplink eth0 --bridge averyveryverylongname",
            "--uplink eth0 --bridge a/b",
            "--uplink eth0 --bridge eth0",
            "--uplink eth0 extra",
            "--uplink=eth0 --force=no",
            "--uplink=",
        ] {
            match parse(&args(bad)) {
                Err(Error::Usage(m)) => assert!(m.contains("usage:"), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
