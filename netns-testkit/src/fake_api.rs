//! A fake Kubernetes API server at the HTTP level, for tests that run the
//! real speaker binary against "the cluster" (issue 13's API-outage
//! scenario): it serves canned lists, holds watches open, answers writes
//! (Events) with what was sent, and can be switched to fail every request
//! (500) or to hang every request, as an API server that stopped would.
//!
//! It listens inside a lab namespace (on the segment, so the speakers in
//! the other namespaces reach it over the lab's LAN) or on loopback;
//! never on a host interface. Plain HTTP, one thread per connection,
//! `Connection: close` on every answer: a test fake, not a server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::netns::Netns;

/// How the fake answers new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lists, watches and writes as a healthy API server would.
    Serve,
    /// Every request gets a 500; open watches are closed.
    Fail,
    /// No request is answered until the mode changes (then the connection
    /// is closed unanswered); open watches go silent.
    Hang,
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The request body (a write's JSON), as text.
    pub body: String,
}

struct State {
    lists: BTreeMap<String, Vec<Value>>,
    mode: Mode,
    seen: Vec<Seen>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped by [`FakeApi::expire_watches`]: open watches end with 410.
    generation: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running fake; stops (its threads wind down) when dropped.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// The paths of the kinds flatlan's Kubernetes VIP source watches, each
/// an empty list until [`FakeApi::set`] fills it.
pub const SPEAKER_PATHS: &[&str] = &[
    "/api/v1/services",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/api/v1/nodes",
    "/apis/flatlan.dev/v1alpha1/ipaddresspools",
    "/apis/flatlan.dev/v1alpha1/l2advertisements",
    "/apis/metallb.io/v1beta1/ipaddresspools",
    "/apis/metallb.io/v1beta1/l2advertisements",
    "/api/v1/namespaces/metallb-system/configmaps",
];

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl FakeApi {
    /// Listens on `ip` (port chosen by the kernel) inside `ns`.
    pub fn start_in(ns: &Netns, ip: IpAddr) -> Result<FakeApi> {
        let l = ns.run(move || TcpListener::bind((ip, 0)))?;
        let l = l.map_err(|e| Error::io(format!("fake API: bind {ip} in {}", ns.name()), e))?;
        Self::serve(l)
    }

    /// Listens on 127.0.0.1 (port chosen by the kernel).
    pub fn start_loopback() -> Result<FakeApi> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::io("fake API: bind 127.0.0.1", e))?;
        Self::serve(l)
    }

    fn serve(l: TcpListener) -> Result<FakeApi> {
        let addr = l
            .local_addr()
            .map_err(|e| Error::io("fake API: local address", e))?;
        l.set_nonblocking(true)
            .map_err(|e| Error::io("fake API: O_NONBLOCK", e))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lists: SPEAKER_PATHS
                    .iter()
                    .map(|p| ((*p).to_owned(), Vec::new()))
                    .collect(),
                mode: Mode::Serve,
                seen: Vec::new(),
            }),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                while !sh.stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((conn, _)) => {
                            let sh = sh.clone();
                            let _ = thread::Builder::new().name("fake-api-conn".into()).spawn(
                                move || {
                                    let _ = handle(conn, &sh);
                                },
                            );
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(|e| Error::io("fake API: spawn", e))?;
        Ok(FakeApi { addr, shared })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig that points at the fake (no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n",
            self.addr
        )
    }

    /// Serves `items` as the list at `path` (a collection path such as
    /// `/api/v1/services`); open watches carry on, so call
    /// [`Self::expire_watches`] to make clients list again.
    pub fn set(&self, path: &str, items: Vec<Value>) {
        self.shared.lock().lists.insert(path.to_owned(), items);
    }

    /// Makes `path` answer 404, as a CRD that is not installed.
    pub fn remove(&self, path: &str) {
        self.shared.lock().lists.remove(path);
    }

    /// Switches how requests are answered from now on.
    pub fn set_mode(&self, m: Mode) {
        self.shared.lock().mode = m;
    }

    /// Ends every open watch with a 410 Gone event: clients list again.
    pub fn expire_watches(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn respond(conn: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let b = serde_json::to_vec(body).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        b.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(&b)?;
    conn.flush()
}

fn chunk(conn: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    conn.write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
    conn.write_all(data)?;
    conn.write_all(b"\r\n")?;
    conn.flush()
}

fn handle(mut conn: TcpStream, sh: &Shared) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let mode = {
        let mut s = sh.lock();
        s.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        s.mode
    };
    match mode {
        Mode::Hang => {
            while sh.lock().mode == Mode::Hang && !sh.stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(50));
            }
            return Ok(());
        }
        Mode::Fail => return respond(&mut conn, 500, &status(500, "InternalError")),
        Mode::Serve => {}
    }
    if method != "GET" {
        // Events and any other write: accepted as sent.
        let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if v.is_object() {
            v["metadata"]["resourceVersion"] = json!("1");
        }
        return respond(&mut conn, 201, &v);
    }
    let items = sh.lock().lists.get(&path).cloned();
    let Some(items) = items else {
        return respond(&mut conn, 404, &status(404, "NotFound"));
    };
    if !query.split('&').any(|kv| kv == "watch=true") {
        let list = json!({"apiVersion": "v1", "kind": "List",
                          "metadata": {"resourceVersion": "1"}, "items": items});
        return respond(&mut conn, 200, &list);
    }
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    conn.flush()?;
    let gen = sh.generation.load(Ordering::SeqCst);
    loop {
        thread::sleep(Duration::from_millis(50));
        if sh.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match sh.lock().mode {
            // A server that stopped answering: the watch goes silent.
            Mode::Hang => continue,
            // A server in trouble drops its watches.
            Mode::Fail => return chunk(&mut conn, b""),
            Mode::Serve => {}
        }
        if sh.generation.load(Ordering::SeqCst) != gen {
            let mut ev =
                serde_json::to_vec(&json!({"type": "ERROR", "object": status(410, "Expired")}))
                    .unwrap_or_default();
            ev.push(b'\n');
            chunk(&mut conn, &ev)?;
            return chunk(&mut conn, b"");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn get(api: &FakeApi, target: &str) -> (u16, String) {
        let mut c = TcpStream::connect(api.addr()).unwrap();
        write!(c, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out)
    }

    #[test]
    fn lists_404s_and_fails_on_demand() {
        let api = FakeApi::start_loopback().unwrap();
        api.set(
            "/api/v1/services",
            vec![json!({"metadata": {"name": "web"}})],
        );
        let (code, body) = get(&api, "/api/v1/services?&limit=500");
        assert_eq!(code, 200);
        assert!(body.contains("\"name\":\"web\""), "{body}");
        assert!(body.contains("\"resourceVersion\":\"1\""), "{body}");
        api.remove("/apis/metallb.io/v1beta1/ipaddresspools");
        assert_eq!(get(&api, "/apis/metallb.io/v1beta1/ipaddresspools").0, 404);
        api.set_mode(Mode::Fail);
        assert_eq!(get(&api, "/api/v1/services").0, 500);
        assert_eq!(
            api.seen()[0],
            Seen {
                method: "GET".into(),
                path: "/api/v1/services".into(),
                query: "&limit=500".into(),
                body: String::new(),
            }
        );
        assert!(api
            .kubeconfig()
            .contains(&format!("server: http://{}", api.addr())));
    }
}
