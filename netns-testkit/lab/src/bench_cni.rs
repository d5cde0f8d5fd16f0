//! The CNI half of `flatlan-lab bench`: flatlan and the reference
//! `bridge` + `host-local` plugins, configured for the same LAN and
//! invoked the same way (exec'd straight into the node's netns, env + stdin, CNI
//! 1.0.0), measured interleaved so machine noise hits both alike.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::RwLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench_stats::Samples;
use netns_testkit::cni::{Attachment, CniCommand, CniInvocation, CniNetwork, Launcher};
use netns_testkit::flatlan::{self, ipv4_of};
use netns_testkit::processes_in;
use netns_testkit::Netns;
use netns_testkit::GATEWAY;
use netns_testkit::{Error, Result};

/// The CNI version both plugins are configured with, so they get the same
/// stdin (Debian's plugins 1.1.1 stop at 1.0.0).
pub const BENCH_CNI_VERSION: &str = "1.0.0";

/// Address ranges of the compared configurations: disjoint, inside the
/// LAN, clear of the router (.1), nodes (.11+), device (.50), client (.60)
/// and the router's DHCP pool (.100-.199). Each holds a 30-pod burst.
pub(crate) const FLATLAN_RANGE: (u8, u8) = (200, 254);
pub(crate) const FLATLAN_NOPROBE_RANGE: (u8, u8) = (13, 49);
pub(crate) const REFERENCE_RANGE: (u8, u8) = (61, 99);

fn lan_ip(host: u8) -> Ipv4Addr {
    let [a, b, c, _] = GATEWAY.octets();
    Ipv4Addr::new(a, b, c, host)
}

fn range_str((lo, hi): (u8, u8)) -> String {
    format!("{}-{}", lan_ip(lo), lan_ip(hi))
}

/// Number of addresses in a range.
pub(crate) fn range_len((lo, hi): (u8, u8)) -> usize {
    usize::from(hi.saturating_sub(lo)) + 1
}

/// flatlan on node1 over `range`, with its store under `state` (one
/// directory per configuration, so their stores never interact).
pub(crate) fn flatlan_network(
    state: &Path,
    bin_dir: &Path,
    range: (u8, u8),
    probe: bool,
    name: &str,
) -> Result<CniNetwork> {
    flatlan::init_state(state, 1)?;
    let r = range_str(range);
    let mut conf = flatlan::plugin_conf(state, 1, &[r.as_str()])?;
    if !probe {
        conf["ipam"]["probe"] = json!({ "enabled": false });
    }
    CniNetwork::new(
        json!({ "cniVersion": BENCH_CNI_VERSION, "name": name, "plugins": [conf] }),
        vec![bin_dir.to_path_buf()],
    )
    .map(direct)
}

/// Both plugins are exec'd straight into the node's namespace, as a runtime
/// does, so the comparison is of the plugins, not of `ip netns exec`.
fn direct(mut net: CniNetwork) -> CniNetwork {
    net.launcher = Launcher::Direct;
    net
}

/// The reference: Debian's `bridge` on the node's br0 (no gateway address
/// on the bridge, no masquerade: pods are plain LAN hosts, as with
/// flatlan) with `host-local` handing out a separate slice of the LAN and
/// the same default route. Its store lives under `state`, not /var/lib.
pub(crate) fn reference_network(state: &Path, cni_dir: &Path) -> Result<CniNetwork> {
    let data = state.join("host-local");
    std::fs::create_dir_all(&data)
        .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
    let (lo, hi) = REFERENCE_RANGE;
    CniNetwork::new(
        json!({
            "cniVersion": BENCH_CNI_VERSION,
            "name": "bench-reference",
            "plugins": [{
                "type": "bridge",
                "bridge": "br0",
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": "192.168.2.0/24",
                        "rangeStart": lan_ip(lo).to_string(),
                        "rangeEnd": lan_ip(hi).to_string(),
                        "gateway": GATEWAY.to_string(),
                    }]],
                    "routes": [{ "dst": "0.0.0.0/0", "gw": GATEWAY.to_string() }],
                    "dataDir": data,
                },
            }],
        }),
        vec![cni_dir.to_path_buf()],
    )
    .map(direct)
}

