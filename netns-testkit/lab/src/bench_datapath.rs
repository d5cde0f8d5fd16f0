//! The datapath half of `flatlan-lab bench`: iperf3 TCP throughput over
//! flatlan, over a bare veth pair and over a VXLAN overlay, all between
//! namespaces the bench created.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::Value;

use netns_testkit::Lab;
use netns_testkit::Netns;
use netns_testkit::{Error, Result};

static NEXT_PORT: AtomicU16 = AtomicU16::new(5201);

/// How long the iperf3 server may take to start listening.
const SERVER_READY: Duration = Duration::from_secs(10);

/// One iperf3 TCP run (one stream, `seconds` long) from `client` to an
/// `iperf3 -s -1` in `server` bound to `server_ip`. Returns Gbit/s as
/// the receiver counted it.
pub(crate) fn iperf(
    server: &Netns,
    server_ip: Ipv4Addr,
    client: &Netns,
    seconds: u32,
) -> Result<f64> {
    let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed).to_string();
    let ip = server_ip.to_string();
    let secs = seconds.max(1).to_string();
    // -1: one test, then exit; --forceflush so the "listening" line
    // reaches the log file at once.
    let mut srv = server.spawn(&["iperf3", "-s", "-1", "--forceflush", "-B", &ip, "-p", &port])?;
    srv.wait_for_log("Server listening", SERVER_READY)?;
    let out = client.exec_timeout(
        &["iperf3", "-c", &ip, "-p", &port, "-t", &secs, "-J"],
        Duration::from_secs(u64::from(seconds) + 20),
    )?;
    // The server exits after its one test; the handle reaps (or kills) it.
    srv.wait_timeout(Duration::from_secs(2));
    drop(srv);
    let what = || format!("iperf3 {} -> {ip}", client.name());
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|source| Error::Json {
        what: what(),
        source,
    })?;
    if let Some(err) = v["error"].as_str() {
        return Err(Error::Probe {
            what: what(),
            detail: err.to_owned(),
        });
    }
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .filter(|b| *b > 0.0)
        .map(|b| b / 1e9)
        .ok_or_else(|| Error::Probe {
            what: what(),
            detail: format!(
                "no receiver throughput in the result (exit {:?})",
                out.status.code()
            ),
        })
}

/// Two fresh namespaces joined by nothing but a veth pair: the ceiling
/// any veth-based CNI can reach on this machine.
pub(crate) struct VethPair {
    pub a: Netns,
    pub b: Netns,
}

pub(crate) const VETH_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(crate) const VETH_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

impl VethPair {
    pub(crate) fn new() -> Result<Self> {
        let a = Netns::new("bench-veth-a")?;
        let b = Netns::new("bench-veth-b")?;
        a.ip_batch(&format!(
            "link add v0 type veth peer name v1 netns {}\n\
             addr add {VETH_A}/24 dev v0\n\
             link set v0 up\n",
            b.name()
        ))?;
        b.ip_batch(&format!("addr add {VETH_B}/24 dev v1\nlink set v1 up\n"))?;
        Ok(VethPair { a, b })
    }
}

/// A VXLAN overlay between node1 and node2, the way overlay CNIs build
/// one: on each node a bridge holding a VXLAN device (underlay: the
/// node's br0, i.e. the LAN) and the host end of a pod-like namespace's
/// veth. All of it lives in lab namespaces and goes with them.
pub(crate) struct Overlay {
    pub pod1: Netns,
    pub pod2: Netns,
}

pub(crate) const OVERLAY_POD1: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
pub(crate) const OVERLAY_POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 2);
/// 1500 minus the 50 bytes of VXLAN over IPv4 encapsulation.
const OVERLAY_MTU: u32 = 1450;

impl Overlay {
    pub(crate) fn new(lab: &Lab) -> Result<Self> {
        let (n1, n2) = (lab.node(1)?, lab.node(2)?);
        let pod1 = lab.add_pod_netns(1, "bench-ovl")?;
        let pod2 = lab.add_pod_netns(2, "bench-ovl")?;
        for (node, peer, pod, ip) in [
            (n1, n2.ip, &pod1, OVERLAY_POD1),
            (n2, n1.ip, &pod2, OVERLAY_POD2),
        ] {
            node.ns.ip_batch(&format!(
                "link add ovbr0 type bridge stp_state 0 forward_delay 0\n\
                 link set ovbr0 up\n\
                 link add vxl42 type vxlan id 42 local {local} remote {peer} dev {br} dstport 4789\n\
                 link set vxl42 master ovbr0\n\
                 link set vxl42 up\n\
                 link add ovh0 type veth peer name eth0 netns {pod}\n\
                 link set ovh0 mtu {OVERLAY_MTU}\n\
                 link set ovh0 master ovbr0\n\
                 link set ovh0 up\n",
                local = node.ip,
                br = node.bridge,
                pod = pod.name(),
            ))?;
            pod.ip_batch(&format!(
                "addr add {ip}/24 dev eth0\n\
                 link set eth0 mtu {OVERLAY_MTU}\n\
                 link set eth0 up\n"
            ))?;
        }
        Ok(Overlay { pod1, pod2 })
    }
}
