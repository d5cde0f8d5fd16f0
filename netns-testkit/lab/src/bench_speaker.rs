//! The speaker figures of `flatlan-lab bench`: [`crate::speaker_bench`]
//! run on the `flatlan-speaker` binary (driven as a process, so flatlan-lab
//! does not depend on the speaker crate).
//!
//! The contract: the speaker bench's report has (some of) the keys in
//! [`SPEAKER_KEYS`], numbers or null. A bench that fails yields "not
//! available" and nulls, never made-up numbers.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::speaker_bench::{self, BenchOptions};

/// What the bench reports from the speaker, by JSON key.
pub const SPEAKER_KEYS: [&str; 5] = [
    "failover_p50_ms",
    "failover_p95_ms",
    "first_garp_ms",
    "arp_reply_p99_ms",
    "rss_mb_1000_vips",
];

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
    /// The poor LAN's figures (issue 12): not part of the availability
    /// contract, since `--lossy-secs 0` leaves them out.
    pub false_failovers_10min: Option<f64>,
    pub failover_p95_ms_lossy: Option<f64>,
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
                "from `flatlan-lab speaker-bench`".into()
            } else {
                format!(
                    "`flatlan-lab speaker-bench` did not report {}",
                    missing.join(", ")
                )
            },
            failover_p50_ms: get("failover_p50_ms"),
            failover_p95_ms: get("failover_p95_ms"),
            first_garp_ms: get("first_garp_ms"),
            start_to_first_garp_ms: get("start_to_first_garp_ms"),
            arp_reply_p99_ms: get("arp_reply_p99_ms"),
            rss_mb_1000_vips: get("rss_mb_1000_vips"),
            false_failovers_10min: get("false_failovers_10min"),
            failover_p95_ms_lossy: get("failover_p95_ms_lossy"),
        }
    }
}

/// Runs the speaker bench on `binary`.
pub fn speaker_figures(binary: Option<&Path>) -> SpeakerFigures {
    let Some(bin) = binary else {
        return SpeakerFigures::unavailable("flatlan-speaker binary not found");
    };
    let report = match speaker_bench::run(&BenchOptions::new(bin.to_path_buf())) {
        Ok(r) => r,
        Err(e) => return SpeakerFigures::unavailable(format!("speaker bench: {e}")),
    };
    match serde_json::to_value(&report) {
        Ok(v) => SpeakerFigures::from_json(&v),
        Err(e) => SpeakerFigures::unavailable(format!("speaker bench report: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_from_json_keep_nulls() {
        let f = SpeakerFigures::from_json(&json!({
            "failover_p50_ms": 310.0, "failover_p95_ms": 420.5, "first_garp_ms": 2,
            "arp_reply_p99_ms": null, "rss_mb_1000_vips": 14.2,
            "false_failovers_10min": 0.0, "failover_p95_ms_lossy": 780.0
        }));
        assert_eq!(f.false_failovers_10min, Some(0.0));
        assert_eq!(f.failover_p95_ms_lossy, Some(780.0));
        assert!(f.available);
        assert_eq!(f.failover_p95_ms, Some(420.5));
        assert_eq!(f.first_garp_ms, Some(2.0));
        assert_eq!(f.arp_reply_p99_ms, None);
        assert!(f.note.contains("arp_reply_p99_ms"), "{}", f.note);
        assert!(!SpeakerFigures::from_json(&json!({})).available);
    }
}
