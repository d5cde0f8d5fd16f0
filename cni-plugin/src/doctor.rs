//! `flatlan doctor`: checks a node for what breaks a flat pod network and
//! L2 load balancing (issue 14), and says for each finding what is wrong,
//! why it matters, and the exact fix. Read-only: it changes nothing.
//!
//! Files are read under `--root` (host paths, as `flatlan install` does),
//! /proc under `--proc`; links, sysctls and the firewall are those of the
//! network namespace doctor runs in, so a test can run it inside a lab
//! namespace and a user inside the node's.

mod bridge;
mod conf_dir;
mod finding;
mod firewall;
mod inputs;
mod kube_proxy;
mod overlap;
mod sysctls;

use std::path::PathBuf;

use flatlan_ipam::IpRange;
use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::flags::Flags;
use finding::{Finding, Severity};
use overlap::{Kind, Span};

pub const USAGE: &str =
    "usage: flatlan doctor [--json] [--root DIR] [--proc DIR] [--conf-dir DIR] [--conflist FILE]
                      [--speaker-config FILE] [--lb-pool RANGE]... [--lb-pools FILE]
                      [--dhcp-pool RANGE] [--uplink IF]

Checks this node: br_netfilter and its sysctls, ip_forward, the bridge and
its uplink, overlaps between the pod range, the node's addresses, the
gateway, the LB pools and the router's DHCP pool, kube-proxy IPVS without
strictARP, rp_filter, another CNI config that wins in the conf dir, and the
heartbeat port in the host firewall. Each finding says what, why, and the
fix. Exit code: 0 without FAIL findings, 1 with, 2 for a bad command line.

  --json                 the findings as one JSON object, for scripts
  --root DIR             where the host's / is (default /); the conf dir, the
                         node range file and the speaker config are read under it
  --proc DIR             where /proc is (default /proc; its sys/net shows the
                         network namespace doctor runs in)
  --conf-dir DIR         the CNI conf dir (default: k3s's if /var/lib/rancher/k3s
                         exists, else /etc/cni/net.d), a host path
  --conflist FILE        flatlan's conflist (default: the one in the conf dir)
  --speaker-config FILE  the speaker's YAML config: heartbeat port (listen) and
                         static vips (default /etc/flatlan-speaker/speaker.yaml, the
                         DaemonSet's, if it exists)
  --lb-pool RANGE        a LoadBalancer pool (CIDR or A-B); repeatable
  --lb-pools FILE        IPAddressPools as YAML (kubectl get ipaddresspools -o yaml)
  --dhcp-pool RANGE      the router's DHCP pool (A-B), checked against the rest
  --uplink IF            the NIC that must be in the bridge (default: any port)

FILE arguments are read as given; only the defaults are looked up under --root.";

#[derive(Debug, Default)]
pub struct Options {
    pub json: bool,
    pub root: PathBuf,
    pub proc_dir: PathBuf,
    pub conf_dir: Option<PathBuf>,
    pub conflist: Option<PathBuf>,
    pub speaker_config: Option<PathBuf>,
    pub lb_pools: Vec<IpRange>,
    pub lb_pools_file: Option<PathBuf>,
    pub dhcp_pool: Option<IpRange>,
    pub uplink: Option<String>,
}

fn range(flag: &str, v: &str) -> Result<IpRange> {
    v.parse().map_err(|e| {
        Error::Usage(format!(
            "{flag} {v:?}: {e} (a CIDR like 192.168.2.240/28 or a range like 192.168.2.100-192.168.2.199)"
        ))
    })
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        root: "/".into(),
        proc_dir: "/proc".into(),
        ..Options::default()
    };
    let mut f = Flags::new(args, USAGE);
    while let Some(a) = f.next()? {
        match a {
            "--json" => o.json = true,
            "--root" => o.root = f.value()?.into(),
            "--proc" => o.proc_dir = f.value()?.into(),
            "--conf-dir" => {
                o.conf_dir = Some(crate::install::layout::absolute(
                    "--conf-dir",
                    f.value()?.into(),
                )?)
            }
            "--conflist" => o.conflist = Some(f.value()?.into()),
            "--speaker-config" => o.speaker_config = Some(f.value()?.into()),
            "--lb-pool" => o.lb_pools.push(range(a, &f.value()?)?),
            "--lb-pools" => o.lb_pools_file = Some(f.value()?.into()),
            "--dhcp-pool" => o.dhcp_pool = Some(range(a, &f.value()?)?),
            "--uplink" => o.uplink = Some(f.value()?),
            _ => return Err(f.unknown()),
        }
    }
    Ok(o)
}

/// `flatlan doctor ...` from the CLI: prints the report, returns the exit
/// code (0 no FAIL, 1 FAIL, 2 bad usage).
pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return 0;
    }
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("flatlan: {e}");
            return 2;
        }
    };
    let (findings, notes) = run(&o);
    if o.json {
        println!("{}", finding::json(&findings, &notes));
    } else {
        print!("{}", finding::text(&findings, &notes));
    }
    i32::from(finding::worst(&findings) == Severity::Fail)
}

