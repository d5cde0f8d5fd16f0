//! The home router's DHCP and DNS server.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::addresses::{DHCP_RANGE, GATEWAY, LAN_SUBNET};
use crate::error::Result;
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;

/// DNS domain the router serves for the LAN.
pub const LAN_DOMAIN: &str = "lan";

/// dnsmasq's arguments. No config file, no /etc/hosts, no upstream: the
/// router answers only for LAN names and must never forward a query out of
/// the lab. Pid and lease files go to our scratch dir, and it stays root
/// (its default `nobody` could not write there).
pub(crate) fn dnsmasq_args(dir: &str, hosts: &[(String, Ipv4Addr)]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "dnsmasq".into(),
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        "--group=root".into(),
        "--bind-interfaces".into(),
        "--interface=eth0".into(),
        format!("--listen-address={GATEWAY}"),
        format!("--pid-file={dir}/dnsmasq.pid"),
        format!("--dhcp-leasefile={dir}/dnsmasq.leases"),
        format!(
            "--dhcp-range={},{},{},1h",
            DHCP_RANGE.0,
            DHCP_RANGE.1,
            LAN_SUBNET.netmask()
        ),
        format!("--dhcp-option=option:router,{GATEWAY}"),
        format!("--dhcp-option=option:dns-server,{GATEWAY}"),
        "--dhcp-authoritative".into(),
        format!("--domain={LAN_DOMAIN}"),
        format!("--local=/{LAN_DOMAIN}/"),
    ];
    for (name, ip) in hosts {
        a.push(format!("--host-record={name}.{LAN_DOMAIN},{ip}"));
    }
    a
}

/// Starts dnsmasq in the router namespace and waits until it is serving.
/// Returns the daemon and the path of its lease file.
pub(crate) fn start_dnsmasq(
    router: &Netns,
    hosts: &[(String, Ipv4Addr)],
) -> Result<(ProcHandle, PathBuf)> {
    let dir = ScratchDir::new(&format!("{}-dnsmasq", router.name()))?;
    let path = dir.path().to_string_lossy().into_owned();
    let leases = dir.path().join("dnsmasq.leases");
    let args = dnsmasq_args(&path, hosts);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut handle = router.spawn(&argv)?;
    handle.keep_dir(dir);
    handle.wait_for_log("DHCP, IP range", Duration::from_secs(10))?;
    Ok((handle, leases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_lan_pool_and_never_forwards() {
        let a = dnsmasq_args(
            "/tmp/x",
            &[("device".into(), Ipv4Addr::new(192, 168, 2, 50))],
        );
        assert!(
            a.contains(&"--dhcp-range=192.168.2.100,192.168.2.199,255.255.255.0,1h".to_string())
        );
        assert!(a.contains(&"--no-resolv".to_string()));
        assert!(a.contains(&"--host-record=device.lan,192.168.2.50".to_string()));
        assert!(a.contains(&"--dhcp-leasefile=/tmp/x/dnsmasq.leases".to_string()));
    }
}
