//! The speaker figures of `flatlan-lab bench`, taken from the speaker's
//! own bench entry point through its binary, so netns-testkit does not
//! depend on the speaker crate.
//!
//! The contract: `flatlan-speaker bench --json` measures in namespaces of
//! its own and prints one JSON object with (some of) the keys in
//! [`SPEAKER_KEYS`], numbers or null. A binary without a `bench`
//! subcommand yields "not available" and nulls, never made-up numbers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use netns_testkit::command;

/// What the bench reports from the speaker, by JSON key.
pub const SPEAKER_KEYS: [&str; 5] = [
    "failover_p50_ms",
    "failover_p95_ms",
    "first_garp_ms",
    "arp_reply_p99_ms",
    "rss_mb_1000_vips",
];

/// The speaker bench may build labs and run 20+ failovers.
const SPEAKER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SpeakerFigures {
    pub available: bool,
    /// Why the figures are missing, or where they came from.
    pub note: String,
    pub failover_p50_ms: Option<f64>,
    pub failover_p95_ms: Option<f64>,
    /// Config to first GARP on a running speaker (a VIP added by SIGHUP).
    pub first_garp_ms: Option<f64>,
    /// Start to first GARP (a starting daemon listens for peers first).
    pub start_to_first_garp_ms: Option<f64>,
    pub arp_reply_p99_ms: Option<f64>,
    pub rss_mb_1000_vips: Option<f64>,
}

impl SpeakerFigures {
    fn unavailable(note: impl Into<String>) -> Self {
        SpeakerFigures {
            available: false,
            note: note.into(),
            ..Default::default()
        }
    }

    /// The figures from the speaker bench's JSON output.
    pub fn from_json(v: &Value) -> Self {
        let get = |k: &str| v.get(k).and_then(Value::as_f64);
        let missing: Vec<&str> = SPEAKER_KEYS
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        SpeakerFigures {
            available: missing.len() < SPEAKER_KEYS.len(),
            note: if missing.is_empty() {
                "from `flatlan-speaker bench --json`".into()
            } else {
                format!(
                    "`flatlan-speaker bench --json` did not report {}",
                    missing.join(", ")
                )
            },
            failover_p50_ms: get("failover_p50_ms"),
            failover_p95_ms: get("failover_p95_ms"),
            first_garp_ms: get("first_garp_ms"),
            start_to_first_garp_ms: get("start_to_first_garp_ms"),
            arp_reply_p99_ms: get("arp_reply_p99_ms"),
            rss_mb_1000_vips: get("rss_mb_1000_vips"),
        }
    }
}

/// True when clap's help lists a `bench` subcommand.
fn has_bench_subcommand(help: &str) -> bool {
    help.lines()
        .skip_while(|l| !l.trim_start().starts_with("Commands:"))
        .any(|l| l.split_whitespace().next() == Some("bench"))
}

/// Runs the speaker's bench if its binary has one.
pub fn speaker_figures(binary: Option<&Path>) -> SpeakerFigures {
    let Some(bin) = binary else {
        return SpeakerFigures::unavailable("flatlan-speaker binary not found");
    };
    let mut help = Command::new(bin);
    help.arg("--help");
    let help = match command::run(help, None, Duration::from_secs(10)) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => return SpeakerFigures::unavailable(format!("cannot run {}: {e}", bin.display())),
    };
    if !has_bench_subcommand(&help) {
        return SpeakerFigures::unavailable(
            "flatlan-speaker has no `bench` subcommand yet (lb-speaker is still in progress)",
        );
    }
    let mut cmd = Command::new(bin);
    cmd.args(["bench", "--json"]);
    let out = match command::run(cmd, None, SPEAKER_TIMEOUT) {
        Ok(o) => o,
        Err(e) => return SpeakerFigures::unavailable(format!("flatlan-speaker bench: {e}")),
    };
    if !out.status.success() {
        return SpeakerFigures::unavailable(format!(
            "flatlan-speaker bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) => SpeakerFigures::from_json(&v),
        Err(e) => SpeakerFigures::unavailable(format!(
            "flatlan-speaker bench printed no JSON object: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_a_bench_subcommand_in_clap_help() {
        let without = "flatlan's L2 load-balancer speaker\n\nUsage: flatlan-speaker <COMMAND>\n\n\
                       Commands:\n  static  Announce\n  status  Print\n  help    Print this\n";
        assert!(!has_bench_subcommand(without));
        let with = format!("{without}  bench   Measure failover\n");
        assert!(has_bench_subcommand(&with));
        // "bench" in prose before the command list does not count.
        assert!(!has_bench_subcommand("bench it\nCommands:\n  static  x\n"));
    }

    #[test]
    fn figures_from_json_keep_nulls() {
        let f = SpeakerFigures::from_json(&json!({
            "failover_p50_ms": 310.0, "failover_p95_ms": 420.5, "first_garp_ms": 2,
            "arp_reply_p99_ms": null, "rss_mb_1000_vips": 14.2
        }));
        assert!(f.available);
        assert_eq!(f.failover_p95_ms, Some(420.5));
        assert_eq!(f.first_garp_ms, Some(2.0));
        assert_eq!(f.arp_reply_p99_ms, None);
        assert!(f.note.contains("arp_reply_p99_ms"), "{}", f.note);
        assert!(!SpeakerFigures::from_json(&json!({})).available);
    }
}
