//! What a test reads off a running speaker from outside: its memory,
//! its descriptors, the addresses on a device, and arping's view.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// Resident set size of a process in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Number of open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// The addresses on `dev` in `ns` (`ip -j addr show dev DEV`), without
/// loopback addresses (127/8, ::1).
pub fn addresses(ns: &Netns, dev: &str) -> Result<BTreeSet<IpAddr>> {
    let out = ns.exec_ok(&["ip", "-j", "addr", "show", "dev", dev])?;
    parse_addresses(&out.stdout)
}

pub(super) fn parse_addresses(json: &[u8]) -> Result<BTreeSet<IpAddr>> {
    let v: Value = serde_json::from_slice(json).map_err(|source| Error::Json {
        what: "parse `ip -j addr` output".to_owned(),
        source,
    })?;
    let mut out = BTreeSet::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let Some(ip) = a["local"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            if !ip.is_loopback() {
                out.insert(ip);
            }
        }
    }
    Ok(out)
}

/// What one `arping` run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpingReplies {
    /// The distinct responder MACs, lower case.
    pub macs: Vec<String>,
    /// How many replies came back.
    pub replies: usize,
    /// How long arping ran.
    pub elapsed: Duration,
}

/// `arping -b OPTIONS -I DEV IP` from `ns`: `-b` keeps broadcasting, so
/// every responder is asked each time (two responders both answer the
/// first probe). `options` picks the pace, e.g. `["-c", "2", "-w", "3"]`
/// (two probes a second apart, about 2 s) or `["-f", "-w", "10"]` (until
/// the first reply, at most 10 s). An arping that did not get to send
/// (bad option, no such device) is an error, not "no replies".
pub fn arping(ns: &Netns, dev: &str, ip: IpAddr, options: &[&str]) -> Result<ArpingReplies> {
    let ip = ip.to_string();
    let mut argv = vec!["arping", "-b"];
    argv.extend_from_slice(options);
    argv.extend_from_slice(&["-I", dev, ip.as_str()]);
    let started = std::time::Instant::now();
    let out = ns.exec_timeout(&argv, Duration::from_secs(30))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("Sent ") {
        return Err(Error::CommandFailed {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stdout: stdout.into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let (macs, replies) = parse_arping(&stdout);
    Ok(ArpingReplies {
        macs,
        replies,
        elapsed,
    })
}

pub(super) fn parse_arping(out: &str) -> (Vec<String>, usize) {
    let replies: Vec<String> = out
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| l.split(['[', ']']).nth(1))
        .map(str::to_ascii_lowercase)
        .collect();
    let n = replies.len();
    let mut macs = replies;
    macs.sort();
    macs.dedup();
    (macs, n)
}
