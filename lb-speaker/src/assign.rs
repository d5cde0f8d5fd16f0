//! Making the owner accept traffic for its VIPs in static mode.
//!
//! Announcing a VIP only steers the LAN's frames to the owner's MAC; without
//! kube-proxy (static mode) the owner's kernel must also consider the VIP a
//! local address. With `assign: true` (the default) the speaker:
//!
//! - adds the VIP as a host address (`/32`, `/128`) to `lo` while it owns it
//!   and removes it on release (and, at start, removes leftovers from a
//!   previous run that was killed);
//! - sets `net.ipv4.conf.<if>.arp_ignore=1` on the announcing interface, so
//!   the kernel answers ARP only for addresses configured *on that
//!   interface* and never for the VIP on `lo`. Otherwise every node that
//!   ever held the VIP would answer, and the LAN's caches would flap between
//!   them: only the speaker answers, and only on the owner;
//! - sets `arp_announce=2`, so the kernel never uses the VIP as the sender
//!   address of its own ARP requests (which would poison caches with a
//!   non-owner's MAC).
//!
//! IPv6 needs no sysctl: Linux answers an NS only for addresses on the
//! receiving interface, so a VIP on `lo` is answered by the speaker alone.
//! The sysctls are runtime settings; a host that re-applies sysctl.d files
//! (systemd-sysctl) may revert them, so deployments should also ship them
//! in `/etc/sysctl.d/` (STYLE "Pitfalls").

use std::net::IpAddr;
use std::process::Command;

use crate::error::{Error, Result};

/// The host operations `assign` needs, behind a trait so the engine can be
/// run with a recorder (or with `assign: false`).
pub trait HostAddrs: Send {
    /// Sets `arp_ignore`/`arp_announce` on the announcing interface.
    fn prepare_iface(&mut self, iface: &str) -> Result<()>;
    /// Adds `vip` to `lo`.
    fn add(&mut self, vip: IpAddr) -> Result<()>;
    /// Removes `vip` from `lo`; absent is fine.
    fn del(&mut self, vip: IpAddr) -> Result<()>;
    /// Adds several VIPs at once (a claim burst after a failover can move
    /// hundreds); the default adds them one by one.
    fn add_many(&mut self, vips: &[IpAddr]) -> Result<()> {
        vips.iter().try_for_each(|v| self.add(*v))
    }
    /// Removes several VIPs; absent ones are fine.
    fn del_many(&mut self, vips: &[IpAddr]) -> Result<()> {
        vips.iter().try_for_each(|v| self.del(*v))
    }
}

/// Does nothing (`assign: false`, e.g. when kube-proxy handles the VIP).
#[derive(Debug, Default)]
pub struct NoAssign;

impl HostAddrs for NoAssign {
    fn prepare_iface(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn add(&mut self, _: IpAddr) -> Result<()> {
        Ok(())
    }
    fn del(&mut self, _: IpAddr) -> Result<()> {
        Ok(())
    }
}

/// The real thing: iproute2 for the address, `/proc/sys` for sysctls (both
/// act on the caller's network namespace).
#[derive(Debug, Default)]
pub struct LoopbackAssign;

fn host_net(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

fn ip(args: &[&str]) -> Result<std::process::Output> {
    Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::sys(format!("ip {}", args.join(" ")), e))
}

impl HostAddrs for LoopbackAssign {
    fn prepare_iface(&mut self, iface: &str) -> Result<()> {
        for (key, val) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
            std::fs::write(&path, val).map_err(|e| Error::sys(format!("write {path}"), e))?;
        }
        Ok(())
    }

    fn add(&mut self, vip: IpAddr) -> Result<()> {
        let net = host_net(vip);
        let mut args = vec!["addr", "replace", net.as_str(), "dev", "lo"];
        if vip.is_ipv6() {
            args.push("nodad");
        }
        let out = ip(&args)?;
        if !out.status.success() {
            return Err(Error::sys(
                format!("ip {}", args.join(" ")),
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            ));
        }
        Ok(())
    }

    fn add_many(&mut self, vips: &[IpAddr]) -> Result<()> {
        if vips.len() <= 1 {
            return vips.iter().try_for_each(|v| self.add(*v));
        }
        // One `ip -batch` instead of one process per VIP: 1,000 execs
        // would stall the event loop (and the heartbeats) for seconds.
        batch(vips.iter().map(|v| {
            format!(
                "addr replace {} dev lo{}",
                host_net(*v),
                if v.is_ipv6() { " nodad" } else { "" }
            )
        }))
    }

    fn del_many(&mut self, vips: &[IpAddr]) -> Result<()> {
        // `-force` keeps going past addresses that are not there.
        let _ = batch(
            vips.iter()
                .map(|v| format!("addr del {} dev lo", host_net(*v))),
        );
        Ok(())
    }

    fn del(&mut self, vip: IpAddr) -> Result<()> {
        let net = host_net(vip);
        // Fails harmlessly (EADDRNOTAVAIL) when the address is not there.
        let _ = ip(&["addr", "del", net.as_str(), "dev", "lo"])?;
        Ok(())
    }
}

/// Runs `ip -force -batch -` with one command per line.
fn batch(lines: impl Iterator<Item = String>) -> Result<()> {
    use std::io::Write as _;
    let script: String = lines.map(|l| l + "\n").collect();
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::sys("ip -batch", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::sys("ip -batch", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::sys("ip -batch", e))?;
    if !out.status.success() {
        return Err(Error::sys(
            "ip -batch",
            std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ));
    }
    Ok(())
}
