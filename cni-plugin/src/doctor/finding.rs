//! One finding of `flatlan doctor` and the two ways it is printed: a
//! report for people, JSON for scripts. Both carry the same fields, so a
//! script never has to scrape the text.

use serde::Serialize;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

/// What is wrong (or right), why it matters, and the exact fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A stable name for scripts: `br_netfilter`, `ip_forward`, ...
    pub check: &'static str,
    pub severity: Severity,
    pub what: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Finding {
    pub fn ok(check: &'static str, what: impl Into<String>) -> Finding {
        Finding {
            check,
            severity: Severity::Ok,
            what: what.into(),
            why: String::new(),
            fix: String::new(),
        }
    }

    pub fn warn(
        check: &'static str,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity: Severity::Warn,
            ..Finding::fail(check, what, why, fix)
        }
    }

    pub fn fail(
        check: &'static str,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            severity: Severity::Fail,
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// The worst severity, for the exit code.
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

fn count(findings: &[Finding], s: Severity) -> usize {
    findings.iter().filter(|f| f.severity == s).count()
}

/// The readable report: one line per finding, then its why and fix.
pub fn text(findings: &[Finding], notes: &[String]) -> String {
    let mut out = String::new();
    for f in findings {
        out += &format!("{:<4} {}: {}\n", f.severity.label(), f.check, f.what);
        if f.severity != Severity::Ok {
            if !f.why.is_empty() {
                out += &format!("       why: {}\n", f.why);
            }
            if !f.fix.is_empty() {
                let mut lines = f.fix.lines();
                out += &format!("       fix: {}\n", lines.next().unwrap_or_default());
                for l in lines {
                    out += &format!("            {l}\n");
                }
            }
        }
    }
    for n in notes {
        out += &format!("note: {n}\n");
    }
    out += &format!(
        "{} FAIL, {} WARN, {} OK\n",
        count(findings, Severity::Fail),
        count(findings, Severity::Warn),
        count(findings, Severity::Ok)
    );
    out
}

/// The same findings for scripts.
pub fn json(findings: &[Finding], notes: &[String]) -> Value {
    json!({
        "ok": worst(findings) != Severity::Fail,
        "fail": count(findings, Severity::Fail),
        "warn": count(findings, Severity::Warn),
        "findings": findings,
        "notes": notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_carry_the_same_fix() {
        let f = vec![
            Finding::ok("a", "fine"),
            Finding::fail("b", "broken", "it matters", "do this\nthen that"),
        ];
        let t = text(&f, &["cannot see X".into()]);
        assert!(t.contains("OK   a: fine"), "{t}");
        assert!(t.contains("FAIL b: broken\n       why: it matters\n       fix: do this\n            then that\n"), "{t}");
        assert!(t.contains("note: cannot see X"), "{t}");
        let j = json(&f, &[]);
        assert_eq!(j["ok"], false);
        assert_eq!(j["findings"][1]["severity"], "fail");
        assert_eq!(j["findings"][1]["fix"], "do this\nthen that");
        assert!(j["findings"][0].get("fix").is_none());
        assert_eq!(worst(&f), Severity::Fail);
    }
}
