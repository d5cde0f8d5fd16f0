use super::probe::{parse_addresses, parse_arping};
use super::*;

const DOC: &str = r#"{
  "node": "node1", "updated_unix_ms": 1700000000000,
  "members": ["node2", "node3"], "leaving": false,
  "vips": [
    {"vip": "10.77.1.1", "owner": "node1", "state": "announcing", "interface": "br0",
     "mac": "0A:58:C0:A8:02:0B", "last_garp_unix_ms": 1, "conflict": null, "foreign": null},
    {"vip": "10.77.1.2", "owner": "node2", "state": "standby", "interface": "br0",
     "mac": null, "last_garp_unix_ms": null, "conflict": null, "foreign": null},
    {"vip": "10.77.1.3", "owner": "node3", "state": "releasing", "interface": "br0",
     "mac": "0a:58:c0:a8:02:0b", "last_garp_unix_ms": 1, "conflict": null, "foreign": null},
    {"vip": "10.77.1.4", "owner": null, "state": "standby", "interface": null,
     "mac": null, "last_garp_unix_ms": null, "conflict": null, "foreign": null}
  ]}"#;

#[test]
fn parses_a_status_document() {
    let s = SpeakerStatus::parse(DOC.as_bytes()).unwrap();
    assert_eq!(s.node, "node1");
    assert_eq!(s.updated_unix_ms, 1_700_000_000_000);
    assert_eq!(
        s.members.iter().map(String::as_str).collect::<Vec<_>>(),
        ["node2", "node3"]
    );
    assert!(!s.leaving);
    assert_eq!(s.vips.len(), 4);
    let v1: IpAddr = "10.77.1.1".parse().unwrap();
    assert_eq!(s.vips[&v1].mac.as_deref(), Some("0a:58:c0:a8:02:0b"));
    assert_eq!(s.vips[&v1].owner.as_deref(), Some("node1"));
    let held: Vec<String> = s.held().iter().map(ToString::to_string).collect();
    assert_eq!(held, ["10.77.1.1", "10.77.1.3"]);
    let v4: IpAddr = "10.77.1.4".parse().unwrap();
    assert_eq!(s.vips[&v4].owner, None);
}

#[test]
fn a_changed_schema_fails_loudly() {
    for (from, to) in [
        ("\"members\"", "\"peers\""),
        ("\"state\": \"standby\"", "\"phase\": \"standby\""),
        ("\"updated_unix_ms\"", "\"updated\""),
        ("\"owner\": \"node2\"", "\"owner\": 2"),
        ("\"vip\": \"10.77.1.2\"", "\"vip\": \"10.77.1.1\""),
    ] {
        let doc = DOC.replacen(from, to, 1);
        assert_ne!(doc, DOC);
        assert!(SpeakerStatus::parse(doc.as_bytes()).is_err(), "{from}");
    }
    assert!(SpeakerStatus::parse(b"{\"node\": \"n\"").is_err());
}

#[test]
fn fleet_config_lists_peers_vips_and_status() {
    let vips: Vec<IpAddr> = vec!["10.77.1.1".parse().unwrap(), "10.77.1.2".parse().unwrap()];
    let y = fleet_yaml(
        "node1",
        "192.168.2.11".parse().unwrap(),
        &[
            "\"192.168.2.12:7946\"".into(),
            "\"192.168.2.13:7946\"".into(),
        ],
        &vips,
        FleetOptions::default(),
        Path::new("/tmp/s.json"),
    );
    assert!(y.contains("name: node1, address: 192.168.2.11"), "{y}");
    assert!(
        y.contains("peers: [\"192.168.2.12:7946\", \"192.168.2.13:7946\"]"),
        "{y}"
    );
    assert!(
        y.ends_with("vips:\n  - address: \"10.77.1.1\"\n  - address: \"10.77.1.2\"\n"),
        "{y}"
    );
    assert!(y.contains("statusFile: \"/tmp/s.json\""), "{y}");
    assert!(
        y.contains("heartbeatInterval: 100ms\ndeadAfter: 3\nassign: true\n"),
        "{y}"
    );
}

#[test]
fn parses_ip_addr_json_and_arping_output() {
    let j = br#"[{"ifindex":1,"ifname":"lo","addr_info":[
        {"family":"inet","local":"127.0.0.1","prefixlen":8},
        {"family":"inet","local":"10.77.1.1","prefixlen":32},
        {"family":"inet6","local":"::1","prefixlen":128}]}]"#;
    let a = parse_addresses(j).unwrap();
    assert_eq!(
        a.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.77.1.1"]
    );
    assert!(parse_addresses(b"not json").is_err());

    let out = "ARPING 10.77.1.1 from 10.77.0.60 eth0\n\
               Unicast reply from 10.77.1.1 [0A:58:C0:A8:02:0B]  0.6ms\n\
               Unicast reply from 10.77.1.1 [0a:58:c0:a8:02:0b]  0.5ms\n\
               Sent 2 probes (2 broadcast(s))\nReceived 2 response(s)\n";
    assert_eq!(parse_arping(out), (vec!["0a:58:c0:a8:02:0b".to_owned()], 2));
    let two = format!("{out}Unicast reply from 10.77.1.1 [AA:BB:CC:DD:EE:FF]  1ms\n");
    assert_eq!(parse_arping(&two).0.len(), 2);
    assert_eq!(parse_arping("Sent 2 probes\nReceived 0 response(s)\n").1, 0);
}

#[test]
fn reads_own_rss_and_fds() {
    let me = std::process::id();
    assert!(rss_kib(me).is_some_and(|k| k > 0));
    assert!(fd_count(me).is_some_and(|n| n >= 3));
    assert_eq!(rss_kib(u32::MAX), None);
}
