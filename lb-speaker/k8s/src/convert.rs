//! Every source of pools and advertisements onto the one model: flatlan's
//! CRDs, MetalLB's CRDs and MetalLB's legacy ConfigMap. A bad object
//! becomes a [`Warning`] for that object only; the rest carries on.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Resource, ResourceExt};

use crate::crd::{self, ServiceAllocationSpec};
use crate::error::{Error, Result};
use crate::metallb::{self, LegacyConfig};
use crate::model::{Advertisement, ObjectRef, Pool, ServiceAllocation, Source, Warning};
use crate::selector::{Labels, Selector};

/// Pools and advertisements gathered from every source, and what was
/// wrong or ignored on the way.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub pools: Vec<Pool>,
    pub advertisements: Vec<Advertisement>,
    pub warnings: Vec<Warning>,
}

/// The object reference of any typed resource.
pub fn object_ref<K: Resource<DynamicType = ()>>(o: &K) -> ObjectRef {
    ObjectRef {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        namespace: o.namespace(),
        name: o.name_any(),
    }
}

fn created<K: Resource>(o: &K) -> i64 {
    o.meta()
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// The pool fields both APIs share.
struct PoolFields<'a> {
    addresses: &'a [String],
    auto_assign: Option<bool>,
    avoid_buggy_ips: bool,
    alloc: Option<&'a ServiceAllocationSpec>,
}

/// The advertisement fields both APIs share.
struct AdFields<'a> {
    pools: &'a [String],
    pool_selectors: &'a [LabelSelector],
    node_selectors: &'a [LabelSelector],
    service_selectors: &'a [LabelSelector],
    interfaces: &'a [String],
}

// The two APIs' spec types are distinct only because kube's derive binds a
// spec to one group and version; these make them one again.
macro_rules! fields_from {
    ($($spec:ty),*) => {$(
        impl<'a> From<&'a $spec> for AdFields<'a> {
            fn from(s: &'a $spec) -> Self {
                AdFields {
                    pools: &s.ip_address_pools,
                    pool_selectors: &s.ip_address_pool_selectors,
                    node_selectors: &s.node_selectors,
                    service_selectors: &s.service_selectors,
                    interfaces: &s.interfaces,
                }
            }
        }
    )*};
    (pool: $($spec:ty),*) => {$(
        impl<'a> From<&'a $spec> for PoolFields<'a> {
            fn from(s: &'a $spec) -> Self {
                PoolFields {
                    addresses: &s.addresses,
                    auto_assign: s.auto_assign,
                    avoid_buggy_ips: s.avoid_buggy_ips,
                    alloc: s.service_allocation.as_ref(),
                }
            }
        }
    )*};
}
fields_from!(crd::L2AdvertisementSpec, metallb::L2AdvertisementSpec);
fields_from!(pool: crd::IPAddressPoolSpec, metallb::IPAddressPoolSpec);

impl Collected {
    /// A `flatlan.dev/v1alpha1` IPAddressPool.
    pub fn flatlan_pool(&mut self, p: &crd::IPAddressPool) {
        self.typed_pool(p, Source::Flatlan, (&p.spec).into());
    }

    /// A `metallb.io/v1beta1` IPAddressPool.
    pub fn metallb_pool(&mut self, p: &metallb::IPAddressPool) {
        self.typed_pool(p, Source::MetalLb, (&p.spec).into());
    }

    /// A `flatlan.dev/v1alpha1` L2Advertisement.
    pub fn flatlan_advertisement(&mut self, a: &crd::L2Advertisement) {
        self.push_advertisement(object_ref(a), (&a.spec).into());
    }

    /// A `metallb.io/v1beta1` L2Advertisement.
    pub fn metallb_advertisement(&mut self, a: &metallb::L2Advertisement) {
        let object = object_ref(a);
        if !a.spec.preferred_node_selectors.is_empty() {
            self.warn(&object, "spec.preferredNodeSelectors", "flatlan picks the announcing node by a hash over the eligible nodes (nodeSelectors), which is what keeps failover free of API writes");
        }
        self.push_advertisement(object, (&a.spec).into());
    }

    fn typed_pool<K: Resource<DynamicType = ()>>(&mut self, o: &K, source: Source, f: PoolFields) {
        self.pool(object_ref(o), source, created(o), o.labels().clone(), f);
    }

    fn push_advertisement(&mut self, object: ObjectRef, f: AdFields) {
        match advertisement(object.clone(), f) {
            Ok(ad) => self.advertisements.push(ad),
            Err(problem) => self.warnings.push(Warning { object, problem }),
        }
    }

    /// Any other object of MetalLB's group (BGPPeer, BGPAdvertisement, …):
    /// a warning, never silence.
    pub fn metallb_other(&mut self, kind: &str, namespace: Option<String>, name: &str) {
        let object = ObjectRef {
            api_version: metallb::API_VERSION.into(),
            kind: kind.into(),
            namespace,
            name: name.into(),
        };
        let why = metallb::unsupported_kind(kind)
            .unwrap_or("flatlan reads only IPAddressPool and L2Advertisement from metallb.io");
        self.warn(&object, &format!("{kind} {name}"), why);
    }

