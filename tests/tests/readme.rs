//! The README's k3s steps, checked against the rules real clusters enforce
//! (issue 10, finding 12): a reader who copies them must get a working
//! cluster, not a kube-controller-manager that exits at start.

use std::net::IpAddr;

const README: &str = include_str!("../../README.md");

/// Every `--cluster-cidr=` in the README, with the text of the paragraph or
/// code block it stands in.
fn cluster_cidr_mentions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in README.split("\n\n") {
        let mut rest = block;
        while let Some(i) = rest.find("--cluster-cidr=") {
            let tail = &rest[i + "--cluster-cidr=".len()..];
            let value: String = tail
                .chars()
                .take_while(|c| c.is_ascii_hexdigit() || ".:/,".contains(*c))
                .collect();
            out.push((value, block.to_string()));
            rest = tail;
        }
    }
    out
}

/// The node mask a block sets for one family: `node-cidr-mask-size-ipv4=`
/// (or `-ipv6=`), or the single-stack `node-cidr-mask-size=`.
fn node_mask(block: &str, v4: bool, single_stack: bool) -> Option<u8> {
    let keys: &[&str] = match (v4, single_stack) {
        (true, true) => &["node-cidr-mask-size=", "node-cidr-mask-size-ipv4="],
        (true, false) => &["node-cidr-mask-size-ipv4="],
        (false, true) => &["node-cidr-mask-size=", "node-cidr-mask-size-ipv6="],
        (false, false) => &["node-cidr-mask-size-ipv6="],
    };
    keys.iter().find_map(|k| {
        let i = block.find(k)?;
        let digits: String = block[i + k.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// kube-controller-manager's defaults: /24 for IPv4 and /64 for IPv6. A
/// cluster CIDR longer than the node mask makes it exit at start with "mask
/// size of cluster CIDR must be less than or equal to --node-cidr-mask-size".
#[test]
fn every_cluster_cidr_comes_with_a_node_mask_that_fits_it() {
    let mentions = cluster_cidr_mentions();
    assert!(!mentions.is_empty(), "the README gives no --cluster-cidr");
    for (value, block) in mentions {
        let cidrs: Vec<&str> = value.split(',').collect();
        let single_stack = cidrs.len() == 1;
        for cidr in cidrs {
            let (addr, len) = cidr
                .split_once('/')
                .unwrap_or_else(|| panic!("--cluster-cidr={value} is not a CIDR"));
            let v4 = addr
                .parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("--cluster-cidr={value}: {e}"))
                .is_ipv4();
            let len: u8 = len.parse().expect("prefix length");
            let default = if v4 { 24 } else { 64 };
            let mask = node_mask(&block, v4, single_stack).unwrap_or(default);
            assert!(
                len <= mask,
                "--cluster-cidr={value}: {cidr} is longer than the node mask /{mask}; \
                 kube-controller-manager would exit. The paragraph:\n{block}"
            );
        }
    }
}

/// What a reader needs beyond the k3s flags: the node agent that writes the
/// slice, how it finds the API, kube-proxy's cluster CIDR and forwarding.
#[test]
fn the_k3s_steps_cover_the_node_agent_kube_proxy_and_forwarding() {
    let k3s = README
        .split("## Installing on k3s")
        .nth(1)
        .expect("the README has an 'Installing on k3s' section");
    for needle in [
        "flatlan-speaker node-agent",
        "--range-file",
        "rangeFile",
        "KUBECONFIG",
        "service account",
        "kube-proxy",
        "net.ipv4.ip_forward=1",
    ] {
        assert!(k3s.contains(needle), "the k3s steps never mention {needle}");
    }
}

#[test]
fn the_sysctl_file_turns_forwarding_on() {
    let conf = include_str!("../../deploy/sysctl/90-flatlan.conf");
    assert!(conf
        .lines()
        .any(|l| l.replace(' ', "") == "net.ipv4.ip_forward=1"));
}
