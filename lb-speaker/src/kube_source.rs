//! The Kubernetes VIP source (issue 13, "announcement from the cluster"):
//! watchers on Services, EndpointSlices, this Node, flatlan's and MetalLB's
//! IPAddressPools and L2Advertisements and MetalLB's legacy ConfigMap feed
//! the pure [`desired::compute`], whose whole result goes to the engine as
//! [`Update::Vips`] whenever it changes.
//!
//! The engine never waits on the API: it only polls the update channel.
//! When the API server is unreachable or hangs, the watchers retry on
//! their own and nothing is sent, so the engine keeps announcing exactly
//! what it announced, and its heartbeats and failover go on as before. A
//! VIP leaves the set only after a complete, successful list
//! ([`mirror`]). Nothing on this side writes to the API on the failover
//! path: the Events ([`events`]) are written by a task of their own, fed
//! by the engine's published status, and dropped rather than waited for.

use std::sync::Arc;
use std::time::Duration;

use flatlan_k8s::{crd, metallb};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::{watch, Notify};

use crate::link_events::Ifaces;
use crate::source::{DesiredVip, StatusRx, Update, UpdateTx, VipSource};

pub mod desired;
pub mod events;
pub mod mirror;

pub use desired::{Index, VipInfo};
use mirror::{follow, Mirror, Watch};

/// How the source behaves; [`Options::default`] is what the DaemonSet runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve LoadBalancer Services that name no `loadBalancerClass`.
    pub default_class: bool,
    /// Where MetalLB's legacy `config` ConfigMap lives.
    pub metallb_namespace: String,
    /// A burst of changes (a rollout touching many EndpointSlices) is
    /// gathered this long into one update.
    pub debounce: Duration,
    /// How often a kind that is not served (a CRD not installed) is tried
    /// again.
    pub absent_retry: Duration,
    /// A list the API server does not answer in this long is started
    /// over (the client has no read timeout; watches have their own).
    pub list_timeout: Duration,
    /// Write Events (nodeAssigned, conflicts) on the Services.
    pub events: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_class: false,
            metallb_namespace: "metallb-system".into(),
            // Small against the 200 ms Service-to-GARP target.
            debounce: Duration::from_millis(50),
            absent_retry: Duration::from_secs(60),
            list_timeout: Duration::from_secs(60),
            events: true,
        }
    }
}

/// The source; see the module documentation.
pub struct KubeSource {
    client: Client,
    node: String,
    opts: Options,
    index: watch::Sender<Arc<Index>>,
    status: Option<StatusRx>,
    ifaces: Option<watch::Receiver<Ifaces>>,
}

impl KubeSource {
    /// The source for node `node` (its Node's name).
    pub fn new(client: Client, node: String, opts: Options) -> KubeSource {
        KubeSource {
            client,
            node,
            opts,
            index: watch::Sender::new(Arc::default()),
            status: None,
            ifaces: None,
        }
    }

    /// Each address's pool, Services and this node's standing, as of the
    /// last update sent.
    pub fn index(&self) -> watch::Receiver<Arc<Index>> {
        self.index.subscribe()
    }

    /// Uses this interface table (instead of the source's own rtnetlink
    /// watch) to place VIPs whose advertisement allows several interfaces.
    pub fn with_ifaces(mut self, ifaces: watch::Receiver<Ifaces>) -> KubeSource {
        self.ifaces = Some(ifaces);
        self
    }
}

/// Every kind's mirror.
#[derive(Default, Clone)]
struct Mirrors {
    services: Mirror<Service>,
    slices: Mirror<EndpointSlice>,
    nodes: Mirror<Node>,
    flatlan_pools: Mirror<crd::IPAddressPool>,
    flatlan_ads: Mirror<crd::L2Advertisement>,
    metallb_pools: Mirror<metallb::IPAddressPool>,
    metallb_ads: Mirror<metallb::L2Advertisement>,
    config_maps: Mirror<ConfigMap>,
}

impl Mirrors {
    /// Every kind listed (or known absent): until then nothing is sent, so
    /// a start against an unreachable API changes nothing.
    fn ready(&self) -> bool {
        self.services.ready()
            && self.slices.ready()
            && self.nodes.ready()
            && self.flatlan_pools.ready()
            && self.flatlan_ads.ready()
            && self.metallb_pools.ready()
            && self.metallb_ads.ready()
            && self.config_maps.ready()
    }

    fn inputs(&self, node: &str, default_class: bool) -> desired::Inputs {
        let node_labels = self
            .nodes
            .objects()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        desired::Inputs {
            node: node.to_owned(),
            node_labels,
            services: self.services.objects(),
            slices: self.slices.objects(),
            flatlan_pools: self.flatlan_pools.objects(),
            flatlan_ads: self.flatlan_ads.objects(),
            metallb_pools: self.metallb_pools.objects(),
            metallb_ads: self.metallb_ads.objects(),
            config_maps: self.config_maps.objects(),
            default_class,
        }
    }
}

