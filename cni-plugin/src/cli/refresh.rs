//! `--watch [SECS]`: the listing again every SECS, like watch(1).
//!
//! Each frame is rendered whole before anything is written, and written
//! with one write after the clear-screen sequence, so a terminal never
//! shows half a table. Piped, frames follow each other separated by a
//! blank line, for `| tee log` or a test reading them.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::error::{Error, Result};

/// Default interval, as watch(1)'s.
pub const DEFAULT_SECS: f64 = 2.0;

// ESC[H: cursor home; ESC[2J: clear the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// SECS as given after `--watch`: a positive number of seconds, at least
/// 0.1 (watch(1)'s floor) and at most a day.
pub fn parse_secs(s: &str) -> Result<Duration> {
    let secs: f64 = s
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| Error::Usage(format!("--watch takes seconds, not {s:?}")))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(Error::Usage(format!(
            "--watch {s}: the interval must be between 0.1 and 86400 seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Runs until killed (or until stdout goes away: `| head` ends it quietly).
/// A first render that fails is the command's error, so a wrong
/// `--data-dir` is not retried forever; a later failure is shown in its
/// frame and the next interval tries again.
pub fn every(
    interval: Duration,
    title: &str,
    mut render: impl FnMut() -> Result<String>,
) -> Result<String> {
    let tty = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let body = match render() {
            Ok(b) => b,
            Err(e) if first => return Err(e),
            Err(e) => format!("flatlan: {e}\n"),
        };
        first = false;
        let frame = frame(tty, interval, title, &body);
        let mut out = std::io::stdout().lock();
        if out
            .write_all(frame.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(String::new());
        }
        drop(out);
        std::thread::sleep(interval);
    }
}

fn frame(tty: bool, interval: Duration, title: &str, body: &str) -> String {
    if !tty {
        return format!("{body}\n");
    }
    format!(
        "{CLEAR}Every {}s: {title}    {}\n\n{body}",
        interval.as_secs_f64(),
        clock(flatlan_ipam::store::now_secs())
    )
}

/// HH:MM:SS UTC of a Unix time: the frame's timestamp, without a date
/// library in a binary that runs on every pod start.
fn clock(secs: u64) -> String {
    let d = secs % 86_400;
    format!("{:02}:{:02}:{:02} UTC", d / 3600, d / 60 % 60, d % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_like_watch() {
        assert_eq!(parse_secs("2").expect("2"), Duration::from_secs(2));
        assert_eq!(parse_secs("0.5").expect("0.5"), Duration::from_millis(500));
        for bad in ["0", "-1", "0.01", "abc", "", "inf", "NaN", "100000"] {
            let e = parse_secs(bad).expect_err(bad);
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn a_terminal_frame_clears_first_and_a_piped_one_ends_with_a_blank_line() {
        let t = frame(
            true,
            Duration::from_secs(2),
            "flatlan ipam ls --wide",
            "A\nB\n",
        );
        assert!(t.starts_with(CLEAR), "{t:?}");
        assert!(t.contains("Every 2s: flatlan ipam ls --wide"), "{t:?}");
        assert!(t.ends_with("\n\nA\nB\n"), "{t:?}");
        let p = frame(false, Duration::from_secs(2), "x", "A\nB\n");
        assert_eq!(p, "A\nB\n\n");
    }

    #[test]
    fn the_clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00 UTC");
        assert_eq!(clock(86_400 + 3600 * 19 + 60 * 30 + 5), "19:30:05 UTC");
    }
}
