//! `flatlan-lab mdns-browse`: one mDNS browse from the namespace this
//! process runs in, for a pod on the real cluster (scripts/test-cluster-
//! install runs it as a pod from a throwaway image): issue 14's "pods
//! discover an avahi service on the LAN", asked the way a pod's own
//! software would ask, by multicast from the pod's LAN address.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netns_testkit::probe::{mdns_query_here, MdnsAnswer};

/// What `mdns-browse` takes.
#[derive(clap::Args)]
pub struct MdnsBrowseArgs {
    /// The service type, e.g. `_http._tcp.local`.
    #[arg(long, default_value = "_http._tcp.local")]
    pub service: String,
    /// The address whose interface queries leave by (default: the first
    /// IPv4 address not on lo).
    #[arg(long)]
    pub ifaddr: Option<Ipv4Addr>,
    /// Seconds to keep asking.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// The first IPv4 address of this namespace that is not loopback.
fn first_lan_address() -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let ip = ifa.address?.as_sockaddr_in()?.ip();
        (!ip.is_loopback()).then_some(ip)
    })
}

/// One line per instance: `found NAME host=H port=P addrs=A,B txt=T,U`.
pub fn render(answers: &[MdnsAnswer]) -> String {
    let mut out = String::new();
    for a in answers {
        let addrs: Vec<String> = a.addrs.iter().map(IpAddr::to_string).collect();
        out.push_str(&format!(
            "found {} host={} port={} addrs={} txt={}\n",
            a.instance,
            a.host.as_deref().unwrap_or("-"),
            a.port.map_or("-".to_owned(), |p| p.to_string()),
            addrs.join(","),
            a.txt.join(","),
        ));
    }
    out
}

/// Browses and prints; an error when no instance was fully resolved, so
/// a pod running this fails visibly.
pub fn run(a: &MdnsBrowseArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ifaddr = match a.ifaddr {
        Some(ip) => ip,
        None => first_lan_address().ok_or("no IPv4 address besides loopback here")?,
    };
    let answers = mdns_query_here(ifaddr, &a.service, Duration::from_secs(a.timeout))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "browsing {} from {ifaddr}", a.service);
    let _ = write!(out, "{}", render(&answers));
    let _ = out.flush();
    if answers.iter().any(MdnsAnswer::is_resolved) {
        Ok(())
    } else {
        Err(format!("no resolved {} instance within {} s", a.service, a.timeout).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_instance_with_its_fields() {
        let a = MdnsAnswer {
            instance: "Lab Printer._http._tcp.local".into(),
            host: Some("lan-device.local".into()),
            port: Some(8080),
            txt: vec!["model=x".into()],
            addrs: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 77, 50))],
        };
        let b = MdnsAnswer {
            instance: "Half._http._tcp.local".into(),
            host: None,
            port: None,
            txt: vec![],
            addrs: vec![],
        };
        assert_eq!(
            render(&[a, b]),
            "found Lab Printer._http._tcp.local host=lan-device.local port=8080 addrs=192.168.77.50 txt=model=x\n\
             found Half._http._tcp.local host=- port=- addrs= txt=\n"
        );
    }
}
