//! Is the speaker's heartbeat port open in this node's input path?
//!
//! The host firewall is read in the two forms it takes: `nft -j list
//! ruleset` (nftables, and iptables-nft, which is Debian's default
//! iptables) and `iptables-legacy-save` (the legacy tables nft cannot
//! see). Both become one small rule language that is walked for a new UDP
//! packet to the port from another node: a match doctor can decide
//! (protocol, destination port, conntrack state, `lo`) is decided; any
//! other (source address, input interface, sets, xt matches) makes the
//! verdict a "may", reported as WARN with the rule, never guessed.

mod iptables;
mod nft;

use std::process::Command;

use super::finding::Finding;

/// Whether a rule's matches hold for the heartbeat packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    pub fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Maybe, _) | (_, Tri::Maybe) => Tri::Maybe,
            _ => Tri::Yes,
        }
    }
    pub fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// drop or reject.
    Drop,
    Jump(String),
    Goto(String),
    Return,
    /// counter, log, a verdict map doctor does not evaluate: go on.
    Continue,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub matches: Tri,
    pub verdict: Verdict,
    /// The rule as the user wrote it (or close), for the report.
    pub text: String,
}

#[derive(Clone, Debug, Default)]
pub struct Chain {
    pub name: String,
    /// Some for a base chain on the input hook: its policy (drop: true).
    pub base_drop: Option<bool>,
    pub rules: Vec<Rule>,
}

/// One ruleset (a table family, or legacy iptables' filter table).
#[derive(Clone, Debug, Default)]
pub struct Ruleset {
    pub source: String,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Default)]
struct Walk {
    maybe_accept: Vec<String>,
    maybe_drop: Vec<String>,
}

enum End {
    Accept,
    Drop(String),
    Fall,
}

fn walk(rs: &Ruleset, chain: &Chain, depth: u8, w: &mut Walk) -> End {
    // Once the packet may have left this chain (an undecided RETURN, or an
    // undecided goto whose chain falls through), no later rule of it is
    // sure to see the packet: ufw-not-local returns on `addrtype LOCAL`
    // before its DROP, and that DROP must not count as a sure one.
    let mut unsure = false;
    for r in &chain.rules {
        if r.matches == Tri::No {
            continue;
        }
        let sure = r.matches == Tri::Yes && !unsure;
        let label = format!("{} chain {}: {}", rs.source, chain.name, r.text);
        match &r.verdict {
            Verdict::Accept if sure => return End::Accept,
            Verdict::Accept => w.maybe_accept.push(label),
            Verdict::Drop if sure => return End::Drop(label),
            Verdict::Drop => w.maybe_drop.push(label),
            Verdict::Return if sure => return End::Fall,
            Verdict::Return => unsure = true,
            Verdict::Jump(t) | Verdict::Goto(t) => {
                let Some(c) = rs.chains.iter().find(|c| &c.name == t) else {
                    continue;
                };
                if depth > 16 {
                    continue;
                }
                let goto = matches!(r.verdict, Verdict::Goto(_));
                let mut inner = Walk::default();
                let end = walk(rs, c, depth + 1, &mut inner);
                w.maybe_accept.extend(inner.maybe_accept);
                w.maybe_drop.extend(inner.maybe_drop);
                match end {
                    End::Accept if sure => return End::Accept,
                    End::Accept => w.maybe_accept.push(label),
                    End::Drop(why) if sure => return End::Drop(why),
                    End::Drop(why) => w.maybe_drop.push(why),
                    End::Fall if sure && goto => return End::Fall,
                    End::Fall if goto => unsure = true,
                    End::Fall => {}
                }
            }
            _ => {}
        }
    }
    End::Fall
}

