//! A background `ping -D` and what it printed: how failovers are seen from
//! a LAN client (the demo, the speaker bench and the speaker's tests).

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::process::ProcHandle;

/// What a `ping` (with or without `-D`) printed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PingRun {
    /// Echo requests sent.
    pub sent: u32,
    /// Answered sequence numbers with the reply's `-D` timestamp (Unix
    /// seconds, NaN without `-D`), sorted by sequence number, duplicates
    /// removed.
    pub replies: Vec<(u32, f64)>,
}

impl PingRun {
    /// Parses iputils ping output (with or without `-D`).
    pub fn parse(out: &str) -> PingRun {
        let mut run = PingRun::default();
        for l in out.lines() {
            if l.contains("bytes from") {
                let t = l
                    .strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(f64::NAN);
                if let Some(i) = l.find("icmp_seq=") {
                    let n: String = l[i + 9..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(n) = n.parse() {
                        run.replies.push((n, t));
                    }
                }
            }
            if let Some(i) = l.find(" packets transmitted") {
                run.sent = l[..i].trim().parse().unwrap_or(0);
            }
        }
        run.replies.sort_by_key(|r| r.0);
        run.replies.dedup_by_key(|r| r.0);
        run
    }

    /// The answered sequence numbers.
    pub fn seqs(&self) -> Vec<u32> {
        self.replies.iter().map(|r| r.0).collect()
    }

    /// Echo requests answered.
    pub fn received(&self) -> u32 {
        u32::try_from(self.replies.len()).unwrap_or(u32::MAX)
    }

    /// Echo requests that got no reply.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received())
    }

