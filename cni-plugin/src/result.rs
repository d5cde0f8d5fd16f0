//! CNI results, shaped for the version the runtime asked for.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
}

impl CniResult {
    /// 0.4.0 carries `version` on each IP; 1.0.0 dropped it (SPEC.md
    /// "Version considerations"). Everything else is shared.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let legacy = cni_version.starts_with("0.");
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.name, "mac": i.mac});
                if let Some(sb) = &i.sandbox {
                    v["sandbox"] = sb.clone().into();
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({"address": ip.address.to_string(), "interface": ip.interface});
                if let Some(gw) = ip.gateway {
                    v["gateway"] = gw.to_string().into();
                }
                if legacy {
                    let fam = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    v["version"] = fam.into();
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({"dst": r.dst.to_string()});
                if let Some(gw) = r.gw {
                    v["gw"] = gw.to_string().into();
                }
                v
            })
            .collect();
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_results_carry_ip_version() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:c0:a8:02:d2".into(),
                sandbox: Some("/run/netns/p".into()),
            }],
            ips: vec![IpConfig {
                address: "192.168.2.210/24".parse().unwrap(),
                gateway: Some("192.168.2.1".parse().unwrap()),
                interface: 0,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("192.168.2.1".parse().unwrap()),
            }],
        };
        assert_eq!(r.to_json("0.4.0")["ips"][0]["version"], "4");
        let v = r.to_json("1.1.0");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][0]["sandbox"], "/run/netns/p");
        assert_eq!(v["routes"][0]["gw"], "192.168.2.1");
    }
}
