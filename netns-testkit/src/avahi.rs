//! A real avahi-daemon as an mDNS responder inside a namespace.
//!
//! avahi normally insists on D-Bus and a single instance per host (its
//! pid file and socket live in /run/avahi-daemon). Per namespace we run it
//! with `enable-dbus=no` and give it a private /run: a tmpfs mounted in a
//! private mount namespace, so instances in different namespaces (and the
//! host's own, if any) never see each other's pid files. Its static
//! services directory is compiled in as /etc/avahi/services, so our
//! service files are bind-mounted over it in that same private mount
//! namespace; nothing on the host changes.

use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::process::ProcHandle;
use crate::scratch::ScratchDir;

/// avahi's compiled-in directory of static service files.
const SERVICE_DIR: &str = "/etc/avahi/services";
/// Logged once the host name is probed and announced.
pub const AVAHI_READY: &str = "Server startup complete";

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// A DNS-SD service to publish, e.g. `"Living Room" _http._tcp port 8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsService {
    /// Instance name, the human-readable part (≤ 63 bytes, any UTF-8).
    pub name: String,
    /// Service type such as `_http._tcp` (without `.local`).
    pub stype: String,
    pub port: u16,
    /// TXT strings, usually `key=value`.
    pub txt: Vec<String>,
}

impl MdnsService {
    pub fn new(name: &str, stype: &str, port: u16) -> Self {
        MdnsService {
            name: name.to_owned(),
            stype: stype.to_owned(),
            port,
            txt: Vec::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason| {
            Err(Error::InvalidName {
                name: format!("{} {}", self.name, self.stype),
                reason,
            })
        };
        if self.name.is_empty() || self.name.len() > 63 {
            return bad("instance name must be 1-63 bytes");
        }
        let mut parts = self.stype.split('.');
        let (Some(app), Some(proto), None) = (parts.next(), parts.next(), parts.next()) else {
            return bad("service type must look like _name._tcp");
        };
        if !app.starts_with('_')
            || app.len() < 2
            || app.len() > 16
            || !(proto == "_tcp" || proto == "_udp")
        {
            return bad("service type must look like _name._tcp or _name._udp");
        }
        if self.txt.iter().any(|t| t.is_empty() || t.len() > 255) {
            return bad("TXT strings must be 1-255 bytes");
        }
        Ok(())
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The avahi-daemon.conf for one instance. IPv6 is off: the lab's mDNS
/// checks are IPv4, and v6 answers (the LAN is dual-stack) would only add
/// noise.
pub(crate) fn daemon_config(hostname: &str) -> String {
    format!(
        "[server]\n\
         host-name={hostname}\n\
         domain-name=local\n\
         use-ipv4=yes\n\
         use-ipv6=no\n\
         enable-dbus=no\n\
         allow-point-to-point=no\n\
         [wide-area]\n\
         enable-wide-area=no\n\
         [publish]\n\
         publish-addresses=yes\n\
         publish-hinfo=no\n\
         publish-workstation=no\n\
         publish-aaaa-on-ipv4=no\n\
         publish-a-on-ipv6=no\n\
         [reflector]\n\
         enable-reflector=no\n"
    )
}

/// One avahi static service file (avahi.service(5)).
pub(crate) fn service_xml(svc: &MdnsService) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" standalone='no'?>\n\
         <!DOCTYPE service-group SYSTEM \"avahi-service.dtd\">\n\
         <service-group>\n",
    );
    let _ = writeln!(s, "  <name>{}</name>", xml_escape(&svc.name));
    let _ = writeln!(s, "  <service>");
    let _ = writeln!(s, "    <type>{}</type>", xml_escape(&svc.stype));
    let _ = writeln!(s, "    <port>{}</port>", svc.port);
    for t in &svc.txt {
        let _ = writeln!(s, "    <txt-record>{}</txt-record>", xml_escape(t));
    }
    s.push_str("  </service>\n</service-group>\n");
    s
}

fn validate_hostname(hostname: &str) -> Result<()> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 63
        && !hostname.starts_with('-')
        && !hostname.ends_with('-')
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: hostname.to_owned(),
            reason: "host name must be one DNS label: 1-63 of a-z, 0-9, '-'",
        })
    }
}

