//! Where the desired VIPs come from: a [`VipSource`] pushes the whole
//! desired set over a channel whenever it changes, each VIP with its
//! eligibility for this node. The engine only polls that channel in its
//! loop and never awaits the source, so a slow or absent input (a file
//! system, later an API server) never delays a heartbeat or a failover.
//!
//! The first source is the static file, re-read on SIGHUP
//! ([`StaticFile`]). Another (the Kubernetes watcher) implements
//! [`VipSource`] the same way: it runs on its own task, and sends
//! [`Update::Vips`] with the full set, each VIP's `eligible` saying whether
//! this node may announce it (its node selector, the readiness of local
//! endpoints for `externalTrafficPolicy: Local`).

use std::net::IpAddr;
use std::path::PathBuf;

use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

use tokio::sync::{mpsc, watch};

use crate::config::{Config, VipConfig};
use crate::error::{Error, Result};
use crate::status::Status;

/// One VIP the source wants announced, and whether by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    /// The address and, if pinned, its interface.
    pub vip: VipConfig,
    /// False when this node may not announce it (not selected, or no
    /// ready local endpoint): it is still decided about, for another node.
    pub eligible: bool,
}

impl DesiredVip {
    /// A VIP any node may announce.
    pub fn anywhere(vip: VipConfig) -> Self {
        DesiredVip {
            vip,
            eligible: true,
        }
    }

    /// The address.
    pub fn address(&self) -> IpAddr {
        self.vip.address
    }
}

/// The desired VIPs of a static config: every one eligible everywhere.
pub fn from_config(cfg: &Config) -> Vec<DesiredVip> {
    cfg.vips.iter().cloned().map(DesiredVip::anywhere).collect()
}

/// What a source sends.
#[derive(Debug)]
pub enum Update {
    /// The whole desired set, replacing the previous one.
    Vips(Vec<DesiredVip>),
    /// A new static configuration: its VIPs, and the peers and interface
    /// allow list a running speaker takes (see [`crate::reload`]).
    Config(Box<Config>),
    /// The source could not read its input; what runs stays.
    Refused(String),
}

/// Where the engine receives updates.
pub type UpdateRx = mpsc::Receiver<Update>;
/// Where a source sends them.
pub type UpdateTx = mpsc::Sender<Update>;

/// The engine's status as last published (`None` before the first): a
/// source that reports on what the engine does (the Kubernetes source's
/// Events) reads it here, never the engine itself.
pub type StatusRx = watch::Receiver<Option<Arc<Status>>>;

/// A source of desired VIPs.
pub trait VipSource {
    /// Starts the source on its own task (or thread) inside the engine's
    /// runtime; every update goes to `tx`. Returns once it runs: an error
    /// here (a signal handler that cannot be set) stops the start.
    fn start(self: Box<Self>, tx: UpdateTx) -> Result<()>;

    /// Called before [`VipSource::start`] with the engine's published
    /// status; a source that does not report on the engine ignores it.
    fn observe_status(&mut self, _status: StatusRx) {}
}

/// The static config file, re-read on SIGHUP. A file that does not
/// validate changes nothing (the running config stays, whole).
pub struct StaticFile {
    path: PathBuf,
}

impl StaticFile {
    /// The source for the file at `path`.
    pub fn new(path: PathBuf) -> Self {
        StaticFile { path }
    }
}

impl VipSource for StaticFile {
    fn start(self: Box<Self>, tx: UpdateTx) -> Result<()> {
        let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::sys("SIGHUP", e))?;
        let path = self.path;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // Read off the loop: the engine is not kept waiting.
                let p = path.clone();
                let update = match tokio::task::spawn_blocking(move || Config::load(&p)).await {
                    Ok(Ok(cfg)) => Update::Config(Box::new(cfg)),
                    Ok(Err(e)) => Update::Refused(format!("{}: {e}", path.display())),
                    Err(e) => Update::Refused(format!("{}: {e}", path.display())),
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}