/// Every check, in the order a user would fix them.
pub fn run(o: &Options) -> (Vec<Finding>, Vec<String>) {
    let mut f = Vec::new();
    let mut notes = Vec::new();
    let (conf_dir, why) = inputs::conf_dir(&o.root, o.conf_dir.clone());
    notes.push(format!("CNI conf dir {} ({why})", conf_dir.display()));
    let cl = inputs::conflist(&o.root, &conf_dir, o.conflist.as_deref(), &mut f);
    let conf = cl.as_ref().and_then(|c| c.conf.clone());
    if let Some(c) = &cl {
        if o.conflist.is_none() {
            f.push(conf_dir::check(
                &conf_dir,
                &crate::install::layout::under(&o.root, &conf_dir),
                &c.name,
            ));
        }
    }
    let bridge_name = conf.as_ref().map_or("br0", |c| c.bridge.as_str());
    let ipv6 = conf
        .as_ref()
        .is_some_and(|c| c.subnets().iter().any(|s| s.subnet.addr().is_ipv6()));

    // An unreadable conflist may well have IPv6: judge bridge-nf-call-ip6tables as if.
    f.extend(sysctls::br_netfilter(&o.proc_dir, ipv6 || conf.is_none()));
    f.extend(sysctls::forwarding(&o.proc_dir, ipv6));
    let seen = bridge::check(bridge_name, o.uplink.as_deref());
    f.extend(seen.findings);
    f.push(sysctls::rp_filter(&o.proc_dir, bridge_name));
    f.push(kube_proxy::check(&o.proc_dir, bridge_name, &seen.links));

    let speaker = inputs::speaker(&o.root, o.speaker_config.as_deref(), &mut f);
    let mut spans = Vec::new();
    let mut subnets: Vec<IpNet> = Vec::new();
    if let Some(c) = &conf {
        spans.extend(inputs::pod_ranges(&o.root, c, &mut f));
        for s in c.subnets() {
            subnets.push(s.subnet);
            if let Some(gw) = s.gateway {
                spans.push(Span::new(
                    Kind::Gateway,
                    IpRange::single(gw),
                    "conflist ipam.gateway",
                ));
            }
        }
    }
    spans.extend(
        seen.node_ips
            .iter()
            .filter(|(n, _)| subnets.iter().any(|s| s.contains(&n.addr())))
            .map(|(n, link)| Span::new(Kind::NodeIp, IpRange::single(n.addr()), link.as_str())),
    );
    spans.extend(speaker.vips);
    spans.extend(
        o.lb_pools
            .iter()
            .map(|r| Span::new(Kind::LbPool, *r, "--lb-pool")),
    );
    if let Some(p) = &o.lb_pools_file {
        match inputs::pools_file(p) {
            Ok(s) => spans.extend(s),
            Err(e) => f.push(Finding::fail(
                "lb_pools",
                e,
                "the LB pools are checked against the pod range and the DHCP pool",
                "pass the output of kubectl get ipaddresspools.flatlan.dev -o yaml",
            )),
        }
    }
    if let Some(d) = o.dhcp_pool {
        spans.push(Span::new(Kind::DhcpPool, d, "--dhcp-pool"));
    } else {
        notes.push("the router's DHCP pool was not given (--dhcp-pool A-B), so overlaps with it were not checked".into());
    }
    if !spans.iter().any(|s| s.kind == Kind::LbPool) {
        notes.push("no LB pool known (--lb-pool, --lb-pools or the speaker config's vips), so LB overlaps were not checked".into());
    }
    f.extend(overlap::outside_subnet(&subnets, &spans));
    if !spans.is_empty() {
        f.extend(overlap::overlaps(&spans));
    }
    let mut fw = firewall::check(speaker.port, &mut notes);
    fw.what += &format!(" [port from {}]", speaker.port_source);
    f.push(fw);
    (f, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::args;

    #[test]
    fn both_flag_forms_parse_alike() {
        let spaced = parse(&args(
            "--json --root /r --lb-pool 192.168.2.240/28 --lb-pool 192.168.2.100-192.168.2.110 --dhcp-pool 192.168.2.50-192.168.2.99 --uplink eth0",
        ))
        .expect("parses");
        let joined = parse(&args(
            "--json --root=/r --lb-pool=192.168.2.240/28 --lb-pool=192.168.2.100-192.168.2.110 --dhcp-pool=192.168.2.50-192.168.2.99 --uplink=eth0",
        ))
        .expect("parses");
        assert_eq!(format!("{joined:?}"), format!("{spaced:?}"));
        assert_eq!(spaced.lb_pools.len(), 2);
        assert_eq!(spaced.root, PathBuf::from("/r"));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            "--json=1",
            "--lb-pool",
            "--lb-pool=10.0.0.0/33",
            "--conf-dir=relative",
            "--bogus",
        ] {
            assert!(matches!(parse(&args(bad)), Err(Error::Usage(_))), "{bad}");
        }
    }
}
