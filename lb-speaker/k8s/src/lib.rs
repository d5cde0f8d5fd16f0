//! flatlan-k8s: the Kubernetes LoadBalancer layer of flatlan-speaker,
//! without a client (issue 13). Everything here is a pure function of
//! objects the watcher reads; the watcher, the Lease and the status writes
//! build on it.
//!
//! - [`crd`]: flatlan's `flatlan.dev/v1alpha1` IPAddressPool and
//!   L2Advertisement; [`crdgen`] renders deploy/crds.
//! - [`metallb`]: MetalLB's `metallb.io/v1beta1` kinds and legacy ConfigMap.
//! - [`convert`]: all of them onto the one [`model`]; [`service`]: a
//!   Service onto a [`model::ServiceRequest`].
//! - [`allocator`]: who gets which address; [`pools`] refuses overlaps.
//! - [`eligibility`]: whether this node may announce an address.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod convert;
pub mod crd;
pub mod crdgen;
pub mod eligibility;
pub mod error;
pub mod metallb;
pub mod model;
pub mod pools;
pub mod selector;
pub mod service;
pub mod status;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
