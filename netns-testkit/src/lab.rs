//! [`Lab`]: a simulated home LAN with Kubernetes nodes on it.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::addresses::{
    node_ip, node_ip6, CLIENT_IP, CLIENT_IP6, DEVICE_IP, DEVICE_IP6, GATEWAY, GATEWAY6,
    INTERNET_IP, LAN6_PREFIX_LEN, LAN6_SUBNET, LAN_PREFIX_LEN, LAN_SUBNET, MAX_NODES,
    ROUTER_WAN_IP,
};
use crate::avahi::{start_avahi, MdnsService};
use crate::command::{self, DEFAULT_TIMEOUT};
use crate::dnsmasq::start_dnsmasq;
use crate::error::{Error, Result};
use crate::names::{new_prefix, require_root, validate_label};
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::topology::{self, NsNames, NODE_BRIDGE, NODE_UPLINK};

/// The service the avahi device publishes with
/// [`LabConfig::with_avahi_device`].
pub fn device_service() -> MdnsService {
    MdnsService {
        name: "Living Room Speaker".to_owned(),
        stype: "_http._tcp".to_owned(),
        port: 8080,
        txt: vec!["model=flatlan-lab".to_owned()],
    }
}

/// What to build. Defaults: 2 nodes, no avahi, no dnsmasq.
#[derive(Debug, Clone)]
pub struct LabConfig {
    nodes: usize,
    avahi_device: bool,
    dnsmasq: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            nodes: 2,
            avahi_device: false,
            dnsmasq: false,
        }
    }
}

impl LabConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of Kubernetes nodes (0 to [`MAX_NODES`]).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Run avahi-daemon on the device, publishing [`device_service`].
    pub fn with_avahi_device(mut self, on: bool) -> Self {
        self.avahi_device = on;
        self
    }

    /// Run dnsmasq on the router: DHCP .100-.199 and DNS for `*.lan`.
    pub fn with_dnsmasq(mut self, on: bool) -> Self {
        self.dnsmasq = on;
        self
    }

    /// Builds the lab.
    pub fn build(self) -> Result<Lab> {
        Lab::new(self)
    }
}

/// A Kubernetes node: `eth0` (its "physical" NIC, cabled to the switch) is
/// a port of `br0`, and the node IP lives on `br0`, as netplan sets it up.
#[derive(Debug, Clone)]
pub struct Node {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    /// The node's IPv6 address on `br0` (`fd00:2::(10+N)`).
    pub ip6: Ipv6Addr,
    /// The bridge pods attach to (`br0`).
    pub bridge: &'static str,
    /// The uplink port of the bridge (`eth0`).
    pub uplink: &'static str,
    /// 1-based, as in `node1`.
    pub index: usize,
}

