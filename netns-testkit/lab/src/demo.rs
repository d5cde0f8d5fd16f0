//! `flatlan-lab demo`: the lab, pods attached with the real `flatlan`
//! binary, and a report proving they behave like any other LAN host.
//!
//! Every check runs even when an earlier one fails, so the report shows
//! the whole picture; the exit code says whether all passed.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns_testkit::avahi::{start_avahi, wait_avahi_ready, MdnsService};
use netns_testkit::flatlan::{self, Pod};
use netns_testkit::probe::{mdns_query, ping, udp_broadcast};
use netns_testkit::ScratchDir;
use netns_testkit::{device_service, LabConfig};
use netns_testkit::{Error, Result};
use netns_testkit::{CLIENT_IP, DEVICE_IP, INTERNET_IP, LAN_BROADCAST};

const PING: Duration = Duration::from_secs(5);
const MDNS: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `flatlan` binary; default: next to `flatlan-lab`.
    pub plugin: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub took: Duration,
}

#[derive(Debug, Default)]
pub struct Report {
    pub header: String,
    pub pods: Vec<String>,
    /// How the L2 load-balancer part is set up (empty if it did not run).
    pub speaker: Vec<String>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "flatlan lab demo\n{}", self.header);
        let _ = writeln!(
            s,
            "\npods, attached by the real flatlan binary over the CNI protocol:"
        );
        for p in &self.pods {
            let _ = writeln!(s, "  {p}");
        }
        if !self.speaker.is_empty() {
            let _ = writeln!(s, "\nL2 load balancer:");
            for l in &self.speaker {
                let _ = writeln!(s, "  {l}");
            }
        }
        let _ = writeln!(s, "\nchecks:");
        for c in &self.checks {
            let mark = if c.ok { "PASS" } else { "FAIL" };
            let _ = writeln!(s, "  {mark}  {:<70} {:>8.1?}", c.name, c.took);
            if !c.detail.is_empty() {
                let _ = writeln!(s, "        {}", c.detail);
            }
        }
        let ok = self.checks.iter().filter(|c| c.ok).count();
        let _ = writeln!(s, "\n{ok}/{} checks passed", self.checks.len());
        s
    }

    pub(crate) fn check(&mut self, name: impl Into<String>, f: impl FnOnce() -> Result<String>) {
        let started = Instant::now();
        let (ok, detail) = match f() {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
            took: started.elapsed(),
        });
    }
}

fn ip(p: &Pod) -> Result<IpAddr> {
    p.ipv4()
        .map(IpAddr::from)
        .ok_or_else(|| Error::InvalidConfig(format!("pod {} has no IPv4 address", p.name)))
}

