use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::Netns;

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
    pub avg_rtt: Option<Duration>,
}

/// Pings `to` from inside `from`, `count` times at 200 ms intervals.
/// Succeeds only if every echo is answered within `timeout` overall (the
/// first may take a little longer while ARP resolves).
pub fn ping(from: &Netns, to: IpAddr, count: u32, timeout: Duration) -> Result<PingReport> {
    let count = count.max(1);
    // -w is whole seconds: round up so a short timeout still allows one try.
    let deadline = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let (count_s, deadline_s, to_s) = (
        count.to_string(),
        deadline.max(1).to_string(),
        to.to_string(),
    );
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    let argv = [
        "ping",
        family,
        "-n",
        "-q",
        "-i",
        "0.2",
        "-c",
        &count_s,
        "-w",
        &deadline_s,
        &to_s,
    ];
    let out = from.exec_timeout(&argv, timeout + Duration::from_secs(2))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = parse_summary(&stdout);
    match report {
        Some(r) if out.status.success() && r.received >= count => Ok(r),
        _ => Err(Error::Probe {
            what: format!("ping {to} from {}", from.name()),
            detail: format!(
                "{} of {count} replies within {timeout:?}: {}{}",
                report.map_or(0, |r| r.received),
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Parses iputils' summary lines.
fn parse_summary(out: &str) -> Option<PingReport> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let transmitted = nums.next()?;
    let received = nums.next()?;
    // rtt min/avg/max/mdev = 0.040/0.052/0.061/0.008 ms
    let avg_rtt = out
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|avg| avg.parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    Some(PingReport {
        transmitted,
        received,
        avg_rtt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iputils_summary() {
        let out = "PING 192.168.2.1 (192.168.2.1) 56(84) bytes of data.\n\n\
                   --- 192.168.2.1 ping statistics ---\n\
                   3 packets transmitted, 3 received, 0% packet loss, time 404ms\n\
                   rtt min/avg/max/mdev = 0.040/0.052/0.061/0.008 ms\n";
        let r = parse_summary(out).expect("parses");
        assert_eq!((r.transmitted, r.received), (3, 3));
        assert_eq!(r.avg_rtt, Some(Duration::from_micros(52)));
    }

    #[test]
    fn parses_total_loss() {
        let out = "2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1000ms\n";
        let r = parse_summary(out).expect("parses");
        assert_eq!((r.transmitted, r.received, r.avg_rtt), (2, 0, None));
        assert_eq!(parse_summary("garbage"), None);
    }
}
