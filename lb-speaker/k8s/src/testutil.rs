//! Builders for the unit tests.

use crate::model::{ObjectRef, Pool, Port, ServiceAllocation, ServiceKey, ServiceRequest, Source};
use crate::selector::Labels;

pub fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A valid flatlan pool, autoAssign on, created at `created`.
pub fn pool(name: &str, created: i64, addresses: &[&str]) -> Pool {
    let addresses: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    Pool {
        name: name.into(),
        object: ObjectRef {
            api_version: "flatlan.dev/v1alpha1".into(),
            kind: "IPAddressPool".into(),
            namespace: None,
            name: name.into(),
        },
        source: Source::Flatlan,
        created,
        labels: Labels::new(),
        ranges: Pool::parse_ranges(&addresses).expect("test pool parses"),
        auto_assign: true,
        avoid_buggy_ips: false,
        alloc: ServiceAllocation::default(),
    }
}

/// A single-stack IPv4 Service with TCP port 80 in namespace `default`.
pub fn svc(name: &str) -> ServiceRequest {
    ServiceRequest {
        key: ServiceKey {
            namespace: "default".into(),
            name: name.into(),
        },
        primary_v4: true,
        ports: vec![tcp(80)],
        ..Default::default()
    }
}

pub fn tcp(port: i32) -> Port {
    Port {
        protocol: "TCP".into(),
        port,
    }
}

pub fn ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("test address parses")
}