/// Builds the lab, attaches four pods on two nodes, runs the checks and
/// tears everything down (also on error). Returns the report.
pub fn run(opts: &DemoOptions) -> Result<Report> {
    let bin_dir = flatlan::plugin_dir(opts.plugin.as_deref())?;
    let lab = LabConfig::new().nodes(2).with_avahi_device(true).build()?;
    let state = ScratchDir::new(&format!("{}-demo", lab.name_prefix()))?;
    flatlan::init_state(state.path(), 2)?;

    let mut report = Report {
        header: format!(
            "  LAN 192.168.2.0/24: router .1 (NAT to the internet host {INTERNET_IP}), \
             avahi device {DEVICE_IP}, client {CLIENT_IP},\n  node1 192.168.2.11 and node2 192.168.2.12 \
             with br0 over their uplinks; built in {:.0?}",
            lab.build_time()
        ),
        ..Report::default()
    };

    let mut pods = Vec::new();
    for (node, name) in [
        (1, "homeassistant"),
        (1, "web"),
        (2, "db"),
        (2, "sonos-bridge"),
    ] {
        let net = flatlan::network(state.path(), node, &[], &bin_dir)?;
        let started = Instant::now();
        let pod = flatlan::attach(&lab, &net, node, name)?;
        report.pods.push(format!(
            "{:<14} node{}  {:<16} {}  (ADD {:.1?})",
            name,
            node,
            pod.ipv4().map(|i| i.to_string()).unwrap_or_default(),
            pod.mac().unwrap_or_default(),
            started.elapsed()
        ));
        pods.push(pod);
    }
    let [ha, web, db, _sonos] = pods.as_slice() else {
        return Err(Error::InvalidConfig("expected four pods".into()));
    };

    let dev = device_service();
    report.check(
        format!(
            "mDNS: pod {} discovers \"{}\" on the LAN (avahi)",
            ha.name, dev.name
        ),
        || {
            let own = ha
                .ipv4()
                .ok_or_else(|| Error::InvalidConfig("no IPv4".into()))?;
            let found = mdns_query(&ha.ns, own, &format!("{}.local", dev.stype), MDNS)?;
            found
                .iter()
                .find(|a| a.instance.starts_with(&dev.name) && a.addrs.contains(&DEVICE_IP.into()))
                .map(|a| format!("{} at {:?}:{}", a.instance, a.addrs, a.port.unwrap_or(0)))
                .ok_or_else(|| Error::InvalidConfig(format!("not found; answers: {found:?}")))
        },
    );
    report.check(
        format!(
            "mDNS: the LAN client discovers a service published in pod {}",
            web.name
        ),
        || {
            let svc = MdnsService::new("flatlan pod web", "_flatlan-pod._tcp", 8080);
            let mut avahi = start_avahi(&web.ns, "flatlan-web", std::slice::from_ref(&svc))?;
            wait_avahi_ready(&mut avahi, std::slice::from_ref(&svc), MDNS)?;
            let want = ip(web)?;
            let found = mdns_query(
                &lab.client,
                CLIENT_IP,
                &format!("{}.local", svc.stype),
                MDNS,
            )?;
            found
                .iter()
                .find(|a| a.addrs.contains(&want))
                .map(|a| format!("{} at {want}:{}", a.instance, a.port.unwrap_or(0)))
                .ok_or_else(|| Error::InvalidConfig(format!("not found; answers: {found:?}")))
        },
    );
    report.check(
        format!(
            "broadcast: pod {} -> {LAN_BROADCAST}:9999 reaches the LAN client",
            ha.name
        ),
        || {
            let from = udp_broadcast(&ha.ns, SocketAddrV4::new(LAN_BROADCAST, 9999), &lab.client)?;
            Ok(format!("received from {from}"))
        },
    );
    let pings: [(String, &netns_testkit::Netns, Result<IpAddr>); 4] = [
        (
            format!("pod {} (node1) -> pod {} (node2)", ha.name, db.name),
            &ha.ns,
            ip(db),
        ),
        (
            format!("pod {} -> its own node 192.168.2.11", ha.name),
            &ha.ns,
            lab.nodes
                .first()
                .map(|n| n.ip.into())
                .ok_or_else(|| Error::InvalidConfig("the demo lab has no node".into())),
        ),
        (
            format!(
                "pod {} -> internet host {INTERNET_IP} via the router",
                db.name
            ),
            &db.ns,
            Ok(INTERNET_IP.into()),
        ),
        (
            format!("LAN client -> pod {} directly (no NAT)", ha.name),
            &lab.client,
            ip(ha),
        ),
    ];
    for (name, from, to) in pings {
        report.check(format!("ping: {name}"), || {
            let r = ping(from, to?, 3, PING)?;
            let rtt = r
                .avg_rtt
                .map(|d| format!(", avg rtt {d:.2?}"))
                .unwrap_or_default();
            Ok(format!("{}/{} replies{rtt}", r.received, r.transmitted))
        });
    }
    // Pods are deleted like a runtime would before the lab goes away.
    for p in &pods {
        let net = flatlan::network(state.path(), p.node, &[], &bin_dir)?;
        let node = &lab.node(p.node)?.ns;
        report.check(format!("CNI DEL of pod {}", p.name), || {
            net.del(node, &p.att, Some(&p.result))?;
            Ok(String::new())
        });
    }
    // The L2 load balancer on the same lab, once the pods are gone: the
    // speaker needs nothing from the CNI side, only the nodes' br0.
    crate::demo_speaker::run(
        &lab,
        flatlan::sibling_binary("flatlan-speaker"),
        &mut report,
    );
    Ok(report)
}
