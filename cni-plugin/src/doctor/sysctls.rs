//! The kernel switches a flat pod network depends on: br_netfilter and its
//! bridge-nf-call sysctls, forwarding, and rp_filter.
//!
//! Every value is read under `--proc` (default /proc). /proc/sys/net shows
//! the network namespace of the process that reads it, so doctor judges
//! the namespace it runs in: the node's, or a lab namespace under
//! `ip netns exec`. A seeded tree stands in for module state a test may
//! not change on the host (no unloading br_netfilter there).

use std::path::Path;

use super::finding::Finding;

/// A sysctl's value, by its dotted name, read under `proc`. Interface
/// names may hold dots (VLANs), so `parts` are the path components.
pub fn read(proc: &Path, parts: &[&str]) -> Option<String> {
    let mut p = proc.join("sys");
    for part in parts {
        p.push(part);
    }
    std::fs::read_to_string(p)
        .ok()
        .map(|v| v.trim().to_string())
}

/// The value the kernel applies for an IPv4 conf sysctl on `dev`: the
/// larger of `all` and `dev` (rp_filter, arp_ignore and arp_announce all
/// follow this rule), or whichever of the two is readable.
pub fn effective(proc: &Path, dev: &str, name: &str) -> Option<u8> {
    let v =
        |d: &str| read(proc, &["net", "ipv4", "conf", d, name]).and_then(|s| s.parse::<u8>().ok());
    match (v("all"), v(dev)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

pub fn key(parts: &[&str]) -> String {
    parts.join(".")
}

/// `sysctl -w` now, and the line for /etc/sysctl.d so a reboot keeps it.
pub fn fix_line(parts: &[&str], value: &str) -> String {
    let k = key(parts);
    format!(
        "sysctl -w {k}={value}\n\
         persist: echo '{k} = {value}' >> /etc/sysctl.d/90-flatlan.conf (deploy/sysctl/90-flatlan.conf ships it)"
    )
}

const NF_WHY: &str = "kube-proxy DNATs ClusterIP traffic in the node; a reply from a pod to a LAN host or another pod is bridged, not routed, and without br_netfilter it skips conntrack, is never un-NATed, and the client resets the connection";

/// `ipv6`: the network has an IPv6 subnet (or its conflist is unreadable);
/// without one, bridge-nf-call-ip6tables off costs nothing and is a WARN.
pub fn br_netfilter(proc: &Path, ipv6: bool) -> Vec<Finding> {
    if !proc.join("sys/net/bridge").is_dir() {
        return vec![Finding::fail(
            "br_netfilter",
            format!(
                "the br_netfilter module is not loaded ({} does not exist)",
                proc.join("sys/net/bridge").display()
            ),
            NF_WHY,
            "modprobe br_netfilter\n\
             persist: echo br_netfilter > /etc/modules-load.d/flatlan.conf",
        )];
    }
    let mut out = Vec::new();
    for name in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let parts = ["net", "bridge", name];
        match read(proc, &parts) {
            Some(v) if v == "1" => {
                out.push(Finding::ok("br_netfilter", format!("{} = 1", key(&parts))))
            }
            v if name.contains("ip6") && !ipv6 => out.push(Finding::warn(
                "br_netfilter",
                format!(
                    "{} is {} (the network has no IPv6 subnet, so only IPv6 traffic you add later is affected)",
                    key(&parts),
                    v.as_deref().unwrap_or("unreadable")
                ),
                NF_WHY,
                fix_line(&parts, "1"),
            )),
            v => out.push(Finding::fail(
                "br_netfilter",
                format!(
                    "{} is {} (must be 1)",
                    key(&parts),
                    v.as_deref().unwrap_or("unreadable")
                ),
                NF_WHY,
                fix_line(&parts, "1"),
            )),
        }
    }
    out
}

/// IPv4 forwarding always (hostPort and Service traffic is routed through
/// the node); IPv6 forwarding when the LAN has an IPv6 subnet.
pub fn forwarding(proc: &Path, ipv6: bool) -> Vec<Finding> {
    let mut keys = vec![vec!["net", "ipv4", "ip_forward"]];
    if ipv6 {
        keys.push(vec!["net", "ipv6", "conf", "all", "forwarding"]);
    }
    keys.iter()
        .map(|parts| match read(proc, parts) {
            Some(v) if v == "1" => Finding::ok("ip_forward", format!("{} = 1", key(parts))),
            v => Finding::fail(
                "ip_forward",
                format!(
                    "{} is {} (must be 1)",
                    key(parts),
                    v.as_deref().unwrap_or("unreadable")
                ),
                "hostPort and pod traffic to ClusterIPs and other networks is routed by the node; with forwarding off it is dropped",
                fix_line(parts, "1"),
            ),
        })
        .collect()
}

/// The kernel uses max(all, interface) for rp_filter. Strict (1) drops a
/// packet whose reply would leave by another interface: pod traffic
/// DNATed by kube-proxy or arriving for a hostPort often is asymmetric on
/// a bridged LAN (the reply goes straight out the bridge).
pub fn rp_filter(proc: &Path, bridge: &str) -> Finding {
    let all = ["net", "ipv4", "conf", "all", "rp_filter"];
    let br = ["net", "ipv4", "conf", bridge, "rp_filter"];
    let num = |p: &[&str]| read(proc, p).and_then(|v| v.parse::<u8>().ok());
    let (a, b) = (num(&all), num(&br));
    // all = 2 with br0 = 1 is loose: only a strict effective value warns.
    let strict: Vec<&[&str]> = [(&all[..], a), (&br[..], b)]
        .into_iter()
        .filter(|(_, v)| *v == Some(1) && effective(proc, bridge, "rp_filter") == Some(1))
        .map(|(p, _)| p)
        .collect();
    if strict.is_empty() {
        let show = |v: Option<u8>| v.map_or("unreadable".to_string(), |v| v.to_string());
        return Finding::ok(
            "rp_filter",
            format!(
                "not strict: {} = {}, {} = {}",
                key(&all),
                show(a),
                key(&br),
                show(b)
            ),
        );
    }
    let names: Vec<String> = strict.iter().map(|p| key(p)).collect();
    let fixes: Vec<String> = strict.iter().map(|p| fix_line(p, "2")).collect();
    Finding::warn(
        "rp_filter",
        format!("strict reverse-path filtering: {} = 1", names.join(" and ")),
        "the kernel uses the larger of all and the interface's value; strict (1) drops packets whose reply would leave by another interface, which asymmetric pod traffic (DNATed Services, hostPort, pods with a second network) does; loose (2) keeps the spoofing check without the drops",
        fixes.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::finding::Severity;

    fn seed(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (p, v) in files {
            let p = d.path().join("sys").join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, v).expect("write");
        }
        d
    }

    #[test]
    fn module_absent_is_one_failure_with_modprobe() {
        let d = seed(&[("net/ipv4/ip_forward", "1\n")]);
        let f = br_netfilter(d.path(), true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Fail);
        assert!(f[0].fix.starts_with("modprobe br_netfilter"));
        assert_eq!(forwarding(d.path(), false)[0].severity, Severity::Ok);
        let f = forwarding(d.path(), true);
        assert_eq!(f[1].severity, Severity::Fail);
    }

    #[test]
    fn rp_filter_strict_on_either_side_warns() {
        let d = seed(&[
            ("net/ipv4/conf/all/rp_filter", "0\n"),
            ("net/ipv4/conf/br0/rp_filter", "1\n"),
        ]);
        let f = rp_filter(d.path(), "br0");
        assert_eq!(f.severity, Severity::Warn);
        assert!(
            f.fix.contains("sysctl -w net.ipv4.conf.br0.rp_filter=2"),
            "{}",
            f.fix
        );
        assert!(!f.fix.contains("conf.all"), "{}", f.fix);
        let d = seed(&[
            ("net/ipv4/conf/all/rp_filter", "2\n"),
            ("net/ipv4/conf/br0/rp_filter", "0\n"),
        ]);
        assert_eq!(rp_filter(d.path(), "br0").severity, Severity::Ok);
    }

    #[test]
    fn rp_filter_is_judged_by_the_larger_of_all_and_the_bridge() {
        let d = seed(&[
            ("net/ipv4/conf/all/rp_filter", "2\n"),
            ("net/ipv4/conf/br0/rp_filter", "1\n"),
        ]);
        let f = rp_filter(d.path(), "br0");
        assert_eq!(f.severity, Severity::Ok, "{}", f.what);
        assert_eq!(effective(d.path(), "br0", "rp_filter"), Some(2));
        let d = seed(&[
            ("net/ipv4/conf/all/rp_filter", "1\n"),
            ("net/ipv4/conf/br0/rp_filter", "2\n"),
        ]);
        assert_eq!(rp_filter(d.path(), "br0").severity, Severity::Ok);
        let d = seed(&[("net/ipv4/conf/all/rp_filter", "1\n")]);
        assert_eq!(rp_filter(d.path(), "br0").severity, Severity::Warn);
    }

    #[test]
    fn ip6tables_off_fails_only_with_an_ipv6_subnet() {
        let d = seed(&[
            ("net/bridge/bridge-nf-call-iptables", "1\n"),
            ("net/bridge/bridge-nf-call-ip6tables", "0\n"),
        ]);
        let v4 = br_netfilter(d.path(), false);
        assert_eq!(v4[0].severity, Severity::Ok);
        assert_eq!(v4[1].severity, Severity::Warn, "{}", v4[1].what);
        assert!(v4[1].fix.contains("bridge-nf-call-ip6tables=1"));
        let v6 = br_netfilter(d.path(), true);
        assert_eq!(v6[1].severity, Severity::Fail);
        // iptables off is a FAIL either way.
        let d = seed(&[
            ("net/bridge/bridge-nf-call-iptables", "0\n"),
            ("net/bridge/bridge-nf-call-ip6tables", "1\n"),
        ]);
        assert_eq!(br_netfilter(d.path(), false)[0].severity, Severity::Fail);
    }
}
