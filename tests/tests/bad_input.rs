//! Every bad input gets the documented CNI code, a message a user can act
//! on, no panic, and leaves nothing behind.

use flatlan_e2e::{allocation_count, plugin_conf, pod_veths, run_raw, FlatLab};
use netns_testkit::LabConfig;
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    /// Edits the valid config; `None` sends `raw` instead.
    edit: Option<fn(&mut Value)>,
    raw: &'static [u8],
    /// Environment overrides: a value of "" removes the variable.
    env: &'static [(&'static str, &'static str)],
    code: u64,
    msg: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "malformed JSON",
        edit: None,
        raw: b"{\"cniVersion\": \"1.1.0\", ",
        env: &[],
        code: 6,
        msg: "decode",
    },
    Case {
        name: "not an object",
        edit: None,
        raw: b"[1, 2]",
        env: &[],
        code: 7,
        msg: "configuration",
    },
    Case {
        name: "unknown cniVersion",
        edit: Some(|c| c["cniVersion"] = "9.9.9".into()),
        raw: b"",
        env: &[],
        code: 1,
        msg: "0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
    },
    Case {
        name: "too old cniVersion",
        edit: Some(|c| c["cniVersion"] = "0.2.0".into()),
        raw: b"",
        env: &[],
        code: 1,
        msg: "incompatible",
    },
    Case {
        name: "missing CNI_COMMAND",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_COMMAND", "")],
        code: 4,
        msg: "CNI_COMMAND",
    },
    Case {
        name: "unknown CNI_COMMAND",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_COMMAND", "FROB")],
        code: 4,
        msg: "FROB",
    },
    Case {
        name: "missing CNI_CONTAINERID",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_CONTAINERID", "")],
        code: 4,
        msg: "CNI_CONTAINERID",
    },
    Case {
        name: "missing CNI_NETNS",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_NETNS", "")],
        code: 4,
        msg: "CNI_NETNS",
    },
    Case {
        name: "missing CNI_IFNAME",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_IFNAME", "")],
        code: 4,
        msg: "CNI_IFNAME",
    },
    Case {
        name: "bad CNI_IFNAME",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_IFNAME", "a/b")],
        code: 4,
        msg: "interface name",
    },
    Case {
        name: "netns does not exist",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_NETNS", "/run/netns/flatlan-no-such-ns")],
        code: 3,
        msg: "does not exist",
    },
    Case {
        name: "bridge missing",
        edit: Some(|c| c["bridge"] = "nobr0".into()),
        raw: b"",
        env: &[],
        code: 100,
        msg: "nobr0",
    },
    Case {
        name: "bridge is a veth",
        edit: Some(|c| c["bridge"] = "eth0".into()),
        raw: b"",
        env: &[],
        code: 100,
        // The message is JSON in stdout: its quotes are escaped.
        msg: "eth0\\\" is a veth device, not a Linux bridge",
    },
    Case {
        name: "bridge is lo",
        edit: Some(|c| c["bridge"] = "lo".into()),
        raw: b"",
        env: &[],
        code: 100,
        msg: "lo\\\" is a device without a link kind",
    },
    Case {
        name: "CNI_NETNS is the plugin's own namespace",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_NETNS", "/proc/self/ns/net")],
        code: 4,
        msg: "own network namespace",
    },
    Case {
        name: "probe wait of ten minutes",
        edit: Some(|c| c["ipam"]["probe"] = json!({"waitMs": 600_000})),
        raw: b"",
        env: &[],
        code: 7,
        msg: "ipam.probe.waitMs 600000 is out of range",
    },
    Case {
        name: "relative dataDir",
        edit: Some(|c| c["ipam"]["dataDir"] = "flatlan-data".into()),
        raw: b"",
        env: &[],
        code: 7,
        msg: "ipam.dataDir \\\"flatlan-data\\\" must be an absolute path",
    },
    Case {
        name: "relative rangeFile",
        edit: Some(|c| c["ipam"]["rangeFile"] = "range.json".into()),
        raw: b"",
        env: &[],
        code: 7,
        msg: "ipam.rangeFile",
    },
    Case {
        name: "multicast MAC capability",
        edit: Some(|c| c["runtimeConfig"] = json!({"mac": "01:00:5e:00:00:fb"})),
        raw: b"",
        env: &[],
        code: 7,
        msg: "runtimeConfig.mac",
    },
    Case {
        name: "all-zero MAC in CNI_ARGS",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_ARGS", "IgnoreUnknown=1;MAC=00:00:00:00:00:00")],
        code: 4,
        msg: "all-zero",
    },
    Case {
        name: "garbage MAC in CNI_ARGS",
        edit: Some(|_| {}),
        raw: b"",
        env: &[("CNI_ARGS", "MAC=0a:58:zz:00:00:01")],
        code: 4,
        msg: "not a MAC address",
    },
    Case {
        name: "range outside subnet",
        edit: Some(|c| c["ipam"]["ranges"] = json!(["192.168.3.10-192.168.3.20"])),
        raw: b"",
        env: &[],
        code: 7,
        msg: "outside the LAN subnet",
    },
    Case {
        name: "range is garbage",
        edit: Some(|c| c["ipam"]["ranges"] = json!(["192.168.2.50-foo"])),
        raw: b"",
        env: &[],
        code: 7,
        msg: "192.168.2.50-foo",
    },
    Case {
        name: "gateway outside subnet",
        edit: Some(|c| c["ipam"]["gateway"] = "10.0.0.1".into()),
        raw: b"",
        env: &[],
        code: 7,
        msg: "gateway",
    },
    Case {
        name: "no subnet",
        edit: Some(|c| {
            c["ipam"] = json!({});
        }),
        raw: b"",
        env: &[],
        code: 7,
        msg: "ipam.subnet",
    },
    Case {
        name: "mtu of the wrong type",
        edit: Some(|c| c["mtu"] = "big".into()),
        raw: b"",
        env: &[],
        code: 7,
        msg: "mtu",
    },
    Case {
        name: "requested IP outside the slice",
        edit: Some(|c| c["runtimeConfig"] = json!({"ips": ["192.168.2.50/24"]})),
        raw: b"",
        env: &[],
        code: 105,
        msg: "192.168.2.50",
    },
    Case {
        name: "requested IP is not an IP",
        edit: Some(|c| c["runtimeConfig"] = json!({"ips": ["nope"]})),
        raw: b"",
        env: &[],
        code: 7,
        msg: "nope",
    },
    Case {
        name: "network name with a slash",
        edit: Some(|c| c["name"] = "../etc".into()),
        raw: b"",
        env: &[],
        code: 7,
        msg: "../etc",
    },
];