/// A home LAN in namespaces. Everything is torn down when it drops,
/// including on panic: daemons are killed first, then the namespaces go.
///
/// ```text
///   internet 203.0.113.10 ── wan0 router eth0 192.168.2.1 (NAT, dnsmasq)
///                                         │     fd00:2::1 (no RAs)
///   switch sw0 ──┬── device 192.168.2.50 fd00:2::50 (avahi)
///                ├── client 192.168.2.60 fd00:2::60
///                └── nodeN eth0 ⊂ br0 192.168.2.(10+N) fd00:2::(10+N)
/// ```
///
/// IPv6 stays on the LAN: the router has no IPv6 uplink, as with a
/// provider that gives none, and the ULA prefix is static (see
/// [`crate::topology`] on why there are no router advertisements).
#[derive(Debug)]
pub struct Lab {
    pub switch: Netns,
    pub router: Netns,
    pub internet: Netns,
    pub device: Netns,
    pub client: Netns,
    pub nodes: Vec<Node>,
    prefix: String,
    device_hostname: Option<String>,
    daemons: Vec<(&'static str, ProcHandle)>,
    dnsmasq_leases: Option<PathBuf>,
    pods: Mutex<Vec<Netns>>,
    build_time: Duration,
}

impl Lab {
    /// Builds a lab; see [`LabConfig`].
    pub fn new(config: LabConfig) -> Result<Lab> {
        require_root()?;
        if config.nodes > MAX_NODES {
            return Err(Error::InvalidConfig(format!(
                "{} nodes requested, at most {MAX_NODES} fit below the device address",
                config.nodes
            )));
        }
        let started = Instant::now();
        let prefix = new_prefix();
        let names = NsNames::new(&prefix, config.nodes);
        // Handles first: from here on, an error return drops them and so
        // removes every namespace created so far.
        let mut all = Netns::create_many(&names.all())?.into_iter();
        let mut next = || {
            all.next()
                .ok_or_else(|| Error::InvalidConfig("namespace list too short".to_owned()))
        };
        let (switch, router, internet, device, client) =
            (next()?, next()?, next()?, next()?, next()?);
        let mut nodes = Vec::with_capacity(config.nodes);
        for index in 1..=config.nodes {
            let (ip, ip6) = node_ip(index)
                .zip(node_ip6(index))
                .ok_or_else(|| Error::InvalidConfig(format!("no address for node {index}")))?;
            nodes.push(Node {
                ns: next()?,
                ip,
                ip6,
                bridge: NODE_BRIDGE,
                uplink: NODE_UPLINK,
                index,
            });
        }

        switch.ip_batch(&topology::switch_script(&names))?;
        configure_in_parallel(&router, &internet, &device, &client, &nodes)?;

        let mut daemons = Vec::new();
        let mut dnsmasq_leases = None;
        if config.dnsmasq {
            let mut hosts = vec![
                ("router".to_owned(), GATEWAY),
                ("device".to_owned(), DEVICE_IP),
                ("client".to_owned(), CLIENT_IP),
            ];
            hosts.extend(nodes.iter().map(|n| (format!("node{}", n.index), n.ip)));
            let (h, leases) = start_dnsmasq(&router, &hosts)?;
            dnsmasq_leases = Some(leases);
            daemons.push(("dnsmasq", h));
        }
        let mut device_hostname = None;
        if config.avahi_device {
            let hostname = format!("{prefix}-device");
            daemons.push((
                "avahi",
                start_avahi(&device, &hostname, &[device_service()])?,
            ));
            device_hostname = Some(hostname);
        }

        let build_time = started.elapsed();
        tracing::info!(%prefix, nodes = config.nodes, ?build_time, "lab ready");
        Ok(Lab {
            switch,
            router,
            internet,
            device,
            client,
            nodes,
            prefix,
            device_hostname,
            daemons,
            dnsmasq_leases,
            pods: Mutex::new(Vec::new()),
            build_time,
        })
    }

    /// The `fl<pid>l<n>` prefix of every namespace in this lab.
    pub fn name_prefix(&self) -> &str {
        &self.prefix
    }

    /// 192.168.2.0/24.
    pub fn subnet(&self) -> Ipv4Net {
        LAN_SUBNET
    }

    /// The router, 192.168.2.1.
    pub fn gateway(&self) -> Ipv4Addr {
        GATEWAY
    }

    /// The LAN prefix length, 24.
    pub fn prefix(&self) -> u8 {
        LAN_PREFIX_LEN
    }

    /// The LAN's IPv6 prefix, fd00:2::/64.
    pub fn subnet6(&self) -> Ipv6Net {
        LAN6_SUBNET
    }

    /// The router's IPv6 address, fd00:2::1.
    pub fn gateway6(&self) -> Ipv6Addr {
        GATEWAY6
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> Result<&Node> {
        index
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or_else(|| Error::InvalidConfig(format!("lab has no node {index}")))
    }

    /// The avahi device's host name (without `.local`), if avahi runs.
    pub fn device_hostname(&self) -> Option<&str> {
        self.device_hostname.as_deref()
    }

    /// dnsmasq's lease file, if dnsmasq runs.
    pub fn dnsmasq_lease_file(&self) -> Option<PathBuf> {
        self.dnsmasq_leases.clone()
    }

    /// The daemons the lab runs ("dnsmasq", "avahi") and their PIDs.
    pub fn daemon_pids(&self) -> Vec<(&'static str, u32)> {
        self.daemons
            .iter()
            .map(|(name, h)| (*name, h.pid()))
            .collect()
    }

    /// How long [`Lab::new`] took.
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// An empty namespace (loopback up) for a pod on node `node_index`,
    /// named `<prefix>-pod<node>-<name>`. The lab keeps a handle, so the
    /// namespace lives at least as long as the lab; it is removed when both
    /// the lab and the returned handle are gone.
    pub fn add_pod_netns(&self, node_index: usize, name: &str) -> Result<Netns> {
        self.node(node_index)?;
        validate_label(name)?;
        let full = format!("{}-pod{node_index}-{name}", self.prefix);
        let ns = Netns::create_many(std::slice::from_ref(&full))?
            .pop()
            .ok_or_else(|| {
                Error::InvalidConfig("namespace creation returned nothing".to_owned())
            })?;
        ns.ip_batch("link set lo up\n")?;
        self.pods
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ns.clone());
        Ok(ns)
    }

