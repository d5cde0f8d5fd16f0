use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use nix::ifaddrs::getifaddrs;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
};

use crate::dns::{self, RData, Record};
use crate::error::{Error, Result};
use crate::netns::Netns;

/// The mDNS group and port (RFC 6762).
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const MDNS_PORT: u16 = 5353;
/// Queries are repeated this often: a responder that just started ignores
/// us until it has probed its names (about a second for avahi).
const REQUERY: Duration = Duration::from_millis(500);
/// After the first fully resolved answer, wait this long for other
/// responders before returning.
const SETTLE: Duration = Duration::from_millis(300);

/// One discovered service instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsAnswer {
    /// Full instance name, e.g. `Living Room Speaker._http._tcp.local`.
    pub instance: String,
    /// SRV target, e.g. `speaker.local`.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub txt: Vec<String>,
    /// A/AAAA records of `host`.
    pub addrs: Vec<IpAddr>,
}

impl MdnsAnswer {
    /// True once the instance has a port and an address.
    pub fn is_resolved(&self) -> bool {
        self.port.is_some() && !self.addrs.is_empty()
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Joins PTR → SRV/TXT → A/AAAA records into answers for `service`.
pub(crate) fn assemble(service: &str, records: &[Record]) -> Vec<MdnsAnswer> {
    let mut out: Vec<MdnsAnswer> = Vec::new();
    for r in records {
        if let RData::Ptr(instance) = &r.data {
            if same_name(&r.name, service) && !out.iter().any(|a| same_name(&a.instance, instance))
            {
                out.push(MdnsAnswer {
                    instance: instance.clone(),
                    host: None,
                    port: None,
                    txt: Vec::new(),
                    addrs: Vec::new(),
                });
            }
        }
    }
    for a in &mut out {
        for r in records.iter().filter(|r| same_name(&r.name, &a.instance)) {
            match &r.data {
                RData::Srv { port, target, .. } => {
                    a.port = Some(*port);
                    a.host = Some(target.clone());
                }
                RData::Txt(t) if a.txt.is_empty() => a.txt = t.clone(),
                _ => {}
            }
        }
        if let Some(host) = &a.host {
            for r in records.iter().filter(|r| same_name(&r.name, host)) {
                let ip = match r.data {
                    RData::A(v4) => IpAddr::V4(v4),
                    RData::Aaaa(v6) => IpAddr::V6(v6),
                    _ => continue,
                };
                if !a.addrs.contains(&ip) {
                    a.addrs.push(ip);
                }
            }
        }
    }
    out
}

/// The interface that holds `addr` in the current (namespace) thread.
fn interface_with(addr: Ipv4Addr) -> Option<String> {
    getifaddrs().ok()?.find_map(|ifa| {
        let a = ifa.address?;
        let sin = a.as_sockaddr_in()?;
        (sin.ip() == addr).then_some(ifa.interface_name)
    })
}

/// An mDNS socket, made inside the namespace: bound to 0.0.0.0:5353 with
/// SO_REUSEADDR (so it coexists with an avahi-daemon in the same
/// namespace, which sets it too), bound to the interface that owns
/// `ifaddr` (so queries leave by that interface whatever the routes say:
/// there is no IP_MULTICAST_IF in nix's safe API), and joined to
/// 224.0.0.251 there.
fn mdns_socket(ifaddr: Ipv4Addr) -> Result<UdpSocket> {
    let ifname = interface_with(ifaddr).ok_or_else(|| Error::Probe {
        what: "mDNS query".to_owned(),
        detail: format!("no interface has address {ifaddr} in this namespace"),
    })?;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::sys("mDNS socket", e))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| Error::sys("SO_REUSEADDR", e))?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(&ifname),
    )
    .map_err(|e| Error::sys(format!("SO_BINDTODEVICE {ifname}"), e))?;
    let any = SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any)
        .map_err(|e| Error::sys("bind 0.0.0.0:5353", e))?;
    let sock = UdpSocket::from(fd);
    let io = |what: &'static str| move |e| Error::io(what, e);
    sock.join_multicast_v4(&MDNS_GROUP, &ifaddr)
        .map_err(io("join 224.0.0.251"))?;
    // RFC 6762 §11: mDNS packets carry TTL 255; some responders check it.
    sock.set_multicast_ttl_v4(255)
        .map_err(io("multicast TTL"))?;
    sock.set_multicast_loop_v4(true)
        .map_err(io("multicast loop"))?;
    Ok(sock)
}

/// Asks, by multicast from inside `ns`, who offers `service_type` (e.g.
/// `_http._tcp.local`), on the interface holding `ifaddr`.
///
/// The query is a QM question sent from port 5353, so responders answer by
/// multicast: a result proves multicast flows both ways. It is repeated
/// every 500 ms; answers (PTR, SRV, TXT, A) are collected until one
/// instance is fully resolved plus a short settling time, or `timeout`.
/// Returns whatever was found, possibly nothing; only socket errors fail.
pub fn mdns_query(
    ns: &Netns,
    ifaddr: Ipv4Addr,
    service_type: &str,
    timeout: Duration,
) -> Result<Vec<MdnsAnswer>> {
    let sock = ns.run(|| mdns_socket(ifaddr))??;
    collect(&sock, ns.name(), service_type, timeout)
}

