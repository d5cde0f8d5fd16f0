//! Kubernetes label selectors, checked once when an object is read and
//! then evaluated without failing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{Error, Result};

/// A set of labels (a Node's, a Service's, a Namespace's, a pool's).
pub type Labels = BTreeMap<String, String>;

/// One parsed `LabelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<(String, Op)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

impl Selector {
    /// Parses a selector; `field` names it in the error
    /// (`spec.nodeSelectors[1]`).
    pub fn parse(sel: &LabelSelector, field: &str) -> Result<Self> {
        let bad = |why: String| Error::BadSelector {
            field: field.to_string(),
            why,
        };
        let mut reqs: Vec<(String, Op)> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Op::In(BTreeSet::from([v.clone()]))))
            .collect();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            // The API server's own rules (apimachinery's NewRequirement).
            let op = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(bad(format!(
                        "matchExpressions[{i}]: operator {} needs at least one value",
                        e.operator
                    )))
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad(format!(
                        "matchExpressions[{i}]: operator {} takes no values",
                        e.operator
                    )))
                }
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(bad(format!(
                        "matchExpressions[{i}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    )))
                }
            };
            reqs.push((e.key.clone(), op));
        }
        Ok(Selector { reqs })
    }

    /// Parses a list of selectors, naming each by its index under `field`.
    pub fn parse_all(sels: &[LabelSelector], field: &str) -> Result<Vec<Self>> {
        sels.iter()
            .enumerate()
            .map(|(i, s)| Selector::parse(s, &format!("{field}[{i}]")))
            .collect()
    }

    /// Whether `labels` satisfy every requirement (an empty selector matches
    /// everything, as in Kubernetes).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|(k, op)| match (op, labels.get(k)) {
            (Op::In(vs), Some(v)) => vs.contains(v),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), v) => !v.is_some_and(|v| vs.contains(v)),
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
        })
    }
}

/// MetalLB's rule for a list of selectors: an empty list selects all, and
/// otherwise any one matching selector is enough.
pub fn any_match(sels: &[Selector], labels: &Labels) -> bool {
    sels.is_empty() || sels.iter().any(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            match_expressions: Some(vec![
                expr("arch", "In", &["amd64", "arm64"]),
                expr("spot", "DoesNotExist", &[]),
                expr("tier", "NotIn", &["edge"]),
            ]),
        };
        let s = Selector::parse(&sel, "nodeSelectors[0]").unwrap();
        assert!(s.matches(&labels(&[("zone", "a"), ("arch", "arm64")])));
        assert!(s.matches(&labels(&[
            ("zone", "a"),
            ("arch", "amd64"),
            ("tier", "core")
        ])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("arch", "amd64")])));
        assert!(!s.matches(&labels(&[("zone", "a")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("arch", "amd64"), ("spot", "")])));
        assert!(!s.matches(&labels(&[
            ("zone", "a"),
            ("arch", "amd64"),
            ("tier", "edge")
        ])));
        let exists = LabelSelector {
            match_expressions: Some(vec![expr("gpu", "Exists", &[])]),
            ..Default::default()
        };
        let e = Selector::parse(&exists, "x").unwrap();
        assert!(e.matches(&labels(&[("gpu", "")])));
        assert!(!e.matches(&labels(&[])));
    }

    #[test]
    fn empty_lists_select_all_and_any_one_is_enough() {
        assert!(any_match(&[], &labels(&[])));
        let a = Selector::parse(
            &LabelSelector {
                match_labels: Some(labels(&[("a", "1")])),
                ..Default::default()
            },
            "x",
        )
        .unwrap();
        let b = Selector::parse(
            &LabelSelector {
                match_labels: Some(labels(&[("b", "1")])),
                ..Default::default()
            },
            "x",
        )
        .unwrap();
        assert!(any_match(&[a.clone(), b.clone()], &labels(&[("b", "1")])));
        assert!(!any_match(&[a, b], &labels(&[("c", "1")])));
        assert!(Selector::default().matches(&labels(&[("anything", "x")])));
    }

    #[test]
    fn bad_selectors_name_the_field() {
        for (e, want) in [
            (expr("k", "In", &[]), "needs at least one value"),
            (expr("k", "Exists", &["v"]), "takes no values"),
            (expr("k", "Gt", &["1"]), "unknown operator \"Gt\""),
        ] {
            let sel = LabelSelector {
                match_expressions: Some(vec![e]),
                ..Default::default()
            };
            let err = Selector::parse_all(&[LabelSelector::default(), sel], "spec.nodeSelectors")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("spec.nodeSelectors[1]: matchExpressions[0]"),
                "{err}"
            );
            assert!(err.contains(want), "{err}");
        }
    }
}
