//! What the leader knows of the cluster: the objects its watches deliver,
//! by kind. The allocator's decisions are a function of this and of its
//! own state ([`super::plan`]).

use std::collections::{BTreeMap, BTreeSet};

use flatlan_k8s::convert::Collected;
use flatlan_k8s::selector::Labels;
use flatlan_k8s::{crd, metallb};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::ResourceExt;

/// The kinds the leader watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Namespace,
    FlatlanPool,
    FlatlanAdvertisement,
    MetalLbPool,
    MetalLbAdvertisement,
    /// The legacy `metallb-system/config` ConfigMap.
    LegacyConfig,
    /// A MetalLB kind flatlan does not implement (BGPPeer, …).
    MetalLbOther(&'static str),
}

/// One watched object.
#[derive(Debug, Clone)]
pub enum Obj {
    Service(Box<Service>),
    Namespace(Box<Namespace>),
    FlatlanPool(Box<crd::IPAddressPool>),
    FlatlanAdvertisement(Box<crd::L2Advertisement>),
    MetalLbPool(Box<metallb::IPAddressPool>),
    MetalLbAdvertisement(Box<metallb::L2Advertisement>),
    LegacyConfig(Box<ConfigMap>),
    MetalLbOther {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
    },
}

/// What a watch reports.
#[derive(Debug, Clone)]
pub enum Change {
    /// A (re)list: every object of the kind; an absent CRD lists nothing.
    Reset(Kind, Vec<Obj>),
    Upsert(Obj),
    Delete(Kind, Option<String>, String),
}

/// Namespace and name.
pub type Name = (Option<String>, String);

fn name_of<K: ResourceExt>(o: &K) -> Name {
    (o.namespace(), o.name_any())
}

/// The watched objects.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub services: BTreeMap<Name, Service>,
    pub namespaces: BTreeMap<String, Labels>,
    pub flatlan_pools: BTreeMap<Name, crd::IPAddressPool>,
    pub flatlan_ads: BTreeMap<Name, crd::L2Advertisement>,
    pub metallb_pools: BTreeMap<Name, metallb::IPAddressPool>,
    pub metallb_ads: BTreeMap<Name, metallb::L2Advertisement>,
    pub legacy: BTreeMap<Name, ConfigMap>,
    pub others: BTreeSet<(&'static str, Option<String>, String)>,
    synced: BTreeSet<Kind>,
}

impl Kind {
    /// A kind the leader may serve without: MetalLB compatibility, which
    /// a cluster may lack the CRDs of or deny the leader reading.
    pub fn optional(&self) -> bool {
        matches!(
            self,
            Kind::MetalLbPool
                | Kind::MetalLbAdvertisement
                | Kind::LegacyConfig
                | Kind::MetalLbOther(_)
        )
    }
}

impl Obj {
    pub fn kind(&self) -> Kind {
        match self {
            Obj::Service(_) => Kind::Service,
            Obj::Namespace(_) => Kind::Namespace,
            Obj::FlatlanPool(_) => Kind::FlatlanPool,
            Obj::FlatlanAdvertisement(_) => Kind::FlatlanAdvertisement,
            Obj::MetalLbPool(_) => Kind::MetalLbPool,
            Obj::MetalLbAdvertisement(_) => Kind::MetalLbAdvertisement,
            Obj::LegacyConfig(_) => Kind::LegacyConfig,
            Obj::MetalLbOther { kind, .. } => Kind::MetalLbOther(kind),
        }
    }
}

impl World {
    /// Whether every kind in `kinds` has been listed at least once: before
    /// that the leader does not know every Service's status and must not
    /// assign anything.
    pub fn synced(&self, kinds: &[Kind]) -> bool {
        kinds.iter().all(|k| self.synced.contains(k))
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Reset(kind, objs) => {
                self.clear(kind);
                self.synced.insert(kind);
                for o in objs {
                    self.upsert(o);
                }
            }
            Change::Upsert(o) => self.upsert(o),
            Change::Delete(kind, ns, name) => self.delete(kind, (ns, name)),
        }
    }

    fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Service => self.services.clear(),
            Kind::Namespace => self.namespaces.clear(),
            Kind::FlatlanPool => self.flatlan_pools.clear(),
            Kind::FlatlanAdvertisement => self.flatlan_ads.clear(),
            Kind::MetalLbPool => self.metallb_pools.clear(),
            Kind::MetalLbAdvertisement => self.metallb_ads.clear(),
            Kind::LegacyConfig => self.legacy.clear(),
            Kind::MetalLbOther(k) => self.others.retain(|o| o.0 != k),
        }
    }

    pub fn upsert(&mut self, o: Obj) {
        match o {
            Obj::Service(s) => {
                self.services.insert(name_of(&*s), *s);
            }
            Obj::Namespace(n) => {
                self.namespaces.insert(n.name_any(), n.labels().clone());
            }
            Obj::FlatlanPool(p) => {
                self.flatlan_pools.insert(name_of(&*p), *p);
            }
            Obj::FlatlanAdvertisement(a) => {
                self.flatlan_ads.insert(name_of(&*a), *a);
            }
            Obj::MetalLbPool(p) => {
                self.metallb_pools.insert(name_of(&*p), *p);
            }
            Obj::MetalLbAdvertisement(a) => {
                self.metallb_ads.insert(name_of(&*a), *a);
            }
            Obj::LegacyConfig(c) => {
                self.legacy.insert(name_of(&*c), *c);
            }
            Obj::MetalLbOther {
                kind,
                namespace,
                name,
            } => {
                self.others.insert((kind, namespace, name));
            }
        }
    }

    fn delete(&mut self, kind: Kind, n: Name) {
        match kind {
            Kind::Service => drop(self.services.remove(&n)),
            Kind::Namespace => drop(self.namespaces.remove(&n.1)),
            Kind::FlatlanPool => drop(self.flatlan_pools.remove(&n)),
            Kind::FlatlanAdvertisement => drop(self.flatlan_ads.remove(&n)),
            Kind::MetalLbPool => drop(self.metallb_pools.remove(&n)),
            Kind::MetalLbAdvertisement => drop(self.metallb_ads.remove(&n)),
            Kind::LegacyConfig => drop(self.legacy.remove(&n)),
            Kind::MetalLbOther(k) => drop(self.others.remove(&(k, n.0, n.1))),
        }
    }

    /// Every pool and advertisement on the one model, with what was wrong
    /// with each object.
    pub fn collected(&self) -> Collected {
        let mut c = Collected::default();
        self.flatlan_pools.values().for_each(|p| c.flatlan_pool(p));
        self.metallb_pools.values().for_each(|p| c.metallb_pool(p));
        self.legacy.values().for_each(|m| c.metallb_config_map(m));
        self.flatlan_ads
            .values()
            .for_each(|a| c.flatlan_advertisement(a));
        self.metallb_ads
            .values()
            .for_each(|a| c.metallb_advertisement(a));
        for (kind, ns, name) in &self.others {
            c.metallb_other(kind, ns.clone(), name);
        }
        c
    }
}
