//! The allocation store at its limits (issue 10): DEL on a corrupt store,
//! unknown store versions, private files, remembered identities that
//! outnumber the addresses, and the `flatlan ipam` command line.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use flatlan_e2e::{allocation_count, error_code, ipam_ls, pod_veths, settle_store, FlatLab};
use netns_testkit::LabConfig;

fn store_dir(l: &FlatLab) -> std::path::PathBuf {
    l.data_dir(1).join("lan")
}

fn corrupt_files(l: &FlatLab) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store_dir(l))
        .expect("store dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

/// Item 3: with the pod's veth gone and `state.json` corrupt, every DEL
/// returned 106. Now DEL succeeds, restoring `state.json.prev` when it is
/// usable (`prev_too`: it is not, and the store starts empty).
fn del_on_a_corrupt_store(prev_too: bool) {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = l.network(1);
    let kept = l.pod(1, "kept");
    let gone = l.pod(1, "gone");
    settle_store(&l.data_dir(1));
    for veth in pod_veths(node) {
        node.exec_ok(&["ip", "link", "del", &veth])
            .expect("delete the host veth");
    }
    std::fs::write(store_dir(&l).join("state.json"), b"{\"allocations\": [{").expect("corrupt");
    if prev_too {
        std::fs::write(store_dir(&l).join("state.json.prev"), b"[]").expect("corrupt prev");
    }

    net.del(node, &gone.att, Some(&gone.result))
        .expect("DEL on a corrupt store succeeds");
    net.del(node, &gone.att, Some(&gone.result))
        .expect("and again");
    let aside = corrupt_files(&l);
    assert!(
        aside.iter().any(|n| n.starts_with("state.json.corrupt-")),
        "the corrupt file is kept: {aside:?}"
    );
    let state = flatlan_e2e::store_state(&l.data_dir(1));
    let ips: Vec<&str> = state["allocations"]
        .as_array()
        .expect("allocations")
        .iter()
        .filter_map(|a| a["ip"].as_str())
        .collect();
    if prev_too {
        assert!(ips.is_empty(), "both unusable: an empty store, not {ips:?}");
        assert!(aside
            .iter()
            .any(|n| n.starts_with("state.json.prev.corrupt-")));
    } else {
        // The state before the last commit knew `kept`; `gone` was freed
        // by the DEL, whether or not the restored state knew it.
        assert_eq!(ips, [kept.ip.to_string()], "restored from state.json.prev");
    }
    // The store works again: a new pod gets an address `kept` does not
    // hold (its veth is gone, so this relies on the store, not the probe,
    // only when the previous state was restored).
    let next = l.pod(1, "next");
    if !prev_too {
        assert_ne!(next.ip, kept.ip);
    }
    settle_store(&l.data_dir(1));
}

#[test]
fn del_succeeds_on_a_corrupt_store_restoring_the_previous_state() {
    del_on_a_corrupt_store(false);
}

#[test]
fn del_succeeds_when_both_store_files_are_corrupt() {
    del_on_a_corrupt_store(true);
}

/// Item 7: `[]` and a newer `version` were accepted as an empty store.
#[test]
fn a_store_of_another_format_is_rejected_with_what_to_do() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let _first = l.pod(1, "first");
    settle_store(&l.data_dir(1));
    let state = store_dir(&l).join("state.json");
    let newer = br#"{"version": 99, "allocations": []}"#;
    std::fs::write(&state, newer).expect("write");
    let ns = l.lab.add_pod_netns(1, "second").expect("netns");
    let att = netns_testkit::cni::Attachment::new("ctr-second", &ns);
    let err = l
        .network(1)
        .add(l.node_ns(1), &att)
        .expect_err("a newer store");
    assert_eq!(error_code(&err), Some(106), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("version 99") && msg.contains("newer flatlan"),
        "{msg}"
    );
    assert!(msg.contains("aside"), "says what to do: {msg}");
    assert_eq!(std::fs::read(&state).expect("read"), newer, "left alone");

    // A JSON array is no store at all: moved aside, not read as empty.
    std::fs::write(&state, b"[]").expect("write");
    let third = l.pod(1, "third");
    assert!(corrupt_files(&l)
        .iter()
        .any(|n| n.starts_with("state.json.corrupt-")));
    assert_eq!(
        flatlan_e2e::store_state(&l.data_dir(1))["version"],
        1,
        "a real store replaced it"
    );
    assert!(allocation_count(&l.data_dir(1)) >= 1, "{}", third.ip);
    settle_store(&l.data_dir(1));
}

