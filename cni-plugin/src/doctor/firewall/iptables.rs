//! `iptables-save` output (the filter table's INPUT chain and the chains
//! it jumps to) into the rule language of [`super`].

use super::{Chain, Rule, Ruleset, Tri, Verdict};

/// Splits a rule line into words, keeping `"quoted comments"` whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn ports(list: &str, port: u16) -> Tri {
    let hit = list.split(',').any(|p| match p.split_once(':') {
        Some((a, b)) => {
            let a = a.parse().unwrap_or(0);
            let b = b.parse().unwrap_or(u16::MAX);
            (a..=b).contains(&port)
        }
        None => p.parse() == Ok(port),
    });
    if hit {
        Tri::Yes
    } else if list
        .split([',', ':'])
        .all(|p| p.is_empty() || p.parse::<u16>().is_ok())
    {
        Tri::No
    } else {
        Tri::Maybe
    }
}

fn rule(args: &[String], port: u16) -> (String, Rule) {
    let chain = args.first().cloned().unwrap_or_default();
    let mut matches = Tri::Yes;
    let mut verdict = Verdict::Continue;
    let mut neg = false;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        let val = args.get(i + 1).map(String::as_str).unwrap_or_default();
        let mut took_value = true;
        let t = match a {
            "!" => {
                neg = true;
                i += 1;
                continue;
            }
            "-p" | "--protocol" => Some(if val == "udp" || val == "17" {
                Tri::Yes
            } else {
                Tri::No
            }),
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                Some(ports(val, port))
            }
            // --ports is either end: a hit may be the source port.
            "--ports" => Some(match ports(val, port) {
                Tri::Yes => Tri::Yes,
                _ => Tri::Maybe,
            }),
            "-i" | "--in-interface" => Some(if val == "lo" { Tri::No } else { Tri::Maybe }),
            "--ctstate" | "--state" => Some(if val.split(',').any(|s| s == "NEW") {
                Tri::Yes
            } else {
                Tri::No
            }),
            "-m" | "--match" | "--comment" => None,
            "-j" | "-g" | "--jump" | "--goto" => {
                verdict = match val {
                    "ACCEPT" => Verdict::Accept,
                    "DROP" | "REJECT" => Verdict::Drop,
                    "RETURN" => Verdict::Return,
                    "LOG" | "NFLOG" | "MARK" | "CONNMARK" => Verdict::Continue,
                    c if a.starts_with("-g") || a == "--goto" => Verdict::Goto(c.to_string()),
                    c => Verdict::Jump(c.to_string()),
                };
                None
            }
            // Target options (--reject-with ...) and anything else with
            // a value: a match doctor does not decide.
            s if s.starts_with("--reject") || s.starts_with("--log") => None,
            s if s.starts_with('-') => {
                took_value = !val.starts_with('-') && !val.is_empty();
                Some(Tri::Maybe)
            }
            _ => {
                took_value = false;
                None
            }
        };
        if let Some(t) = t {
            matches = matches.and(if neg { t.not() } else { t });
        }
        neg = false;
        i += if took_value { 2 } else { 1 };
    }
    (
        chain,
        Rule {
            matches,
            verdict,
            text: args.join(" "),
        },
    )
}

/// The filter table of one `iptables-save` dump.
pub fn parse(text: &str, port: u16, name: &str) -> Option<Ruleset> {
    let mut rs = Ruleset {
        source: name.to_string(),
        chains: Vec::new(),
    };
    let mut in_filter = false;
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            in_filter = t == "filter";
        } else if !in_filter {
            continue;
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut w = decl.split_whitespace();
            let name = w.next().unwrap_or_default().to_string();
            let policy = w.next().unwrap_or("-");
            rs.chains.push(Chain {
                base_drop: (name == "INPUT").then_some(policy == "DROP"),
                name,
                rules: Vec::new(),
            });
        } else if let Some(r) = line.strip_prefix("-A ") {
            let (chain, rule) = rule(&words(r), port);
            if let Some(c) = rs.chains.iter_mut().find(|c| c.name == chain) {
                c.rules.push(rule);
            }
        }
    }
    (!rs.chains.is_empty()).then_some(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::finding::Severity;
    use crate::doctor::firewall::judge;

    fn verdict(save: &str) -> Severity {
        let rs: Vec<Ruleset> = parse(save, 7946, "iptables").into_iter().collect();
        judge(&rs, 7946).severity
    }

    #[test]
    fn reads_iptables_save() {
        let drop = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 7946 -m comment --comment \"no gossip\" -j DROP\nCOMMIT\n";
        assert_eq!(verdict(drop), Severity::Fail);
        assert_eq!(verdict(&drop.replace("7946", "7000:8000")), Severity::Fail);
        assert_eq!(
            verdict(&drop.replace("-p udp -m udp", "-p tcp -m tcp")),
            Severity::Ok
        );
        let policy = "*filter\n:INPUT DROP [0:0]\n:fw-in - [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A INPUT -j fw-in\n-A fw-in -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
        assert_eq!(verdict(policy), Severity::Fail);
        let open = policy.replace(
            "-A fw-in -p tcp",
            "-A fw-in -p udp -m multiport --dports 7472,7946 -j ACCEPT\n-A fw-in -p tcp",
        );
        assert_eq!(verdict(&open), Severity::Ok);
        let from = policy.replace(
            "-A fw-in -p tcp",
            "-A fw-in -s 192.168.2.0/24 -j ACCEPT\n-A fw-in -p tcp",
        );
        assert_eq!(verdict(&from), Severity::Warn);
        assert_eq!(
            verdict("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
            Severity::Ok
        );
    }

    /// ufw's chains after `ufw default deny incoming`, `ufw allow 22/tcp`
    /// and `ufw allow 7946/udp`. ufw-not-local returns on `addrtype
    /// --dst-type LOCAL` (undecided) before its DROP: that DROP is not a
    /// sure one, and the user rule's accept is reached.
    #[test]
    fn ufw_with_the_port_allowed_is_not_a_failure() {
        let save = include_str!("testdata/ufw.iptables-save");
        let allowed = verdict(save);
        assert_ne!(allowed, Severity::Fail);
        let without = save.replace(
            "-A ufw-user-input -p udp -m udp --dport 7946 -j ACCEPT\n",
            "",
        );
        assert_ne!(without, save);
        assert_eq!(verdict(&without), Severity::Fail);
    }
}
