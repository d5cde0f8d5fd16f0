use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::PROBE_TIMEOUT;
use crate::error::{Error, Result};
use crate::netns::Netns;

/// Largest request the echo server reads before answering.
const MAX_REQUEST: u64 = 64 * 1024;
/// How often the accept loop checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// A TCP echo server running in a namespace until dropped. It reads a
/// request to EOF (the client half-closes), sends it back and closes.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Client addresses as the server saw them, in order. Behind NAT this
    /// is the translated source, which is what DNAT/SNAT tests check.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts an echo server on `addr` inside `ns`. Only the listening socket
/// is created in the namespace; a socket keeps its namespace for life, so
/// the accept loop can run on an ordinary thread.
pub fn tcp_serve(ns: &Netns, addr: SocketAddr) -> Result<TcpServer> {
    let listener = ns
        .run(|| TcpListener::bind(addr))?
        .map_err(|e| Error::io(format!("bind {addr} in {}", ns.name()), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    // Non-blocking so the loop notices `stop` without a wake-up connection.
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("set listener non-blocking", e))?;
    let peers = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (peers.clone(), stop.clone());
    let thread = thread::Builder::new()
        .name(format!("echo-{local}"))
        .spawn(move || accept_loop(listener, p, s))
        .map_err(|e| Error::io("spawn echo server thread", e))?;
    Ok(TcpServer {
        addr: local,
        peers,
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(listener: TcpListener, peers: Arc<Mutex<Vec<SocketAddr>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                peers.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                thread::spawn(move || {
                    if let Err(e) = echo_once(stream) {
                        tracing::debug!(%peer, error = %e, "echo failed");
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn echo_once(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    let mut buf = Vec::new();
    (&mut stream).take(MAX_REQUEST).read_to_end(&mut buf)?;
    stream.write_all(&buf)?;
    stream.shutdown(Shutdown::Both)
}

/// What a client saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpReply {
    /// The client's own address.
    pub local: SocketAddr,
    /// The address the client connected to (a VIP or DNATed address stays
    /// as dialled: NAT is invisible from this side).
    pub peer: SocketAddr,
    pub reply: Vec<u8>,
}

/// Connects from inside `ns` to `target`, sends `payload`, half-closes and
/// reads the reply to EOF. Bounded by `timeout` per step.
pub fn tcp_request(
    ns: &Netns,
    target: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<TcpReply> {
    let what = || format!("TCP {target} from {}", ns.name());
    let io = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            Error::Timeout {
                what: what(),
                timeout,
            }
        } else {
            Error::io(what(), e)
        }
    };
    let mut stream = ns
        .run(|| TcpStream::connect_timeout(&target, timeout))?
        .map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let local = stream.local_addr().map_err(io)?;
    let peer = stream.peer_addr().map_err(io)?;
    stream.write_all(payload).map_err(io)?;
    stream.shutdown(Shutdown::Write).map_err(io)?;
    let mut reply = Vec::new();
    stream
        .take(MAX_REQUEST)
        .read_to_end(&mut reply)
        .map_err(io)?;
    Ok(TcpReply { local, peer, reply })
}

/// One echo round trip, as both ends saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpEcho {
    /// The address the client connected to.
    pub peer_seen_by_client: SocketAddr,
    /// The client's address as the server saw it (after any SNAT).
    pub client_seen_by_server: SocketAddr,
    /// The client's own address.
    pub client_local: SocketAddr,
    pub reply: Vec<u8>,
}

/// Runs an echo server on `server_ip:port` in `server_ns` and a client in
/// `client_ns` that dials `target_ip:port`, which may be a DNATed address
/// leading to the server. Fails unless the payload comes back intact.
/// Port 0 picks a free port.
pub fn tcp_echo(
    server_ns: &Netns,
    server_ip: IpAddr,
    port: u16,
    client_ns: &Netns,
    target_ip: IpAddr,
) -> Result<TcpEcho> {
    let server = tcp_serve(server_ns, SocketAddr::new(server_ip, port))?;
    let target = SocketAddr::new(target_ip, server.local_addr().port());
    let payload = format!(
        "flatlan echo {} {}",
        std::process::id(),
        server.local_addr()
    );
    let reply = tcp_request(client_ns, target, payload.as_bytes(), PROBE_TIMEOUT)?;
    if reply.reply != payload.as_bytes() {
        return Err(Error::Probe {
            what: format!("TCP echo {target} from {}", client_ns.name()),
            detail: format!(
                "sent {payload:?}, got {:?}",
                String::from_utf8_lossy(&reply.reply)
            ),
        });
    }
    // The server records a peer when it accepts, before it echoes.
    let client_seen_by_server = server.peers().last().copied().ok_or_else(|| Error::Probe {
        what: format!("TCP echo {target}"),
        detail: "reply arrived but the server recorded no connection (another listener?)"
            .to_owned(),
    })?;
    Ok(TcpEcho {
        peer_seen_by_client: reply.peer,
        client_seen_by_server,
        client_local: reply.local,
        reply: reply.reply,
    })
}