    /// The longest run of missing sequence numbers between two answered ones.
    pub fn longest_gap(&self) -> u32 {
        self.replies
            .windows(2)
            .map(|w| w[1].0.saturating_sub(w[0].0).saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// The longest time between two consecutive replies, in ms: the
    /// outage as the client lives it. Counting lost pings alone would
    /// assume ping keeps its 20 ms pace, which it does not quite on a
    /// loaded machine. 0 without `-D` timestamps.
    pub fn longest_silence_ms(&self) -> f64 {
        self.replies
            .windows(2)
            .map(|w| (w[1].1 - w[0].1) * 1000.0)
            .filter(|d| d.is_finite())
            .fold(0.0, f64::max)
    }

    /// True if the last replies came back: the run ended with service.
    pub fn resumed(&self) -> bool {
        self.replies.last().is_some_and(|l| l.0 + 10 >= self.sent)
    }

    /// Milliseconds from `failed_at` (Unix seconds) to the first reply
    /// that ends the longest run of lost pings: the outage a client lives
    /// through. Replies still in flight at the failure come before the gap
    /// and do not count. `None` if nothing was lost or no reply followed.
    pub fn recovery_ms(&self, failed_at: f64) -> Option<f64> {
        let (idx, gap) = self
            .replies
            .windows(2)
            .enumerate()
            .map(|(i, w)| (i + 1, w[1].0.saturating_sub(w[0].0)))
            .max_by_key(|(_, g)| *g)?;
        if gap <= 1 {
            return None;
        }
        let t = self.replies.get(idx)?.1;
        let ms = (t - failed_at) * 1000.0;
        (ms.is_finite() && ms >= 0.0).then_some(ms)
    }
}

/// `ping -n -D -i INTERVAL -W 0.5 -w SECS TO` from `ns`, in the
/// background; [`ping_finish`] collects it.
pub fn ping_background(
    ns: &Netns,
    to: IpAddr,
    interval: Duration,
    secs: u32,
) -> Result<ProcHandle> {
    let interval = format!("{:.3}", interval.as_secs_f64());
    let deadline = secs.to_string();
    let to = to.to_string();
    ns.spawn(&[
        "ping",
        "-n",
        "-D",
        "-i",
        interval.as_str(),
        "-W",
        "0.5",
        "-w",
        deadline.as_str(),
        to.as_str(),
    ])
}

/// Waits for a [`ping_background`] of `secs` and parses what it printed.
pub fn ping_finish(mut h: ProcHandle, secs: u32) -> Result<PingRun> {
    let timeout = Duration::from_secs(u64::from(secs) + 10);
    if h.wait_timeout(timeout).is_none() {
        return Err(Error::Timeout {
            what: format!("`{}`", h.command()),
            timeout,
        });
    }
    Ok(PingRun::parse(&h.log()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_output_and_gaps() {
        let out = "PING 192.168.2.240 (192.168.2.240) 56(84) bytes of data.\n\
                   [100.000] 64 bytes from 192.168.2.240: icmp_seq=1 ttl=64 time=0.05 ms\n\
                   [100.020] 64 bytes from 192.168.2.240: icmp_seq=2 ttl=64 time=0.05 ms\n\
                   [100.021] 64 bytes from 192.168.2.240: icmp_seq=2 ttl=64 time=0.07 ms (DUP!)\n\
                   [100.130] 64 bytes from 192.168.2.240: icmp_seq=7 ttl=64 time=0.05 ms\n\
                   \n--- 192.168.2.240 ping statistics ---\n\
                   8 packets transmitted, 3 received, 62.5% packet loss, time 140ms\n";
        let run = PingRun::parse(out);
        assert_eq!(run.sent, 8);
        assert_eq!(run.seqs(), vec![1, 2, 7]);
        assert_eq!(run.longest_gap(), 4);
        assert_eq!(run.lost(), 5);
        assert_eq!(run.received(), 3);
        assert!((run.longest_silence_ms() - 110.0).abs() < 1e-6);
        assert!(run.resumed());
        assert_eq!(PingRun::parse("").longest_gap(), 0);
        assert!(!PingRun::parse("").resumed());
        // Without -D there are no timestamps, and no made-up silence.
        let plain = PingRun::parse("64 bytes from x: icmp_seq=1\n64 bytes from x: icmp_seq=3\n");
        assert_eq!(plain.longest_silence_ms(), 0.0);
        assert_eq!(plain.longest_gap(), 1);
    }

    #[test]
    fn recovery_is_measured_from_the_failure() {
        let out = "[100.000] 64 bytes from 10.77.0.100: icmp_seq=1 ttl=64 time=0.1 ms\n\
                   [100.020] 64 bytes from 10.77.0.100: icmp_seq=2 ttl=64 time=0.1 ms\n\
                   [100.040] 64 bytes from 10.77.0.100: icmp_seq=3 ttl=64 time=0.1 ms\n\
                   [100.401] 64 bytes from 10.77.0.100: icmp_seq=20 ttl=64 time=0.1 ms\n\
                   [100.401] 64 bytes from 10.77.0.100: icmp_seq=20 ttl=64 time=0.1 ms (DUP!)\n\
                   [100.421] 64 bytes from 10.77.0.100: icmp_seq=21 ttl=64 time=0.1 ms\n\
                   \n22 packets transmitted, 5 received, +1 duplicates, 77% packet loss\n";
        let run = PingRun::parse(out);
        assert_eq!(run.sent, 22);
        assert_eq!(run.replies.len(), 5);
        assert_eq!(run.lost(), 17);
        // Failed at 100.030: the reply at .040 was in flight; recovery at .401.
        let ms = run.recovery_ms(100.030).expect("a recovery");
        assert!((ms - 371.0).abs() < 1e-6, "{ms}");
        // Nothing lost: no outage to measure.
        let none = PingRun::parse(
            "[1.0] 64 bytes from x: icmp_seq=1\n[1.02] 64 bytes from x: icmp_seq=2\n",
        );
        assert_eq!(none.recovery_ms(0.5), None);
        assert_eq!(PingRun::parse("").recovery_ms(0.0), None);
    }
}
