//! The `/metrics` (OpenMetrics) and `/status` (JSON) endpoint, served by
//! hyper, and the small blocking client `flatlan-speaker status` uses.
//!
//! Whoever can reach the endpoint must not be able to slow a failover
//! (issue 12, finding 5: 2,000 idle connections used up the process's file
//! descriptors, the next VIP assign failed with EMFILE, and failover took
//! 20 s). So:
//! - it runs on a thread and runtime of its own, never on the engine's;
//! - at most [`MAX_CONNECTIONS`] connections are held at once; beyond
//!   that, connections wait in the kernel's listen backlog, which costs the
//!   process no descriptor;
//! - a client has [`HEADER_READ_TIMEOUT`] to send its request head (hyper's
//!   header-read timeout, which also runs while a connection sends
//!   nothing) and [`CONNECTION_TIMEOUT`] for the whole exchange; there is no
//!   keep-alive;
//! - a failed `accept` (EMFILE) backs off instead of spinning.
//!
//! The engine also raises its descriptor limit at start (see
//! [`crate::privileges`]), so its own sockets and `ip` processes have room.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::metrics::{Metrics, CONTENT_TYPE};

/// The most connections served at once: Prometheus scrapes with one, the
/// status command with one more.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last in all (a client that does not read
/// its response holds a slot no longer than this).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the endpoint serves, refreshed by the engine.
#[derive(Debug, Default)]
pub struct Shared {
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// The latest status JSON.
    pub status_json: Mutex<String>,
    /// The latest status, for the VIP source's Events (a watch: the
    /// engine replaces it and never waits for a reader).
    pub status: tokio::sync::watch::Sender<Option<Arc<crate::status::Status>>>,
}

/// Serves `listener` on a thread of its own, with a runtime of its own,
/// for the life of the process.
pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::sys("O_NONBLOCK on the metrics socket", e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::sys("the metrics endpoint's runtime", e))?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, shared).await,
                    Err(e) => tracing::error!("metrics endpoint: {e}"),
                }
            })
        })
        .map_err(|e| Error::sys("start the metrics endpoint's thread", e))?;
    Ok(())
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first: while all are taken, connections wait in the
        // kernel's backlog, not in our descriptor table.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::debug!("metrics endpoint: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(sock), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (code, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, CONTENT_TYPE, shared.metrics.render())
        }
        (&Method::GET | &Method::HEAD, "/status") => (
            StatusCode::OK,
            "application/json",
            shared
                .status_json
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
        ),
        (&Method::GET | &Method::HEAD, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /status\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    resp
}

/// The largest response [`get`] reads: a status document of thousands of
/// VIPs fits many times over.
const MAX_RESPONSE: u64 = 64 << 20;

/// A blocking GET; returns the body of a 200 response.
pub fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let err = |e: std::io::Error| Error::Status(format!("{addr}: {e}"));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(err)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(err)?;
    let mut resp = String::new();
    s.take(MAX_RESPONSE)
        .read_to_string(&mut resp)
        .map_err(err)?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Status(format!("{addr}: malformed response")))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(Error::Status(format!(
            "{addr}{path}: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
    }

    /// Idle connections hold at most [`MAX_CONNECTIONS`] descriptors on
    /// the server side, are closed after the header-read timeout, and the
    /// endpoint answers again once they are gone.
    #[test]
    fn idle_connections_are_capped_and_timed_out() {
        let shared = Arc::new(Shared::default());
        shared.metrics.garps_sent.add(3);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let before = open_fds();
        spawn(l, shared).unwrap();
        let idle: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let held = open_fds() - before - idle.len();
        // The listener, the runtime's own descriptors, and the capped
        // connections: not one per client.
        assert!(
            held <= MAX_CONNECTIONS + 8,
            "{held} descriptors for {} idle clients",
            idle.len()
        );
        // The server closes the first ones after the header timeout.
        let mut first = idle[0].try_clone().unwrap();
        first
            .set_read_timeout(Some(HEADER_READ_TIMEOUT * 3))
            .unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 64];
        // EOF or a reset: either way the server let go.
        let _ = first.read(&mut buf);
        // By the header-read timeout, not only by the overall one.
        assert!(
            t.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(1),
            "an idle connection was closed after {:?}",
            t.elapsed()
        );
        drop(idle);
        drop(first);
        let body = get(addr, "/metrics").unwrap();
        assert_eq!(
            crate::metrics::scrape(&body, "flatlan_speaker_garps_sent_total"),
            Some(3.0)
        );
        assert!(get(addr, "/nope").is_err());
    }
}
