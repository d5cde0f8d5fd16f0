use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::PROBE_TIMEOUT;
use crate::error::{Error, Result};
use crate::netns::Netns;

const RESEND: Duration = Duration::from_millis(200);

/// Sends UDP datagrams from `from_ns` to `to` (typically the LAN broadcast
/// address, 192.168.2.255:PORT) and waits for one to arrive at a socket
/// bound to 0.0.0.0:PORT in `listener_ns`. Returns the source address the
/// listener saw. Resent every 200 ms for up to [`PROBE_TIMEOUT`].
pub fn udp_broadcast(from_ns: &Netns, to: SocketAddrV4, listener_ns: &Netns) -> Result<SocketAddr> {
    let what = || format!("UDP {to} from {} to {}", from_ns.name(), listener_ns.name());
    let io = |e: std::io::Error| Error::io(what(), e);
    let bind = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, to.port());
    let listener = listener_ns.run(|| UdpSocket::bind(bind))?.map_err(io)?;
    let sender = from_ns
        .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))?
        .map_err(io)?;
    // Without SO_BROADCAST the kernel refuses broadcast destinations (EACCES).
    sender.set_broadcast(true).map_err(io)?;
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let payload = format!("flatlan-udp {} {nonce}", std::process::id());

    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sender.send_to(payload.as_bytes(), to).map_err(io)?;
        let resend_at = Instant::now() + RESEND;
        loop {
            let now = Instant::now();
            if now >= resend_at || now >= deadline {
                break;
            }
            let wait = resend_at.min(deadline) - now;
            listener.set_read_timeout(Some(wait)).map_err(io)?;
            match listener.recv_from(&mut buf) {
                Ok((n, src)) if buf.get(..n) == Some(payload.as_bytes()) => return Ok(src),
                Ok(_) => {} // someone else's datagram
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    Err(Error::Timeout {
        what: what(),
        timeout: PROBE_TIMEOUT,
    })
}
