//! The CNI_* environment, parsed and validated before anything is touched.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(Error::InvalidEnv {
                    var: "CNI_COMMAND",
                    reason: format!(
                        "unknown command {other:?}; expected ADD, DEL, CHECK, VERSION, STATUS or GC"
                    ),
                })
            }
        })
    }
}

/// One attachment's identity and where it lives.
#[derive(Clone, Debug, Default)]
pub struct Attachment {
    pub container_id: String,
    /// Empty on DEL when the runtime no longer has the namespace.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: HashMap<String, String>,
}

impl Attachment {
    /// The sticky identity. Kubernetes runtimes send namespace and name;
    /// podman sends only `K8S_POD_NAME`, the container's name, which is as
    /// unique on its host as namespace/name in a cluster. So it counts,
    /// with the empty namespace: a container recreated under its name gets
    /// its address back, and no Kubernetes namespace is empty, so the two
    /// kinds of key never meet (README, "Running under podman").
    pub fn pod(&self) -> Option<flatlan_ipam::PodRef> {
        let name = self.args.get("K8S_POD_NAME").filter(|n| !n.is_empty())?;
        Some(flatlan_ipam::PodRef {
            namespace: self
                .args
                .get("K8S_POD_NAMESPACE")
                .cloned()
                .unwrap_or_default(),
            name: name.clone(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub attachment: Attachment,
}

impl Env {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let command = Command::parse(&required(&get, "CNI_COMMAND")?)?;
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let mut attachment = Attachment::default();
        if per_attachment {
            attachment.container_id = required(&get, "CNI_CONTAINERID")?;
            attachment.ifname = required(&get, "CNI_IFNAME")?;
            validate_ifname(&attachment.ifname)?;
            attachment.netns = get("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from);
            if attachment.netns.is_none() && command != Command::Del {
                return Err(Error::InvalidEnv {
                    var: "CNI_NETNS",
                    reason: "required for ADD and CHECK".into(),
                });
            }
            attachment.args = parse_args(&get("CNI_ARGS").unwrap_or_default())?;
        }
        Ok(Env {
            command,
            attachment,
        })
    }
}

fn required(get: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<String> {
    match get(var) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Error::InvalidEnv {
            var,
            reason: "missing or empty".into(),
        }),
    }
}

/// Linux interface names: 1-15 bytes, no '/', whitespace or ':' (dev_valid_name()).
fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnv {
            var: "CNI_IFNAME",
            reason: format!("{name:?} is not a valid Linux interface name (1-15 characters, no '/', ':' or spaces)"),
        })
    }
}

/// CNI_ARGS is `K=V;K=V` (SPEC.md "Parameters").
fn parse_args(s: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| Error::InvalidEnv {
            var: "CNI_ARGS",
            reason: format!("{pair:?} is not of the form KEY=VALUE"),
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn add_requires_everything() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code(), 4);
        assert!(e.to_string().contains("CNI_CONTAINERID"));
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("CNI_NETNS"));
    }

    #[test]
    fn del_tolerates_missing_netns_and_parses_args() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=home;K8S_POD_NAME=ha",
            ),
        ])
        .unwrap();
        assert!(e.attachment.netns.is_none());
        assert_eq!(e.attachment.pod().unwrap().key(), "home/ha");
        // podman: the container name alone.
        let mut podman = e.attachment.clone();
        podman.args.remove("K8S_POD_NAMESPACE");
        assert_eq!(podman.pod().unwrap().key(), "/ha");
        podman.args.insert("K8S_POD_NAME".into(), String::new());
        assert!(podman.pod().is_none());
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code(), 4);
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "a-very-long-interface-name"),
        ])
        .unwrap_err();
        assert_eq!(e.code(), 4);
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "novalue"),
        ])
        .unwrap_err();
        assert_eq!(e.code(), 4);
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn random_environment_never_panics(
            command in "[A-Z]{0,8}",
            container in "\\PC{0,40}",
            ifname in "\\PC{0,20}",
            netns in "\\PC{0,40}",
            args in "\\PC{0,80}",
        ) {
            let vars: HashMap<&str, String> = [
                ("CNI_COMMAND", command), ("CNI_CONTAINERID", container),
                ("CNI_IFNAME", ifname), ("CNI_NETNS", netns), ("CNI_ARGS", args),
            ].into_iter().collect();
            if let Ok(env) = Env::from_vars(|k| vars.get(k).cloned()) {
                let _ = env.attachment.pod();
            }
        }
    }
}