    /// The legacy `metallb-system/config` ConfigMap: each `protocol:
    /// layer2` pool becomes a pool and an advertisement of it from every
    /// node, as MetalLB did; BGP pools, peers and communities are warned
    /// about.
    pub fn metallb_config_map(&mut self, cm: &ConfigMap) {
        let object = object_ref(cm);
        let created = created(cm);
        let text = cm.data.as_ref().and_then(|d| d.get("config"));
        let Some(text) = text else {
            let problem = Error::BadConfigMap {
                name: object.name.clone(),
                why: "it has no `config` key; MetalLB's layout is data.config holding the YAML"
                    .into(),
            };
            self.warnings.push(Warning { object, problem });
            return;
        };
        let cfg: LegacyConfig = match serde_yaml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let problem = Error::BadConfigMap {
                    name: object.name.clone(),
                    why: format!("data.config is not MetalLB's configuration: {e}"),
                };
                self.warnings.push(Warning { object, problem });
                return;
            }
        };
        for key in cfg.other.keys() {
            let why = match key.as_str() {
                "peers" | "bgp-communities" | "bfd-profiles" => {
                    "BGP is not implemented; flatlan announces on the LAN (layer 2)"
                }
                _ => "it is not a key of MetalLB's configuration that flatlan knows",
            };
            self.warn(&object, &format!("data.config: {key}"), why);
        }
        for (i, p) in cfg.address_pools.iter().enumerate() {
            let at = format!("data.config: address-pools[{i}] ({})", p.name);
            if p.protocol != "layer2" {
                self.warn(&object, &format!("{at}: protocol: {}", p.protocol), "only protocol: layer2 pools are served; this pool's addresses are not handed out");
                continue;
            }
            if !p.bgp_advertisements.is_empty() {
                self.warn(
                    &object,
                    &format!("{at}: bgp-advertisements"),
                    "BGP is not implemented",
                );
            }
            for key in p.other.keys() {
                self.warn(
                    &object,
                    &format!("{at}: {key}"),
                    "it is not a field of a MetalLB address pool",
                );
            }
            let f = PoolFields {
                addresses: &p.addresses,
                auto_assign: p.auto_assign,
                avoid_buggy_ips: p.avoid_buggy_ips,
                alloc: None,
            };
            match pool(&object, Source::MetalLbConfigMap, created, Labels::new(), f) {
                Ok(mut pool) => {
                    // The pool's own name; its object stays the ConfigMap,
                    // which is what an Event can point at.
                    pool.name.clone_from(&p.name);
                    self.pools.push(pool);
                    self.advertisements.push(Advertisement {
                        object: object.clone(),
                        pools: vec![p.name.clone()],
                        pool_selectors: vec![],
                        node_selectors: vec![],
                        service_selectors: vec![],
                        interfaces: vec![],
                    });
                }
                Err(e) => {
                    let problem = Error::BadConfigMap {
                        name: object.name.clone(),
                        why: format!("{at}: {e}"),
                    };
                    self.warnings.push(Warning {
                        object: object.clone(),
                        problem,
                    });
                }
            }
        }
    }

    fn warn(&mut self, object: &ObjectRef, what: &str, why: &str) {
        self.warnings.push(Warning {
            object: object.clone(),
            problem: Error::Unsupported {
                what: what.into(),
                why: why.into(),
            },
        });
    }

    fn pool(
        &mut self,
        object: ObjectRef,
        source: Source,
        created: i64,
        labels: Labels,
        f: PoolFields,
    ) {
        match pool(&object, source, created, labels, f) {
            Ok(p) => self.pools.push(p),
            Err(problem) => self.warnings.push(Warning { object, problem }),
        }
    }
}

fn pool(
    object: &ObjectRef,
    source: Source,
    created: i64,
    labels: Labels,
    f: PoolFields,
) -> Result<Pool> {
    let ranges = Pool::parse_ranges(f.addresses)?;
    let alloc = match f.alloc {
        None => ServiceAllocation::default(),
        Some(a) => ServiceAllocation {
            priority: a.priority,
            namespaces: a.namespaces.clone(),
            namespace_selectors: Selector::parse_all(
                &a.namespace_selectors,
                "spec.serviceAllocation.namespaceSelectors",
            )?,
            service_selectors: Selector::parse_all(
                &a.service_selectors,
                "spec.serviceAllocation.serviceSelectors",
            )?,
        },
    };
    Ok(Pool {
        name: object.name.clone(),
        object: object.clone(),
        source,
        created,
        labels,
        ranges,
        auto_assign: f.auto_assign.unwrap_or(true),
        avoid_buggy_ips: f.avoid_buggy_ips,
        alloc,
    })
}

fn advertisement(object: ObjectRef, f: AdFields) -> Result<Advertisement> {
    // Byte slicing would split a multi-byte name; strip the one allowed `*`.
    if let Some(bad) = f
        .interfaces
        .iter()
        .find(|i| i.is_empty() || i.strip_suffix('*').unwrap_or(i).contains('*'))
    {
        return Err(Error::BadSelector {
            field: "spec.interfaces".into(),
            why: format!(
                "{bad:?} is not an interface name (a `*` may only end a prefix, as in enp*)"
            ),
        });
    }
    Ok(Advertisement {
        object,
        pools: f.pools.to_vec(),
        pool_selectors: Selector::parse_all(f.pool_selectors, "spec.ipAddressPoolSelectors")?,
        node_selectors: Selector::parse_all(f.node_selectors, "spec.nodeSelectors")?,
        service_selectors: Selector::parse_all(f.service_selectors, "spec.serviceSelectors")?,
        interfaces: f.interfaces.to_vec(),
    })
}

#[cfg(test)]
mod tests;
