//! kube-proxy in IPVS mode puts every Service address, LoadBalancer IPs
//! included, on the dummy link kube-ipvs0. With the default
//! arp_ignore=0 the node then answers ARP for all of them on the LAN, so
//! every node claims every LB IP and the speaker's single owner is
//! overruled at random. kube-proxy's `strictARP` (arp_ignore=1,
//! arp_announce=2) is what MetalLB asks for too.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::finding::Finding;
use super::sysctls::effective;
use crate::netlink::Link;

/// kube-proxy's metrics port. Loopback only: doctor never reaches out.
const PROXY_MODE: (Ipv4Addr, u16) = (Ipv4Addr::LOCALHOST, 10249);

/// kube-proxy's own answer, if it listens on loopback in this namespace.
fn proxy_mode() -> Option<String> {
    let addr = SocketAddr::from(PROXY_MODE);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET /proxyMode HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.take(4096).read_to_string(&mut body).ok()?;
    let (head, text) = body.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| text.trim().to_string())
        .filter(|t| !t.is_empty() && t.len() < 32)
}

pub fn check(proc: &Path, bridge: &str, links: &[Link]) -> Finding {
    let ipvs_link = links.iter().any(|l| l.name == "kube-ipvs0");
    judge(proc, bridge, proxy_mode().as_deref(), ipvs_link)
}

/// `mode` is kube-proxy's own answer; `ipvs_link` whether kube-ipvs0
/// exists.
fn judge(proc: &Path, bridge: &str, mode: Option<&str>, ipvs_link: bool) -> Finding {
    let evidence = match (mode, ipvs_link) {
        (Some("ipvs"), _) => "127.0.0.1:10249/proxyMode says ipvs".to_string(),
        // kube-proxy's answer wins over the link: switching from IPVS to
        // iptables leaves kube-ipvs0 behind (kube-proxy does not delete
        // it), and its addresses are gone with IPVS's services.
        (Some(m), true) => {
            return Finding::ok(
                "kube_proxy",
                format!("kube-proxy is in {m} mode (127.0.0.1:10249/proxyMode), not IPVS; the kube-ipvs0 link is left over from IPVS mode (ip link del kube-ipvs0 removes it)"),
            )
        }
        (None, true) => "the kube-ipvs0 link exists".to_string(),
        (Some(m), false) => {
            return Finding::ok(
                "kube_proxy",
                format!("kube-proxy is in {m} mode (127.0.0.1:10249/proxyMode), not IPVS"),
            )
        }
        (None, false) => {
            return Finding::ok(
                "kube_proxy",
                "kube-proxy is not in IPVS mode (no kube-ipvs0 link; 127.0.0.1:10249/proxyMode did not answer)",
            )
        }
    };
    let ignore = effective(proc, bridge, "arp_ignore");
    let announce = effective(proc, bridge, "arp_announce");
    if ignore.is_some_and(|v| v >= 1) && announce == Some(2) {
        return Finding::ok(
            "kube_proxy",
            format!("kube-proxy is in IPVS mode ({evidence}) with strict ARP (arp_ignore >= 1, arp_announce = 2)"),
        );
    }
    let show = |v: Option<u8>| v.map_or("unreadable".to_string(), |v| v.to_string());
    Finding::fail(
        "kube_proxy",
        format!(
            "kube-proxy is in IPVS mode ({evidence}) without strictARP: arp_ignore = {}, arp_announce = {} (all/{bridge})",
            show(ignore),
            show(announce)
        ),
        "IPVS puts every LoadBalancer IP on kube-ipvs0, and without strict ARP this node answers ARP for all of them: every node claims every LB IP and the speaker's one owner loses at random",
        "set strictARP in kube-proxy's config: kubectl -n kube-system edit configmap kube-proxy → ipvs: { strictARP: true }, then restart kube-proxy\n\
         on k3s: --kube-proxy-arg=ipvs-strict-arp=true on every server and agent\n\
         now, by hand: sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::finding::Severity;

    fn proc(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (p, v) in files {
            let p = d.path().join("sys/net/ipv4/conf").join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, v).expect("write");
        }
        d
    }

    #[test]
    fn kube_proxys_own_answer_beats_a_leftover_kube_ipvs0() {
        let d = proc(&[
            ("all/arp_ignore", "0\n"),
            ("all/arp_announce", "0\n"),
            ("br0/arp_ignore", "0\n"),
            ("br0/arp_announce", "0\n"),
        ]);
        let f = judge(d.path(), "br0", Some("iptables"), true);
        assert_eq!(f.severity, Severity::Ok, "{}", f.what);
        assert!(f.what.contains("left over"), "{}", f.what);
        assert_eq!(
            judge(d.path(), "br0", Some("nftables"), false).severity,
            Severity::Ok
        );
        assert_eq!(
            judge(d.path(), "br0", Some("ipvs"), false).severity,
            Severity::Fail
        );
        // Without kube-proxy's answer the link is the evidence.
        assert_eq!(judge(d.path(), "br0", None, true).severity, Severity::Fail);
        assert_eq!(judge(d.path(), "br0", None, false).severity, Severity::Ok);
    }
}