impl KubeSource {
    fn spawn_watchers(&self, m: &Mirrors, changed: &Arc<Notify>) {
        let c = &self.client;
        let w = |what, optional| Watch {
            what,
            optional,
            absent_retry: self.opts.absent_retry,
            list_timeout: self.opts.list_timeout,
            config: watcher::Config::default(),
        };
        let n = || changed.clone();
        tokio::spawn(follow(
            Api::<Service>::all(c.clone()),
            w("v1 Service", false),
            m.services.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<EndpointSlice>::all(c.clone()),
            Watch {
                // Only slices that belong to a Service matter.
                config: watcher::Config::default().labels("kubernetes.io/service-name"),
                ..w("discovery.k8s.io/v1 EndpointSlice", false)
            },
            m.slices.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<Node>::all(c.clone()),
            Watch {
                config: watcher::Config::default().fields(&format!("metadata.name={}", self.node)),
                ..w("v1 Node", false)
            },
            m.nodes.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<crd::IPAddressPool>::all(c.clone()),
            w("flatlan.dev/v1alpha1 IPAddressPool", true),
            m.flatlan_pools.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<crd::L2Advertisement>::all(c.clone()),
            w("flatlan.dev/v1alpha1 L2Advertisement", true),
            m.flatlan_ads.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<metallb::IPAddressPool>::all(c.clone()),
            w("metallb.io/v1beta1 IPAddressPool", true),
            m.metallb_pools.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<metallb::L2Advertisement>::all(c.clone()),
            w("metallb.io/v1beta1 L2Advertisement", true),
            m.metallb_ads.clone(),
            n(),
        ));
        tokio::spawn(follow(
            Api::<ConfigMap>::namespaced(c.clone(), &self.opts.metallb_namespace),
            Watch {
                config: watcher::Config::default().fields("metadata.name=config"),
                ..w("MetalLB's legacy ConfigMap", true)
            },
            m.config_maps.clone(),
            n(),
        ));
    }
}

/// Recomputes after every change (gathered for `debounce`) and sends the
/// whole set when it differs from the last one sent.
async fn compute_loop(
    m: Mirrors,
    changed: Arc<Notify>,
    mut ifaces: Option<watch::Receiver<Ifaces>>,
    node: String,
    opts: Options,
    index: watch::Sender<Arc<Index>>,
    tx: UpdateTx,
) {
    let mut last: Option<Vec<DesiredVip>> = None;
    loop {
        match ifaces.as_mut() {
            Some(rx) => tokio::select! {
                _ = changed.notified() => {}
                r = rx.changed() => if r.is_err() { ifaces = None },
            },
            None => changed.notified().await,
        }
        tokio::time::sleep(opts.debounce).await;
        if !m.ready() {
            continue;
        }
        let table = ifaces
            .as_ref()
            .map(|r| r.borrow().clone())
            .unwrap_or_default();
        let (vips, idx) = desired::compute(&m.inputs(&node, opts.default_class), &table);
        // The index first: an Event about a VIP the engine starts
        // announcing finds its Services.
        index.send_if_modified(|old| {
            let differs = **old != idx;
            if differs {
                *old = Arc::new(idx);
            }
            differs
        });
        if last.as_ref() == Some(&vips) {
            continue;
        }
        tracing::info!(
            vips = vips.len(),
            eligible = vips.iter().filter(|v| v.eligible).count(),
            "desired VIPs from the cluster"
        );
        last = Some(vips.clone());
        if tx.send(Update::Vips(vips)).await.is_err() {
            return;
        }
    }
}

impl VipSource for KubeSource {
    fn observe_status(&mut self, status: StatusRx) {
        self.status = Some(status);
    }

    fn start(self: Box<Self>, tx: UpdateTx) -> crate::Result<()> {
        let m = Mirrors::default();
        let changed = Arc::new(Notify::new());
        self.spawn_watchers(&m, &changed);
        let this = *self;
        if this.opts.events {
            if let Some(status) = this.status.clone() {
                events::spawn(
                    this.client.clone(),
                    this.node.clone(),
                    status,
                    this.index.subscribe(),
                );
            }
        }
        let KubeSource {
            node,
            opts,
            index,
            ifaces,
            ..
        } = this;
        tokio::spawn(async move {
            let ifaces = match ifaces {
                Some(i) => Some(i),
                None => match crate::link_events::watch_ifaces().await {
                    Ok(i) => Some(i),
                    Err(e) => {
                        tracing::warn!("interface table for advertisements' interface lists: {e}; VIPs limited to several interfaces are not announced here");
                        None
                    }
                },
            };
            compute_loop(m, changed, ifaces, node, opts, index, tx).await;
        });
        Ok(())
    }
}
