//! Cluster-wide uniqueness by construction: a LAN carved into node slices
//! (as k3s does with --cluster-cidr and a node mask), each node filling its
//! own pool completely, never yields a duplicate or an excluded address.

use std::collections::HashSet;
use std::net::IpAddr;

use flatlan_ipam::{allocate, IpRange, Pool, Want};
use ipnet::Ipv4Net;
use proptest::prelude::*;

proptest! {
    #[test]
    fn node_slices_never_collide_and_exclusions_always_win(
        node_bits in 1u8..=4,
        excl in proptest::collection::vec((0u8..=255, 0u8..8), 0..8),
    ) {
        let lan: Ipv4Net = "192.168.2.0/24".parse().unwrap();
        let exclude: Vec<IpRange> = excl
            .iter()
            .map(|&(a, len)| {
                let b = a.saturating_add(len);
                format!("192.168.2.{a}-192.168.2.{b}").parse().unwrap()
            })
            .collect();
        let slices: Vec<Ipv4Net> = lan.subnets(24 + node_bits).unwrap().collect();
        let mut cluster = HashSet::new();
        for slice in &slices {
            let pool = Pool::new(lan.into(), &[IpRange::from_net((*slice).into())], &exclude).unwrap();
            let mut mine: HashSet<IpAddr> = HashSet::new();
            let mut cursor = None;
            while let Ok(ip) = allocate(
                &pool,
                &Want { cursor, ..Default::default() },
                |ip| mine.contains(&ip).then(|| "taken".to_string()),
                |_| false,
            ) {
                prop_assert!(ipnet::IpNet::from(*slice).contains(&ip), "{ip} outside {slice}");
                prop_assert!(!exclude.iter().any(|e| e.contains(ip)), "excluded {ip} allocated");
                prop_assert!(ip != IpAddr::V4(lan.network()) && ip != IpAddr::V4(lan.broadcast()));
                prop_assert!(mine.insert(ip));
                prop_assert!(cluster.insert(ip), "{ip} allocated on two nodes");
                cursor = Some(ip);
            }
        }
    }
}
