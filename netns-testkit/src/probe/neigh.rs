use std::net::IpAddr;
use std::process::Command;

use serde::Deserialize;

use crate::command::{self, DEFAULT_TIMEOUT};
use crate::error::{Error, Result};
use crate::netns::Netns;

/// One neighbour (ARP/NDP) cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub ip: IpAddr,
    /// Absent for INCOMPLETE and FAILED entries.
    pub mac: Option<String>,
    /// Kernel states, e.g. `["REACHABLE"]` or `["STALE"]`.
    pub state: Vec<String>,
}

#[derive(Deserialize)]
struct RawNeighbor {
    dst: String,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

/// The neighbour cache of `dev` in `ns` (`ip -j neigh show dev DEV`).
pub fn arp_neighbors(ns: &Netns, dev: &str) -> Result<Vec<Neighbor>> {
    let mut cmd = Command::new("ip");
    cmd.args(["-j", "-n", ns.name(), "neigh", "show", "dev", dev]);
    let out = command::run_ok(cmd, None, DEFAULT_TIMEOUT)?;
    parse_neighbors(&out.stdout)
}

fn parse_neighbors(json: &[u8]) -> Result<Vec<Neighbor>> {
    // iproute2 prints nothing at all (not `[]`) for an empty table.
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let raw: Vec<RawNeighbor> = serde_json::from_slice(json).map_err(|source| Error::Json {
        what: "parse `ip -j neigh` output".to_owned(),
        source,
    })?;
    raw.into_iter()
        .map(|r| {
            let ip = r.dst.parse().map_err(|_| Error::Probe {
                what: "parse `ip -j neigh` output".to_owned(),
                detail: format!("bad address {:?}", r.dst),
            })?;
            Ok(Neighbor {
                ip,
                mac: r.lladdr,
                state: r.state,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let j = br#"[{"dst":"192.168.2.1","lladdr":"aa:bb:cc:dd:ee:ff","state":["REACHABLE"]},
                     {"dst":"192.168.2.99","state":["FAILED"]},
                     {"dst":"fe80::1","lladdr":"aa:bb:cc:dd:ee:01","router":null,"state":["STALE"]}]"#;
        let n = parse_neighbors(j).expect("parses");
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(n[1].mac, None);
        assert_eq!(n[1].state, vec!["FAILED".to_owned()]);
        assert!(n[2].ip.is_ipv6());
        assert!(parse_neighbors(b"").expect("empty ok").is_empty());
        assert!(parse_neighbors(b"{not json").is_err());
        assert!(parse_neighbors(br#"[{"dst":"nope"}]"#).is_err());
    }
}
