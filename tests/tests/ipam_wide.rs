//! `flatlan ipam ls --wide` and `--watch` (issue 14, item 5): for each pod
//! address on a node, the pod's MAC, host veth, network namespace (path and
//! inode) and the host processes inside it, read from the node's side; a
//! pod whose namespace is gone shows as gone.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use flatlan_e2e::{bin, ipam_ls_with, links, pod_veths, settle_store, FlatLab, Pod};
use netns_testkit::{LabConfig, Netns};
use serde_json::Value;

/// `flatlan ipam ls ARGS` inside the node, against the lab's store.
fn ls(l: &FlatLab, args: &[&str]) -> String {
    ipam_ls_with(l.node_ns(1), &l.data_dir(1), args)
}

fn inode(ns: &Netns) -> u64 {
    std::fs::metadata(ns.path()).expect("stat netns").ino()
}

/// Starts `sleep` in the pod and waits until it runs there (the PID is
/// `ip netns exec`'s until it has entered the namespace and exec'd).
fn sleeper(pod: &Pod) -> netns_testkit::ProcHandle {
    let p = pod
        .ns
        .spawn(&["sleep", "1000"])
        .expect("start sleep in the pod");
    let want = format!("net:[{}]", inode(&pod.ns));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ns = std::fs::read_link(format!("/proc/{}/ns/net", p.pid())).ok();
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid())).ok();
        if ns.is_some_and(|l| l.to_str() == Some(want.as_str()))
            && comm.is_some_and(|c| c.trim() == "sleep")
        {
            return p;
        }
        assert!(Instant::now() < deadline, "sleep never ran in the pod");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON row of `ip`.
fn row<'a>(rows: &'a [Value], pod: &Pod) -> &'a Value {
    rows.iter()
        .find(|r| r["ip"] == pod.ip.to_string())
        .unwrap_or_else(|| panic!("{} not listed: {rows:?}", pod.ip))
}

#[test]
fn wide_listing_names_each_pods_veth_namespace_and_processes() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let node = l.node_ns(1);
    let busy = l.pod(1, "busy");
    let idle = l.pod(1, "idle");
    let doomed = l.pod(1, "doomed");
    settle_store(&l.data_dir(1));
    let mut sleep = sleeper(&busy);

    // The doomed pod's namespace is deleted without a DEL (a crashed
    // runtime): the kernel takes its veth pair with it.
    let doomed_veth = flatlan_cni::names::host_veth(&doomed.att.container_id, "eth0");
    let doomed_name = doomed.ns.name().to_string();
    let doomed_ip = doomed.ip;
    drop(doomed);
    std::process::Command::new("ip")
        .args(["netns", "del", &doomed_name])
        .status()
        .expect("ip netns del");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod_veths(node).contains(&doomed_veth) {
        assert!(Instant::now() < deadline, "the deleted pod's veth stayed");
        std::thread::sleep(Duration::from_millis(20));
    }

    let rows: Vec<Value> =
        serde_json::from_str(&ls(&l, &["--wide", "--json"])).expect("ls --wide --json");
    let node_links = links(node);
    for (pod, pids) in [(&busy, vec![sleep.pid()]), (&idle, vec![])] {
        let r = row(&rows, pod);
        let veth = r["veth"].as_str().expect("veth");
        assert_eq!(
            veth,
            flatlan_cni::names::host_veth(&pod.att.container_id, "eth0")
        );
        assert!(
            node_links.iter().any(|n| n == veth),
            "{veth} on the node: {r}"
        );
        assert_eq!(r["live"], "up", "{r}");
        assert_eq!(
            r["pod_mac"],
            pod.ns.link_mac("eth0").expect("pod MAC"),
            "{r}"
        );
        assert_eq!(
            r["mac"], r["pod_mac"],
            "the store's MAC is the live one: {r}"
        );
        assert_eq!(r["netns"], pod.ns.path().display().to_string(), "{r}");
        assert_eq!(r["netns_inode"], inode(&pod.ns), "{r}");
        let got: Vec<u64> = r["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .filter_map(|p| p["pid"].as_u64())
            .collect();
        let want: Vec<u64> = pids.iter().map(|p| u64::from(*p)).collect();
        assert_eq!(got, want, "{r}");
    }
    let busy_row = row(&rows, &busy);
    let cmd = busy_row["processes"][0]["command"].as_str().unwrap_or("");
    assert!(cmd.contains("sleep"), "{busy_row}");
    let gone = rows
        .iter()
        .find(|r| r["ip"] == doomed_ip.to_string())
        .unwrap_or_else(|| panic!("the gone pod's address is still allocated: {rows:?}"));
    assert_eq!(gone["live"], "gone", "{gone}");
    assert!(
        gone["netns"].is_null() && gone["netns_inode"].is_null(),
        "{gone}"
    );
    assert_eq!(gone["processes"], serde_json::json!([]), "{gone}");

    // The table says the same, with the processes under their pod's row.
    let table = ls(&l, &["--wide"]);
    let lines: Vec<&str> = table.lines().collect();
    let at = |ip: std::net::Ipv4Addr| {
        lines
            .iter()
            .position(|l| l.split_whitespace().nth(1) == Some(&ip.to_string()))
            .unwrap_or_else(|| panic!("{ip} not in\n{table}"))
    };
    let b = at(busy.ip);
    for want in [
        busy_row["veth"].as_str().unwrap_or("?").to_string(),
        busy.ns.path().display().to_string(),
        inode(&busy.ns).to_string(),
        busy.ns.link_mac("eth0").expect("MAC"),
        " up ".to_string(),
    ] {
        assert!(
            lines[b].contains(&want),
            "{want:?} in {:?}\n{table}",
            lines[b]
        );
    }
    let pid_line = format!("pid {}", sleep.pid());
    assert!(
        lines[b + 1].trim_start().starts_with(&pid_line) && lines[b + 1].contains("sleep"),
        "the sleep under its pod:\n{table}"
    );
    let i = at(idle.ip);
    assert!(
        lines
            .get(i + 1)
            .is_none_or(|l| !l.trim_start().starts_with("pid ")),
        "no process under the idle pod:\n{table}"
    );
    let g = lines[at(doomed_ip)];
    assert!(
        g.contains(" gone ") && !g.contains(&doomed_veth),
        "{g}\n{table}"
    );

    sleep
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill sleep");
}