/// Starts avahi-daemon in `ns`, answering for `hostname.local` and
/// publishing `services` on every multicast interface of the namespace.
///
/// Returns at once; avahi needs about a second to probe its names before
/// it answers (wait with [`wait_avahi_ready`], or just query with retries
/// as [`crate::probe::mdns_query`] does). The daemon is killed, and its
/// files removed, when the handle drops.
pub fn start_avahi(ns: &Netns, hostname: &str, services: &[MdnsService]) -> Result<ProcHandle> {
    validate_hostname(hostname)?;
    for s in services {
        s.validate()?;
    }
    if !Path::new(SERVICE_DIR).is_dir() {
        return Err(Error::InvalidConfig(format!(
            "{SERVICE_DIR} is missing; is avahi-daemon installed?"
        )));
    }
    let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let dir = ScratchDir::new(&format!("{}-avahi{n}", ns.name()))?;
    let conf = dir.write("avahi-daemon.conf", &daemon_config(hostname))?;
    dir.write("services/.keep", "")?;
    for (i, s) in services.iter().enumerate() {
        dir.write(&format!("services/svc{i}.service"), &service_xml(s))?;
    }
    let services_dir = dir.path().join("services");
    let (Some(conf), Some(services_dir)) = (conf.to_str(), services_dir.to_str()) else {
        return Err(Error::InvalidConfig(
            "state dir path is not UTF-8".to_owned(),
        ));
    };
    // `ip netns exec` already unshares the mount namespace, but we do not
    // rely on that: `unshare -m --propagation private` makes sure the
    // tmpfs and bind mount can never leak to the host. Every step execs in
    // place, so the PID we hold ends up being avahi-daemon itself.
    let script = "mount -t tmpfs none /run && mkdir -p /run/avahi-daemon \
                  && mount --bind \"$1\" /etc/avahi/services \
                  && exec avahi-daemon -f \"$2\" --no-chroot --no-drop-root --no-rlimits";
    let mut handle = ns.spawn(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "avahi-lab",
        services_dir,
        conf,
    ])?;
    handle.keep_dir(dir);
    Ok(handle)
}

/// Waits until avahi has announced its host name and every service.
pub fn wait_avahi_ready(
    handle: &mut ProcHandle,
    services: &[MdnsService],
    timeout: Duration,
) -> Result<()> {
    let deadline = crate::process::deadline_after(timeout);
    handle.wait_for_log(AVAHI_READY, timeout)?;
    for s in services {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        handle.wait_for_log(&format!("Service \"{}\"", s.name), left)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_file_escapes_and_lists_txt() {
        let mut s = MdnsService::new("Tom & Jerry's <Speaker>", "_http._tcp", 8080);
        s.txt = vec!["model=x".into(), "a=b".into()];
        let xml = service_xml(&s);
        assert!(xml.contains("<name>Tom &amp; Jerry&apos;s &lt;Speaker&gt;</name>"));
        assert!(xml.contains("<type>_http._tcp</type>"));
        assert!(xml.contains("<port>8080</port>"));
        assert!(xml.contains("<txt-record>model=x</txt-record>\n    <txt-record>a=b</txt-record>"));
    }

    #[test]
    fn config_disables_dbus() {
        let c = daemon_config("lab-device");
        assert!(c.contains("host-name=lab-device\n"));
        assert!(c.contains("enable-dbus=no\n"));
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(validate_hostname("fl1l0-device").is_ok());
        for h in ["", "-a", "a.b", "a b", &"x".repeat(64)] {
            assert!(validate_hostname(h).is_err(), "{h:?}");
        }
        for t in ["_http", "http._tcp", "_http._sctp", "_http._tcp.local"] {
            assert!(MdnsService::new("x", t, 1).validate().is_err(), "{t}");
        }
        assert!(MdnsService::new("x", "_ipp._tcp", 631).validate().is_ok());
    }
}