/// The verdict for the heartbeat port over every input-hook base chain
/// (a packet must pass all of them).
pub fn judge(rulesets: &[Ruleset], port: u16) -> Finding {
    let mut dropped = Vec::new();
    let mut maybe = Walk::default();
    let mut bases = 0;
    for rs in rulesets {
        for c in rs.chains.iter().filter(|c| c.base_drop.is_some()) {
            bases += 1;
            let mut w = Walk::default();
            let end = walk(rs, c, 0, &mut w);
            let end = match end {
                End::Fall if c.base_drop == Some(true) => End::Drop(format!(
                    "{} chain {}: policy drop, and no rule accepts UDP port {port}",
                    rs.source, c.name
                )),
                e => e,
            };
            match end {
                End::Drop(why) if w.maybe_accept.is_empty() => dropped.push(why),
                End::Drop(why) => {
                    maybe.maybe_drop.push(why);
                    maybe.maybe_accept.extend(w.maybe_accept);
                }
                _ => maybe.maybe_drop.extend(w.maybe_drop),
            }
        }
    }
    let fix = format!(
        "accept it before the drop: nft insert rule inet filter input udp dport {port} accept\n\
         (iptables: iptables -I INPUT -p udp --dport {port} -j ACCEPT; ufw: ufw allow {port}/udp; firewalld: firewall-cmd --permanent --add-port={port}/udp && firewall-cmd --reload)\n\
         narrower: accept only from the other nodes' addresses (and 239.255.70.76 with multicast)"
    );
    let why = format!("speakers exchange heartbeats on UDP {port}; a node that hears none thinks its peers are dead and announces every LB IP itself, so two nodes answer ARP for the same address");
    if !dropped.is_empty() {
        return Finding::fail(
            "firewall",
            format!(
                "UDP port {port} (heartbeats) is dropped: {}",
                dropped.join("; ")
            ),
            why,
            fix,
        );
    }
    if !maybe.maybe_drop.is_empty() {
        let mut what = format!(
            "UDP port {port} (heartbeats) may be dropped, depending on matches doctor cannot decide: {}",
            maybe.maybe_drop.join("; ")
        );
        if !maybe.maybe_accept.is_empty() {
            what += &format!(" (unless accepted by: {})", maybe.maybe_accept.join("; "));
        }
        return Finding::warn("firewall", what, why, fix);
    }
    Finding::ok(
        "firewall",
        if bases == 0 {
            format!("no input-hook chains: UDP port {port} (heartbeats) is not filtered")
        } else {
            format!("UDP port {port} (heartbeats) passes the input chains ({bases} base chain(s))")
        },
    )
}

fn output(cmd: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

/// Reads the firewall of this namespace and judges the port; `notes`
/// gets what could not be seen.
pub fn check(port: u16, notes: &mut Vec<String>) -> Finding {
    let mut rulesets = Vec::new();
    let mut seen_any = false;
    match output("nft", &["-j", "list", "ruleset"]) {
        Ok(j) => match nft::parse(&j, port) {
            Ok(mut r) => {
                seen_any = true;
                rulesets.append(&mut r);
            }
            Err(e) => notes.push(format!("could not read nft's JSON ruleset: {e}")),
        },
        Err(e) => notes.push(format!("nftables not inspected ({e})")),
    }
    // Legacy iptables tables are invisible to nft; iptables-save is the
    // nft-backed one on Debian, already covered above unless nft is absent.
    let legacy = output("iptables-legacy-save", &[]);
    let plain = if seen_any {
        None
    } else {
        Some(output("iptables-save", &[]))
    };
    for (name, out) in [("iptables-legacy", Some(legacy)), ("iptables", plain)] {
        match out {
            Some(Ok(text)) => {
                seen_any = true;
                rulesets.extend(iptables::parse(&text, port, name));
            }
            Some(Err(e)) if name == "iptables" => {
                notes.push(format!("iptables not inspected ({e})"))
            }
            _ => {}
        }
    }
    notes.push(format!(
        "firewall: only this node's IPv4 input path is read (nft and legacy iptables); the router, switch, other nodes and cloud security groups can still block UDP {port}, and IPv6 heartbeats are not checked"
    ));
    if !seen_any {
        return Finding::warn(
            "firewall",
            format!(
                "cannot inspect the host firewall, so UDP port {port} (heartbeats) is unverified"
            ),
            "neither nft nor iptables-save could be run",
            "run flatlan doctor as root on a node with nft or iptables-save installed",
        );
    }
    judge(&rulesets, port)
}