/// [`mdns_query`] from the caller's own network namespace: a process that
/// already runs where the query must come from (a pod on a real cluster,
/// `flatlan-lab mdns-browse`) has no named namespace to enter.
pub fn mdns_query_here(
    ifaddr: Ipv4Addr,
    service_type: &str,
    timeout: Duration,
) -> Result<Vec<MdnsAnswer>> {
    collect(
        &mdns_socket(ifaddr)?,
        "this namespace",
        service_type,
        timeout,
    )
}

/// Queries every 500 ms on `sock` and gathers the answers (the loop of
/// [`mdns_query`]); `from` names the namespace in errors.
fn collect(
    sock: &UdpSocket,
    from: &str,
    service_type: &str,
    timeout: Duration,
) -> Result<Vec<MdnsAnswer>> {
    let query = dns::build_query(0, service_type, dns::TYPE_PTR, false)?;
    let io = |e| Error::io(format!("mDNS query from {from}"), e);
    let group = SocketAddrV4::new(MDNS_GROUP, MDNS_PORT);

    let started = Instant::now();
    let deadline = crate::process::deadline_after(timeout);
    let mut settle_until: Option<Instant> = None;
    let mut next_query = started;
    let mut records: Vec<Record> = Vec::new();
    let mut buf = [0u8; 9000];
    loop {
        let now = Instant::now();
        let stop_at = settle_until.map_or(deadline, |s| s.min(deadline));
        if now >= stop_at {
            break;
        }
        if now >= next_query && settle_until.is_none() {
            sock.send_to(&query, group).map_err(io)?;
            next_query = now + REQUERY;
        }
        let wake = if settle_until.is_some() {
            stop_at
        } else {
            next_query.min(stop_at)
        };
        sock.set_read_timeout(Some(
            wake.saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        ))
        .map_err(io)?;
        match sock.recv_from(&mut buf) {
            Ok((n, src)) => {
                let Some(pkt) = buf.get(..n) else { continue };
                match dns::parse(pkt) {
                    Ok(m) if m.is_response => {
                        tracing::trace!(%src, records = m.records.len(), "mDNS response");
                        records.extend(m.records);
                        if settle_until.is_none()
                            && assemble(service_type, &records)
                                .iter()
                                .any(MdnsAnswer::is_resolved)
                        {
                            settle_until = Some(Instant::now() + SETTLE);
                        }
                    }
                    Ok(_) => {} // a query, maybe our own looped back
                    Err(e) => tracing::debug!(%src, error = %e, "ignoring malformed mDNS packet"),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io(e)),
        }
    }
    let answers = assemble(service_type, &records);
    tracing::debug!(service = service_type, found = answers.len(), elapsed = ?started.elapsed(), "mDNS query done");
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, data: RData) -> Record {
        Record {
            name: name.into(),
            rtype: 0,
            class: 1,
            cache_flush: false,
            ttl: 120,
            data,
        }
    }

    #[test]
    fn joins_ptr_srv_txt_and_a() {
        let recs = vec![
            rec(
                "_http._tcp.local",
                RData::Ptr("Speaker._http._tcp.local".into()),
            ),
            rec(
                "_ipp._tcp.local",
                RData::Ptr("Printer._ipp._tcp.local".into()),
            ),
            rec(
                "speaker._http._tcp.local",
                RData::Srv {
                    priority: 0,
                    weight: 0,
                    port: 8080,
                    target: "dev.local".into(),
                },
            ),
            rec("Speaker._http._tcp.local", RData::Txt(vec!["a=b".into()])),
            rec("DEV.local", RData::A(Ipv4Addr::new(192, 168, 2, 50))),
            rec("dev.local", RData::A(Ipv4Addr::new(192, 168, 2, 50))),
            rec(
                "_http._tcp.local",
                RData::Ptr("Speaker._http._tcp.local".into()),
            ),
            rec(
                "_http._tcp.local.",
                RData::Ptr("Other._http._tcp.local".into()),
            ),
        ];
        let a = assemble("_http._tcp.local", &recs);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].instance, "Speaker._http._tcp.local");
        assert_eq!(a[0].port, Some(8080));
        assert_eq!(a[0].host.as_deref(), Some("dev.local"));
        assert_eq!(a[0].txt, vec!["a=b".to_owned()]);
        assert_eq!(a[0].addrs, vec![IpAddr::V4(Ipv4Addr::new(192, 168, 2, 50))]);
        assert!(a[0].is_resolved());
        assert!(!a[1].is_resolved());
    }
}