/// Item 7: the store holds pod names; it was world-readable.
#[test]
fn store_files_are_owner_only() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let _pod = l.pod(1, "p");
    settle_store(&l.data_dir(1));
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = store_dir(&l);
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(&dir).expect("store dir") {
        let p = e.expect("entry").path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

/// Item 11: Deployments scaled 8 → 0 → 8 three times leave three times as
/// many pod identities as the 8 addresses. Every new pod still gets an
/// address, and `ipam ls` lists each free address at most once as
/// remembered, never one a pod holds.
#[test]
fn remembered_identities_never_cost_a_new_pod_an_address() {
    const RANGE: &str = "192.168.2.210-192.168.2.217";
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let net = flatlan_e2e::network(l.state.path(), 1, &[RANGE]);
    for round in 0..3 {
        let pods: Vec<_> = (0..8)
            .map(|i| l.pod_on(&net, 1, &format!("web-{round}-{i}")))
            .collect();
        let rows = ipam_ls(node, &l.data_dir(1));
        let remembered: Vec<_> = rows
            .iter()
            .filter(|r| r["state"].as_str().unwrap_or("").starts_with("remembered"))
            .collect();
        assert!(
            remembered.is_empty(),
            "round {round}: every address is allocated, none remembered: {remembered:?}"
        );
        for p in &pods {
            net.del(node, &p.att, Some(&p.result)).expect("DEL");
        }
        let rows = ipam_ls(node, &l.data_dir(1));
        assert_eq!(
            rows.len(),
            8,
            "round {round}: one row per address: {rows:#?}"
        );
        assert!(rows.iter().all(|r| {
            r["state"].as_str().unwrap_or("").starts_with("remembered")
                && r["pod"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("default/web-{round}-"))
        }));
    }
    settle_store(&l.data_dir(1));
}

fn flatlan(node: &netns_testkit::Netns, args: &[&str]) -> Output {
    let bin = flatlan_e2e::bin("flatlan").display().to_string();
    let mut argv = vec![bin.as_str()];
    argv.extend_from_slice(args);
    node.exec(&argv).expect("run flatlan")
}

/// Item 8: `--help` exited 2 with no output; a missing data directory
/// gave an empty table; allocations from another boot looked live.
#[test]
fn ipam_command_line_helps_and_says_what_is_wrong() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    for args in [
        &["--help"][..],
        &["ipam", "--help"],
        &["ipam", "ls", "--help"],
        &["ipam", "ls", "-h"],
        &["ipam", "release", "--help"],
        &["ipam", "release", "10.0.0.1", "--help"],
        &["ipam", "watch", "--help"],
        &["ipam", "probe-ahead", "--help"],
    ] {
        let out = flatlan(node, args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        assert!(stdout.starts_with("usage:"), "{args:?}: {stdout}");
    }
    let out = flatlan(node, &["ipam", "ls", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));

    let missing = l.state.path().join("no-such-dir");
    let out = flatlan(
        node,
        &["ipam", "ls", "--data-dir", &missing.display().to_string()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(
        err.contains("does not exist") && err.contains("no-such-dir"),
        "{err}"
    );

    let pod = l.pod(1, "before-reboot");
    let rows = ipam_ls(node, &l.data_dir(1));
    let row = |rows: &[serde_json::Value]| {
        rows.iter()
            .find(|r| r["ip"] == pod.ip.to_string())
            .map(|r| r["state"].as_str().unwrap_or("").to_string())
            .expect("listed")
    };
    assert_eq!(row(&rows), "allocated");
    l.set_boot_id(1, "boot-2");
    let rows = ipam_ls(node, &l.data_dir(1));
    assert!(row(&rows).starts_with("reclaimable"), "{rows:?}");
    settle_store(&l.data_dir(1));
}