/// A namespace no mount names (a runtime that keeps it only by its
/// processes) is named by the first process's /proc/PID/ns/net.
#[test]
fn a_namespace_held_only_by_a_process_is_named_through_proc() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let pod = l.pod(1, "held");
    settle_store(&l.data_dir(1));
    let ino = inode(&pod.ns);
    let mut sleep = sleeper(&pod);
    // What `ip netns del` does, while sleep keeps the namespace alive.
    nix::mount::umount2(&pod.ns.path(), nix::mount::MntFlags::MNT_DETACH).expect("umount");
    std::fs::remove_file(pod.ns.path()).expect("remove the mount point");

    let rows: Vec<Value> =
        serde_json::from_str(&ls(&l, &["--wide", "--json"])).expect("ls --wide --json");
    let r = row(&rows, &pod);
    assert_eq!(r["live"], "up", "{r}");
    assert_eq!(r["netns"], format!("/proc/{}/ns/net", sleep.pid()), "{r}");
    assert_eq!(r["netns_inode"], ino, "{r}");
    assert_eq!(r["processes"][0]["pid"], sleep.pid(), "{r}");
    sleep
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill sleep");
}

#[test]
fn watch_prints_a_listing_every_interval_when_piped() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let _pod = l.pod(1, "w");
    settle_store(&l.data_dir(1));
    let dir = l.data_dir(1).display().to_string();
    let flatlan = bin("flatlan").display().to_string();
    let mut watch = l
        .node_ns(1)
        .spawn(&[
            &flatlan,
            "ipam",
            "ls",
            "--data-dir",
            &dir,
            "--wide",
            "--watch",
            "1",
        ])
        .expect("start ls --watch");
    let deadline = Instant::now() + Duration::from_secs(15);
    let frames = loop {
        let log = watch.log();
        let n = log.matches("NETWORK ").count();
        if n >= 2 {
            break log;
        }
        assert!(watch.is_running(), "ls --watch exited: {log}");
        assert!(
            Instant::now() < deadline,
            "fewer than 2 listings in 15 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    watch
        .kill(nix::sys::signal::Signal::SIGKILL)
        .expect("kill ls --watch");
    assert!(
        !frames.contains('\x1b'),
        "no terminal escapes when piped: {frames:?}"
    );
    assert!(
        frames.contains("\n\nNETWORK "),
        "listings are separated by a blank line: {frames:?}"
    );
}

#[test]
fn wide_and_watch_are_refused_where_they_mean_nothing() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let flatlan = bin("flatlan").display().to_string();
    for args in [
        &["ipam", "release", "10.0.0.1", "--wide"][..],
        &["ipam", "ls", "--watch", "0"],
        &["ipam", "ls", "--watch", "soon"],
    ] {
        let mut argv = vec![flatlan.as_str()];
        argv.extend_from_slice(args);
        let out = l.node_ns(1).exec(&argv).expect("run flatlan");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
}
