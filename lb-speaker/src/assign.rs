//! Making the owner accept traffic for its VIPs in static mode.
//!
//! Announcing a VIP only steers the LAN's frames to the owner's MAC; without
//! kube-proxy (static mode) the owner's kernel must also consider the VIP a
//! local address. With `assign: true` (the default) the speaker:
//!
//! - adds the VIP as a host address (`/32`, `/128`) to `lo` while it owns it
//!   and removes it on release (and, at start, removes leftovers from a
//!   previous run that was killed);
//! - sets `net.ipv4.conf.<if>.arp_ignore=1` on the announcing interface
//!   and on `all` (every other interface, see [`crate::sysctls`]), so the
//!   kernel answers ARP only for addresses configured *on the receiving
//!   interface* and never for the VIP on `lo`. Otherwise every node that
//!   ever held the VIP would answer, and so would a second NIC of the
//!   owner, and the LAN's caches would flap between them: only the speaker
//!   answers, and only on the owner's announcing interface;
//! - sets `arp_announce=2`, so the kernel never uses the VIP as the sender
//!   address of its own ARP requests (which would poison caches with a
//!   non-owner's MAC).
//!
//! IPv6 needs no sysctl: Linux answers an NS only for addresses on the
//! receiving interface, so a VIP on `lo` is answered by the speaker alone.
//! The sysctls are runtime settings; a host that re-applies sysctl.d files
//! (systemd-sysctl) may revert them, so deployments should also ship them
//! in `/etc/sysctl.d/` (STYLE "Pitfalls"). The speaker records the values
//! it replaced (in `stateDir`, so a crash does not lose them) and puts them
//! back on a clean exit, so stopping it leaves the host as it found it.

use std::net::IpAddr;
use std::process::Command;

use crate::error::{Error, Result};
use crate::sysctls::{record_path, ArpSysctls};

/// The host operations `assign` needs, behind a trait so the engine can be
/// run with a recorder (or with `assign: false`).
pub trait HostAddrs: Send {
    /// Sets `arp_ignore`/`arp_announce` on the announcing interface and
    /// remembers the values it replaced, for [`Self::restore_ifaces`]. The
    /// engine calls it once per interface (again only if the interface was
    /// recreated, with a new ifindex, whose fresh values are then the ones
    /// to restore; not for a new MAC on the same device).
    fn prepare_iface(&mut self, iface: &str) -> Result<()>;
    /// Puts back the sysctl values [`Self::prepare_iface`] replaced (clean
    /// exit, once nothing is assigned any more).
    fn restore_ifaces(&mut self) {}
    /// Adds VIPs to `lo`, all at once (a claim burst after a failover can
    /// move hundreds), and returns the ones that could not be added: the
    /// caller must not announce those. Nothing to add costs nothing.
    fn add_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)>;
    /// Removes VIPs from `lo` and returns the ones that could not be
    /// removed (absent ones are fine and not returned, see [`is_absent`]).
    /// One failure does not stop the others. Nothing to remove costs
    /// nothing.
    fn del_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)>;
}

/// True if `ip addr del` failed only because the address was not there:
/// EADDRNOTAVAIL, which iproute2 prints as the errno text on older kernels
/// and as the kernel's extack message ("Address not found") on newer ones.
/// Any other failure may leave the VIP on `lo` and must be reported.
pub fn is_absent(msg: &str) -> bool {
    msg.contains("Cannot assign requested address")
        || msg.to_ascii_lowercase().contains("address not found")
}

/// Does nothing (`assign: false`, e.g. when kube-proxy handles the VIP).
#[derive(Debug, Default)]
pub struct NoAssign;

