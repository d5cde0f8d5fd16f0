//! What the runtime asks for besides the config: addresses (`IP=`, the
//! `ips` capability) and a MAC (`MAC=`, the `mac` capability), each parsed
//! once, before ADD changes anything.

use std::net::IpAddr;

use flatlan_l2::mac::MacAddr;

use super::NetConf;
use crate::error::{Error, Result};

/// A pod MAC must be one a host can own: unicast and not all zeros.
pub(super) fn parse_mac(s: &str) -> std::result::Result<MacAddr, String> {
    let mac: MacAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if mac.is_zero() {
        return Err(format!(
            "{s} is the all-zero MAC, which no interface can own"
        ));
    }
    if mac.is_multicast() {
        return Err(format!(
            "{s} is a multicast or broadcast MAC (the first octet is odd); a pod needs a unicast one"
        ));
    }
    Ok(mac)
}

impl NetConf {
    /// The MAC the runtime asked for: the `mac` capability, else `MAC=` in
    /// CNI_ARGS (the reference bridge plugin's order). Both were validated
    /// before any change; an invalid `MAC=` is a code-4 error.
    pub fn requested_mac(&self, args_mac: Option<&str>) -> Result<Option<MacAddr>> {
        if let Some(m) = &self.runtime_config.mac {
            return parse_mac(m)
                .map(Some)
                .map_err(|why| Error::InvalidConfig(format!("runtimeConfig.mac: {why}")));
        }
        match args_mac.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => parse_mac(m).map(Some).map_err(|why| Error::InvalidEnv {
                var: "CNI_ARGS",
                reason: format!("MAC: {why}"),
            }),
            None => Ok(None),
        }
    }

    /// Addresses the runtime asked for (runtimeConfig `ips`, or CNI_ARGS `IP=`).
    pub fn requested_ips(&self, args_ip: Option<&str>) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        let from_args = args_ip.into_iter().flat_map(|s| s.split(','));
        for s in self
            .runtime_config
            .ips
            .iter()
            .map(String::as_str)
            .chain(from_args)
        {
            let s = s.trim();
            if s.is_empty() {
                continue;
            }
            let addr = s.split('/').next().unwrap_or(s);
            let ip: IpAddr = addr.parse().map_err(|_| {
                Error::InvalidConfig(format!("requested IP {s:?} is not an IP address"))
            })?;
            out.push(ip);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{base, parse};

    #[test]
    fn requested_macs_must_be_unicast_and_not_zero() {
        let c = parse(base()).unwrap();
        assert_eq!(
            c.requested_mac(Some("02:00:00:00:00:01")).unwrap(),
            Some(MacAddr([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(c.requested_mac(None).unwrap(), None);
        for bad in [
            "00:00:00:00:00:00",
            "01:00:5e:00:00:fb",
            "ff:ff:ff:ff:ff:ff",
            "nope",
        ] {
            let e = c.requested_mac(Some(bad)).unwrap_err();
            assert_eq!(e.code(), 4, "{bad}: {e}");
            assert!(e.to_string().contains("MAC"), "{e}");
            let mut v = base();
            v["runtimeConfig"] = serde_json::json!({ "mac": bad });
            let e = parse(v).unwrap_err();
            assert_eq!(e.code(), 7, "{bad}: {e}");
            assert!(e.to_string().contains("runtimeConfig.mac"), "{e}");
        }
    }

    #[test]
    fn requested_ips_from_both_sources() {
        let mut v = base();
        v["runtimeConfig"] = serde_json::json!({"ips": ["192.168.2.215/24"]});
        let c = parse(v).unwrap();
        let ips = c.requested_ips(Some("192.168.2.216")).unwrap();
        assert_eq!(ips.len(), 2);
        assert_eq!(c.requested_ips(Some("nope")).unwrap_err().code(), 7);
    }
}