/// The attachment a kubelet would pass for pod `name` (CNI_ARGS included,
/// which host-local only accepts with IgnoreUnknown).
pub(crate) fn attachment(container_id: &str, ns: &Netns, pod: &str) -> Attachment {
    let mut att = Attachment::new(container_id, ns);
    att.args = vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), "bench".into()),
        ("K8S_POD_NAME".into(), pod.into()),
    ];
    att
}

/// One configuration under test, with the pod namespace it reuses for
/// every sequential ADD/DEL (namespace creation is not part of CNI
/// latency, and deleting hundreds of namespaces would load the kernel's
/// cleanup worker in the middle of the measurement).
pub(crate) struct Contender {
    pub tag: &'static str,
    pub net: CniNetwork,
    pub ns: Netns,
    pub add: Samples,
    pub del: Samples,
    seq: usize,
}

impl Contender {
    pub(crate) fn new(tag: &'static str, net: CniNetwork, ns: Netns) -> Self {
        Contender {
            tag,
            net,
            ns,
            add: Samples::new(),
            del: Samples::new(),
            seq: 0,
        }
    }

    /// One ADD then DEL; records both when `record`. The pod gets an IPv4
    /// address or this fails.
    pub(crate) fn cycle(&mut self, node: &Netns, record: bool) -> Result<(Duration, Duration)> {
        self.seq += 1;
        let pod = format!("{}-{}", self.tag, self.seq);
        let att = attachment(&format!("bench-{pod}"), &self.ns, &pod);
        let (result, add) = self.net.add_timed(node, &att)?;
        let checked = ipv4_of(&result).ok_or_else(|| Error::Probe {
            what: format!("{} ADD of {pod}", self.tag),
            detail: format!("no IPv4 address in the result {result}"),
        });
        // DEL even when the result is unusable, so nothing is left behind.
        let del = self.net.del_timed(node, &att, Some(&result))?;
        checked?;
        if record {
            self.add.push(add);
            self.del.push(del);
        }
        Ok((add, del))
    }
}

/// `/bin/true` exec'd into the node the same way, with the environment and stdin of a
/// plugin: the part of every measured ADD/DEL that is not the plugin.
pub(crate) fn exec_baseline(node: &Netns, ns: &Netns, config: &Value) -> Result<Duration> {
    let mut inv = CniInvocation::new("/bin/true", CniCommand::Add, config.clone());
    inv.launcher = Launcher::Direct;
    inv.container_id = "bench-baseline".into();
    inv.netns = Some(ns.path());
    let (out, took) = inv.run_timed(node)?;
    if out.exit_code != 0 {
        return Err(Error::Probe {
            what: "exec true in the node".into(),
            detail: format!("exit {}: {}", out.exit_code, out.stderr.trim()),
        });
    }
    Ok(took)
}

/// Waits until no process is left in `ns` (flatlan's detached background
/// probe-ahead), so one measurement does not compete with the previous
/// one's leftovers. Returns how many were seen at first.
pub(crate) fn wait_quiet(ns: &Netns, timeout: Duration) -> usize {
    let deadline = netns_testkit::deadline_after(timeout);
    let first = processes_in(&ns.path()).len();
    let mut n = first;
    while n > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        n = processes_in(&ns.path()).len();
    }
    if n > 0 {
        tracing::warn!(ns = ns.name(), n, "processes still running in the node");
    }
    first
}

/// What one concurrent burst produced.
#[derive(Debug, Default)]
pub(crate) struct BurstResult {
    pub add: Samples,
    pub del: Samples,
    pub add_wall: Samples,
    pub del_wall: Samples,
    pub duplicates: usize,
    pub failures: usize,
    pub first_error: Option<String>,
}