impl HostAddrs for NoAssign {
    fn prepare_iface(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn add_many(&mut self, _: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        Vec::new()
    }
    fn del_many(&mut self, _: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        Vec::new()
    }
}

/// The real thing: iproute2 for the address, `/proc/sys` for sysctls (both
/// act on the caller's network namespace; see [`ArpSysctls`]).
#[derive(Debug, Default)]
pub struct LoopbackAssign {
    sysctls: ArpSysctls,
}

impl LoopbackAssign {
    /// Records the sysctl originals in `state_dir`, and restores what a
    /// crashed run recorded there.
    pub fn new(state_dir: &std::path::Path) -> Self {
        LoopbackAssign {
            sysctls: ArpSysctls::with_root("/proc/sys".into(), record_path(state_dir)),
        }
    }
}

fn host_net(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

impl HostAddrs for LoopbackAssign {
    fn prepare_iface(&mut self, iface: &str) -> Result<()> {
        self.sysctls.prepare(iface)
    }

    fn restore_ifaces(&mut self) {
        self.sysctls.restore();
    }

    fn add_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        // One `ip -batch` instead of one process per VIP: 1,000 execs
        // would stall the event loop (and the heartbeats) for seconds.
        let lines: Vec<String> = vips
            .iter()
            .map(|v| {
                format!(
                    "addr replace {} dev lo{}",
                    host_net(*v),
                    if v.is_ipv6() { " nodad" } else { "" }
                )
            })
            .collect();
        per_vip(vips, batch(&lines), |_| false)
    }

    fn del_many(&mut self, vips: &[IpAddr]) -> Vec<(IpAddr, Error)> {
        let lines: Vec<String> = vips
            .iter()
            .map(|v| format!("addr del {} dev lo", host_net(*v)))
            .collect();
        per_vip(vips, batch(&lines), is_absent)
    }
}

/// Maps a batch's outcome onto the VIPs, one per line: the failed ones,
/// less those `ok` accepts. If the batch could not run at all, every VIP
/// failed.
fn per_vip(
    vips: &[IpAddr],
    outcome: Result<Vec<(usize, String)>>,
    ok: impl Fn(&str) -> bool,
) -> Vec<(IpAddr, Error)> {
    let op = |v: &IpAddr, msg: String| {
        Error::sys(
            format!("ip -batch: {}", host_net(*v)),
            std::io::Error::other(msg),
        )
    };
    match outcome {
        Ok(failed) => failed
            .into_iter()
            .filter(|(_, msg)| !ok(msg))
            .filter_map(|(line, msg)| vips.get(line).map(|v| (*v, op(v, msg))))
            .collect(),
        Err(e) => vips.iter().map(|v| (*v, op(v, e.to_string()))).collect(),
    }
}

/// Runs `ip -force -batch -` with one command per line and returns the
/// failed lines (0-based) with what ip printed for each. `-force` keeps
/// going past a failed line, so every other line still takes effect and
/// only the returned ones need handling.
fn batch(lines: &[String]) -> Result<Vec<(usize, String)>> {
    // Nothing to do is no process: the engine's turns and every received
    // frame end here, and an exec per frame (an ARP storm, a peer's GARP
    // burst for hundreds of VIPs) starved the event loop for seconds.
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let mut ip = Command::new("ip");
    ip.args(["-force", "-batch", "-"]);
    run_batch(ip, lines)
}

/// Feeds `lines` to `cmd`'s stdin and parses its stderr as `ip -batch`'s.
/// The script is written from a thread of its own while stderr is read:
/// `ip` reports each failed line as it goes, and with thousands failing
/// it would block on a full stderr pipe while we blocked on a full stdin.
/// The child is always waited for, also when the write fails.
fn run_batch(mut cmd: Command, lines: &[String]) -> Result<Vec<(usize, String)>> {
    use std::io::Write as _;
    let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::sys("ip -batch", e))?;
    let stdin = child.stdin.take();
    let (written, out) = std::thread::scope(|s| {
        let writer = s.spawn(move || match stdin {
            // Dropped at the end: the end of the script.
            Some(mut stdin) => stdin.write_all(script.as_bytes()),
            None => Err(std::io::Error::other("no stdin")),
        });
        let out = child.wait_with_output();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")));
        (written, out)
    });
    let out = out.map_err(|e| Error::sys("ip -batch", e))?;
    // Not all of the script was read: we cannot tell what took effect.
    written.map_err(|e| Error::sys("ip -batch: write the script", e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = failed_lines(&stderr);
    if !out.status.success() && failed.is_empty() {
        // Failed without naming a line: we cannot tell what took effect.
        return Err(Error::sys(
            "ip -batch",
            std::io::Error::other(stderr.trim().to_owned()),
        ));
    }
    Ok(failed)
}

/// Parses `ip -force -batch` stderr: each failed command's messages come
/// first, then `Command failed -:N` (N counts lines from 1).
fn failed_lines(stderr: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut msgs: Vec<&str> = Vec::new();
    for l in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match l
            .strip_prefix("Command failed -:")
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            Some(n) if n >= 1 => {
                out.push((n - 1, msgs.join("; ")));
                msgs.clear();
            }
            _ => msgs.push(l),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_map_to_their_lines() {
        // What iproute2 6.1 prints for `addr del` of absent v4 and v6
        // addresses and of a missing device, lines 1, 3 and 4.
        let stderr = "Error: ipv4: Address not found.\nCommand failed -:1\n\
                      Error: ipv6: address not found.\nCommand failed -:3\n\
                      Cannot find device \"nosuch\"\nCommand failed -:4\n";
        let f = failed_lines(stderr);
        assert_eq!(f.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert!(is_absent(&f[0].1) && is_absent(&f[1].1));
        assert!(!is_absent(&f[2].1));
        assert!(is_absent(
            "RTNETLINK answers: Cannot assign requested address"
        ));
        assert!(!is_absent("RTNETLINK answers: Operation not permitted"));

        let vips: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "fd00::3", "10.0.0.4"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let left = per_vip(&vips, Ok(f), is_absent);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, vips[3]);
        assert!(left[0].1.to_string().contains("nosuch"));
        // A batch that could not run at all fails every VIP.
        let all = per_vip(&vips, Err(Error::Bench("x".into())), is_absent);
        assert_eq!(all.len(), 4);
    }

    /// A batch whose every line fails, like thousands of deletes of absent
    /// addresses: the command reports each failure on stderr while it
    /// still reads the script, far more than a pipe holds. Written before
    /// stderr was read, this deadlocked.
    #[test]
    fn a_batch_that_fills_stderr_while_reading_its_script_completes() {
        let n = 5000;
        let lines: Vec<String> = (0..n)
            .map(|i| format!("addr del 10.{}.{}.1/32 dev lo", i / 256, i % 256))
            .collect();
        // What `ip -force -batch -` prints for each failed line.
        let mut fake = Command::new("sh");
        fake.args([
            "-c",
            "n=0; while read -r l; do n=$((n+1)); \
             echo \"Error: ipv4: Address not found ($l).\" >&2; \
             echo \"Command failed -:$n\" >&2; done; exit 1",
        ]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run_batch(fake, &lines));
        });
        let failed = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the batch ends (no pipe deadlock)")
            .expect("ran");
        assert_eq!(failed.len(), n);
        assert_eq!(failed[n - 1].0, n - 1);
        assert!(failed.iter().all(|(_, m)| is_absent(m)));
    }

    /// A command that exits without reading its script is still waited
    /// for, and the batch is an error: what took effect is unknown.
    #[test]
    fn a_batch_whose_script_is_not_read_is_an_error() {
        let lines: Vec<String> = (0..50_000).map(|i| format!("addr del {i}")).collect();
        let mut fake = Command::new("sh");
        fake.args(["-c", "exit 0"]);
        assert!(run_batch(fake, &lines).is_err());
    }
}
