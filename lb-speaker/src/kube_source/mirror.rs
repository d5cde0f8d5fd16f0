//! One kind's objects as its watcher last listed them, and the loop that
//! keeps them current.
//!
//! The rule that keeps announcements still during an API outage lives
//! here: a re-list is buffered and replaces the objects only when it
//! completes (`InitDone`), and an error never clears anything. A kind whose
//! API is not served (a CRD that is not installed: 404) or not readable
//! (403) counts as empty when it is optional, is logged once, and is tried
//! again slowly.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// What one kind's watcher has seen.
#[derive(Debug)]
struct State<K> {
    objects: BTreeMap<String, Arc<K>>,
    /// A re-list in progress: it replaces `objects` once complete.
    relist: Option<BTreeMap<String, Arc<K>>>,
    /// A complete list arrived (or the kind is known to be absent).
    ready: bool,
}

/// A kind's objects, shared between its watcher and the computation.
#[derive(Debug)]
pub struct Mirror<K> {
    state: Arc<Mutex<State<K>>>,
}

impl<K> Clone for Mirror<K> {
    fn clone(&self) -> Self {
        Mirror {
            state: self.state.clone(),
        }
    }
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Mirror {
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                relist: None,
                ready: false,
            })),
        }
    }
}

fn key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.as_deref().unwrap_or(""),
        o.meta().name.as_deref().unwrap_or("")
    )
}

impl<K: Resource> Mirror<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A panic elsewhere while holding it leaves consistent data: every
        // update below is a single map operation.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watcher event; true when the objects changed.
    pub fn apply(&self, ev: Event<K>) -> bool {
        let mut s = self.lock();
        match ev {
            Event::Init => {
                s.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                let k = key(&o);
                s.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, Arc::new(o));
                false
            }
            Event::InitDone => {
                // Always "changed": the computation compares what it
                // would send with what it sent, which is the check that
                // matters (a relist after a 410 may carry anything).
                s.objects = s.relist.take().unwrap_or_default();
                s.ready = true;
                true
            }
            Event::Apply(o) => {
                s.objects.insert(key(&o), Arc::new(o));
                true
            }
            Event::Delete(o) => s.objects.remove(&key(&o)).is_some(),
        }
    }

    /// The kind is not served: empty, unless a complete list already came
    /// (then what it listed stays: only a successful list removes VIPs).
    /// True when this made it ready.
    pub fn absent(&self) -> bool {
        let mut s = self.lock();
        s.relist = None;
        let was = s.ready;
        s.ready = true;
        !was
    }

    /// Whether a complete list arrived.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// The objects now.
    pub fn objects(&self) -> Vec<Arc<K>> {
        self.lock().objects.values().cloned().collect()
    }
}

/// Whether the error says the kind is not served or not readable.
fn unavailable(e: &watcher::Error) -> bool {
    let inner = match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) => e,
        watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(s) => return matches!(s.code, 403 | 404),
        _ => return false,
    };
    matches!(inner, kube::Error::Api(s) if matches!(s.code, 403 | 404))
}

/// How one kind is watched.
#[derive(Debug, Clone)]
pub struct Watch {
    /// For logs: `metallb.io/v1beta1 IPAddressPool`.
    pub what: &'static str,
    /// A 404/403 counts as "none" instead of holding everything back.
    pub optional: bool,
    /// The pause before trying an absent kind again.
    pub absent_retry: Duration,
    /// A list that makes no progress this long is started over.
    pub list_timeout: Duration,
    pub config: watcher::Config,
}

/// Keeps `mirror` current from `api` until the task is dropped, notifying
/// `changed` on every change. Errors are retried with kube's backoff;
/// nothing is cleared on an error.
pub async fn follow<K>(api: Api<K>, w: Watch, mirror: Mirror<K>, changed: Arc<Notify>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut told_absent = false;
    let mut errors = 0u64;
    loop {
        let mut stream = watcher(api.clone(), w.config.clone())
            .default_backoff()
            .boxed();
        // A list has no timeout of its own (the client has no read
        // timeout; only watches have kube's idle timeout): one that an API
        // server never answers would hold this kind forever, even after
        // the server is back. So a list that makes no progress for
        // `list_timeout` starts the watcher over (what was listed stays).
        let mut listing = true;
        let mut pause = Duration::from_secs(1);
        loop {
            let next = if listing {
                match tokio::time::timeout(w.list_timeout, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        tracing::warn!(
                            kind = w.what,
                            "no answer to a list in {:?}; starting over",
                            w.list_timeout
                        );
                        break;
                    }
                }
            } else {
                stream.next().await
            };
            let Some(ev) = next else { break };
            match ev {
                Ok(ev) => {
                    match ev {
                        Event::Init => listing = true,
                        Event::InitDone => {
                            listing = false;
                            if told_absent {
                                tracing::info!(kind = w.what, "now served; watching it");
                                told_absent = false;
                            }
                        }
                        _ => {}
                    }
                    if mirror.apply(ev) {
                        changed.notify_one();
                    }
                }
                Err(e) if w.optional && unavailable(&e) => {
                    if !told_absent {
                        tracing::info!(kind = w.what, "not served or not readable ({e}); taken as none, tried again every {:?}", w.absent_retry);
                        told_absent = true;
                    }
                    if mirror.absent() {
                        changed.notify_one();
                    }
                    pause = w.absent_retry;
                    break;
                }
                Err(e) => {
                    errors += 1;
                    // Powers of two: an outage of hours logs a few dozen lines.
                    if errors.is_power_of_two() {
                        tracing::warn!(
                            kind = w.what,
                            errors,
                            "watch failed ({e}); announcements stay as they are, retrying"
                        );
                    }
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
}