/// `namespaces.len()` concurrent ADDs on `node` (one pod namespace each,
/// released together by a barrier), then as many concurrent DELs.
/// Duplicated addresses and failed ADDs are counted, not fatal: they are
/// exactly what a burst is meant to reveal.
pub(crate) fn burst(
    net: &CniNetwork,
    node: &Netns,
    namespaces: &[Netns],
    tag: &str,
    out: &mut BurstResult,
) -> Result<()> {
    let atts: Vec<Attachment> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let pod = format!("{tag}-{i}");
            attachment(&format!("bench-{pod}"), ns, &pod)
        })
        .collect();
    let (adds, add_wall) = concurrently(&atts, |att| net.add_timed(node, att))?;
    out.add_wall.push(add_wall);
    let mut seen: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut cached = Vec::with_capacity(atts.len());
    for r in adds {
        match r {
            Ok((result, took)) => {
                out.add.push(took);
                match ipv4_of(&result) {
                    Some(ip) => *seen.entry(ip).or_default() += 1,
                    None => out.failures += 1,
                }
                cached.push(Some(result));
            }
            Err(e) => {
                out.failures += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
                cached.push(None);
            }
        }
    }
    out.duplicates += seen.values().map(|n| n.saturating_sub(1)).sum::<usize>();
    // DEL everything, also the attachments whose ADD failed (DEL is
    // idempotent), like a runtime cleaning up a failed sandbox.
    let pairs: Vec<(&Attachment, Option<Value>)> = atts.iter().zip(cached).collect();
    let (dels, del_wall) = concurrently(&pairs, |(att, cached)| {
        net.del_timed(node, att, cached.as_ref())
    })?;
    out.del_wall.push(del_wall);
    let mut del_error = None;
    for r in dels {
        match r {
            Ok(took) => out.del.push(took),
            Err(e) => {
                del_error.get_or_insert(e);
            }
        }
    }
    // A failed DEL would leave state behind and spoil the next round.
    match del_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The burst bound that is not the plugin: `namespaces.len()`
/// concurrent [`exec_baseline`]s. Records each one and the wall time.
pub(crate) fn burst_baseline(
    node: &Netns,
    namespaces: &[Netns],
    config: &Value,
    each: &mut Samples,
    wall: &mut Samples,
) -> Result<()> {
    let (runs, took) = concurrently(namespaces, |ns| exec_baseline(node, ns, config))?;
    wall.push(took);
    for r in runs {
        each.push(r?);
    }
    Ok(())
}

/// Runs `f` on every item at once, each on its own thread, started
/// together; returns the results in order and the wall time from the
/// start to the last finish.
fn concurrently<I: Sync, T: Send>(
    items: &[I],
    f: impl Fn(&I) -> Result<T> + Sync,
) -> Result<(Vec<Result<T>>, Duration)> {
    // The threads block on a read of this lock until the write guard goes:
    // a starting gun that, unlike a barrier, can also call the race off
    // (`false`) if a thread cannot be spawned, so no thread waits forever.
    let gate = RwLock::new(false);
    let mut go = gate.write().unwrap_or_else(|p| p.into_inner());
    thread::scope(|s| {
        let mut handles = Vec::with_capacity(items.len());
        let mut spawn_error = None;
        for item in items {
            let (gate, f) = (&gate, &f);
            let h = thread::Builder::new()
                .name("bench-burst".into())
                .spawn_scoped(s, move || {
                    let go = *gate.read().unwrap_or_else(|p| p.into_inner());
                    go.then(|| f(item))
                });
            match h {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_error = Some(Error::io("spawn burst thread", e));
                    break;
                }
            }
        }
        *go = spawn_error.is_none();
        let started = Instant::now();
        drop(go);
        let results: Vec<Result<T>> = handles
            .into_iter()
            .filter_map(|h| {
                h.join().unwrap_or_else(|_| {
                    Some(Err(Error::InvalidConfig("a burst thread panicked".into())))
                })
            })
            .collect();
        let wall = started.elapsed();
        match spawn_error {
            Some(e) => Err(e),
            None => Ok((results, wall)),
        }
    })
}
