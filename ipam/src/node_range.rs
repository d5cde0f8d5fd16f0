//! The node-range file: this node's slice of the LAN, written by the node
//! agent from the Node's `spec.podCIDRs`. The CNI binary never talks to the
//! Kubernetes API (DESIGN.md §3); it only reads this file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::range::IpRange;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRange {
    /// One or more ranges or CIDRs (both families allowed).
    #[serde(alias = "podCIDRs")]
    pub ranges: Vec<IpRange>,
}

impl NodeRange {
    pub fn load(path: &Path) -> Result<NodeRange> {
        let bytes = std::fs::read(path).map_err(|e| Error::RangeFile {
            path: path.to_path_buf(),
            reason: format!("{e} (is the flatlan node agent running on this node?)"),
        })?;
        let nr: NodeRange = serde_json::from_slice(&bytes).map_err(|e| Error::RangeFile {
            path: path.to_path_buf(),
            reason: format!(
                "not valid JSON of the form {{\"ranges\": [\"192.168.2.208/28\"]}}: {e}"
            ),
        })?;
        if nr.ranges.is_empty() {
            return Err(Error::RangeFile {
                path: path.to_path_buf(),
                reason: "lists no ranges".into(),
            });
        }
        Ok(nr)
    }
}