#[test]
fn bad_input_gets_the_documented_code_and_leaks_nothing() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let pod = l.lab.add_pod_netns(1, "bad").expect("netns");
    let netns = pod.path().display().to_string();
    let mut failures = Vec::new();
    for case in CASES {
        let mut conf = plugin_conf(l.state.path(), 1, &[]).expect("plugin config");
        conf["cniVersion"] = "1.1.0".into();
        conf["name"] = "lan".into();
        let stdin = match case.edit {
            Some(edit) => {
                edit(&mut conf);
                conf.to_string().into_bytes()
            }
            None => case.raw.to_vec(),
        };
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-bad"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        for (k, v) in case.env {
            env.retain(|(ek, _)| ek != k);
            if !v.is_empty() {
                env.push((k, v));
            }
        }
        let run = run_raw(node, &env, &stdin);
        let ok = run.code == Some(1)
            && run.cni_code() == Some(case.code)
            && run.stdout.contains(case.msg)
            && !run.stderr.contains("panicked");
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, want code {} with {:?}; stdout {} stderr {}",
                case.name,
                run.code,
                case.code,
                case.msg,
                run.stdout.trim(),
                run.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(pod_veths(node).is_empty(), "a failed ADD left a veth");
    assert_eq!(
        allocation_count(&l.data_dir(1)),
        0,
        "a failed ADD leaked an address"
    );
    let pod_links = flatlan_e2e::links(&pod);
    assert_eq!(
        pod_links,
        vec!["lo".to_string()],
        "a failed ADD left an interface in the pod"
    );
    // MAC pinning never reached the uplink or lo (NET_ADDR_SET is 3).
    for dev in ["eth0", "lo"] {
        let out = node
            .exec_ok(&["cat", &format!("/sys/class/net/{dev}/addr_assign_type")])
            .expect("addr_assign_type");
        assert_ne!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "3",
            "ADD with `bridge: {dev}` changed {dev}'s MAC"
        );
    }
}

/// 100 MB on stdin once cost 850 MB of memory; now it is cut at 1 MiB.
#[test]
fn stdin_beyond_the_cap_is_refused_with_code_6() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let pod = l.lab.add_pod_netns(1, "big").expect("netns");
    let netns = pod.path().display().to_string();
    let mut conf = plugin_conf(l.state.path(), 1, &[]).expect("plugin config");
    conf["cniVersion"] = "1.1.0".into();
    conf["name"] = "lan".into();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr-big"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    // Valid JSON: only its size is wrong.
    let mut stdin = conf.to_string().into_bytes();
    stdin.extend(std::iter::repeat_n(b' ', 2 << 20));
    let run = run_raw(node, &env, &stdin);
    assert_eq!(run.cni_code(), Some(6), "{} {}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1024 KiB"), "{}", run.stdout);
    assert!(pod_veths(node).is_empty());
    // A config just under the cap is still read whole.
    let mut stdin = conf.to_string().into_bytes();
    stdin.extend(std::iter::repeat_n(b' ', (1 << 20) - stdin.len()));
    let run = run_raw(node, &env, &stdin);
    assert_eq!(run.code, Some(0), "{} {}", run.stdout, run.stderr);
}

#[test]
fn an_exhausted_range_gets_101_and_keeps_what_was_allocated() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let net = flatlan_e2e::network(l.state.path(), 1, &["192.168.2.210-192.168.2.211"]);
    let a = l.pod_on(&net, 1, "a");
    let b = l.pod_on(&net, 1, "b");
    assert_ne!(a.ip, b.ip);
    let ns = l.lab.add_pod_netns(1, "c").expect("netns");
    let att = netns_testkit::cni::Attachment::new("ctr-c", &ns);
    let err = net
        .add(l.node_ns(1), &att)
        .expect_err("third ADD on a 2-address range");
    assert_eq!(flatlan_e2e::error_code(&err), Some(101), "{err}");
    assert!(err.to_string().contains("exhausted"), "{err}");
    assert_eq!(allocation_count(&l.data_dir(1)), 2);
    assert_eq!(pod_veths(l.node_ns(1)).len(), 2);
}