    /// Every namespace with its role, for printing.
    pub fn namespaces(&self) -> Vec<(String, Netns)> {
        let mut v = vec![
            ("switch".to_owned(), self.switch.clone()),
            ("router".to_owned(), self.router.clone()),
            ("internet".to_owned(), self.internet.clone()),
            ("device".to_owned(), self.device.clone()),
            ("client".to_owned(), self.client.clone()),
        ];
        v.extend(
            self.nodes
                .iter()
                .map(|n| (format!("node{}", n.index), n.ns.clone())),
        );
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        v.extend(pods.iter().map(|p| ("pod".to_owned(), p.clone())));
        v
    }

    /// A human-readable map of the lab (what `flatlan-lab up` prints).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "lab {} (LAN {LAN_SUBNET} + {LAN6_SUBNET}, built in {:?})",
            self.prefix, self.build_time
        );
        let row = |s: &mut String, role: &str, ns: &Netns, addr: &str| {
            let _ = writeln!(s, "  {role:<9} {:<28} {addr}", ns.name());
        };
        row(&mut s, "switch", &self.switch, "sw0 (bridge)");
        row(
            &mut s,
            "router",
            &self.router,
            &format!(
                "eth0 {GATEWAY}/{LAN_PREFIX_LEN} {GATEWAY6}/{LAN6_PREFIX_LEN}, wan0 {ROUTER_WAN_IP}"
            ),
        );
        row(
            &mut s,
            "internet",
            &self.internet,
            &format!("eth0 {INTERNET_IP}"),
        );
        let device = match &self.device_hostname {
            Some(h) => format!("eth0 {DEVICE_IP} {DEVICE_IP6} (avahi {h}.local)"),
            None => format!("eth0 {DEVICE_IP} {DEVICE_IP6}"),
        };
        row(&mut s, "device", &self.device, &device);
        row(
            &mut s,
            "client",
            &self.client,
            &format!("eth0 {CLIENT_IP} {CLIENT_IP6}"),
        );
        for n in &self.nodes {
            row(
                &mut s,
                &format!("node{}", n.index),
                &n.ns,
                &format!("{} {} {} ({} enslaved)", n.bridge, n.ip, n.ip6, n.uplink),
            );
        }
        if self.dnsmasq_leases.is_some() {
            let _ = writeln!(s, "  dnsmasq on the router: DHCP and DNS for *.lan");
        }
        let _ = writeln!(s, "  enter one with: ip netns exec <name> bash");
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Daemons first: a namespace with a process in it outlives its name.
        self.daemons.clear();
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).clear();
        tracing::debug!(prefix = %self.prefix, "lab torn down");
        // The namespace handles drop after this, deleting the namespaces.
    }
}

/// Configures every namespace but the switch at once: each is one `ip`
/// process, and the veths they configure already exist.
fn configure_in_parallel(
    router: &Netns,
    internet: &Netns,
    device: &Netns,
    client: &Netns,
    nodes: &[Node],
) -> Result<()> {
    thread::scope(|s| {
        let mut jobs = vec![
            s.spawn(|| configure_router(router)),
            s.spawn(|| internet.ip_batch(&topology::internet_script())),
            s.spawn(|| device.ip_batch(&topology::host_script(DEVICE_IP, DEVICE_IP6))),
            s.spawn(|| client.ip_batch(&topology::host_script(CLIENT_IP, CLIENT_IP6))),
        ];
        for n in nodes {
            jobs.push(s.spawn(move || {
                n.ns.ip_batch(&topology::node_script(n.ip, n.ip6))?;
                set_ip_forward(&n.ns)
            }));
        }
        // Join all before reporting, so no job is left running.
        let results: Vec<Result<()>> = jobs
            .into_iter()
            .map(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        results.into_iter().collect::<Result<()>>()
    })
}

fn configure_router(router: &Netns) -> Result<()> {
    router.ip_batch(&topology::router_script())?;
    set_ip_forward(router)?;
    let mut nft = std::process::Command::new("ip");
    nft.args(["netns", "exec", router.name(), "nft", "-f", "-"]);
    command::run_ok(
        nft,
        Some(topology::router_nft().as_bytes()),
        DEFAULT_TIMEOUT,
    )?;
    Ok(())
}

/// Writes the sysctl from a thread inside the namespace: /proc/sys/net
/// resolves against the calling thread's network namespace, so this needs
/// no `sysctl` process, and the host's value is never touched.
fn set_ip_forward(ns: &Netns) -> Result<()> {
    ns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
        .map_err(|e| Error::io(format!("set ip_forward in {}", ns.name()), e))
}
