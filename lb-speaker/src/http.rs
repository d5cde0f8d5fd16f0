//! A minimal HTTP/1.0 server for `/metrics` and `/status`, and the matching
//! client for `flatlan-speaker status`. Two read-only GET endpoints do not
//! justify an HTTP stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What the endpoint serves, refreshed by the engine.
#[derive(Debug, Default)]
pub struct Shared {
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The latest status JSON.
    pub status_json: Mutex<String>,
    /// Gauges: (owned VIPs, live members).
    pub gauges: Mutex<(usize, usize)>,
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // Read the request head (up to 4 KiB, 2 s).
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 4096 {
                match tokio::time::timeout_at(deadline, sock.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path {
                "/metrics" => {
                    let (o, m) = shared.gauges.lock().map(|g| *g).unwrap_or((0, 0));
                    (
                        "200 OK",
                        "text/plain; version=0.0.4",
                        shared.metrics.render(o, m),
                    )
                }
                "/status" => (
                    "200 OK",
                    "application/json",
                    shared
                        .status_json
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics or /status\n".into(),
                ),
            };
            let resp = format!(
                "HTTP/1.0 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// A blocking GET; returns the body of a 200 response.
pub fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let err = |e: std::io::Error| Error::Status(format!("{addr}: {e}"));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(err)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(err)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(err)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(err)?;
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
