//! `flatlan install` / `uninstall` in a temp root (issue 14): no host
//! path is touched; `--root` maps every host path under a tempdir.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flatlan_cni::install::{self, Options};

const CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "flatlan",
  "plugins": [
    {
      "type": "flatlan",
      "bridge": "br0",
      "serviceCIDRs": ["10.43.0.0/16"],
      "ipam": {
        "subnet": "192.168.2.0/24",
        "gateway": "192.168.2.1",
        "rangeFile": "/var/lib/flatlan/node-range.json"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": false }
  ]
}
"#;
const K3S_HASH: &str = "1f5aa17d7bf2e23e3d38790a4a252f21b246031e";
const K3S_CNI: &[u8] = b"k3s multi-call cni binary";
const FLATLAN: &[u8] = b"\x7fELF the flatlan plugin";

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn p(&self, host: &str) -> PathBuf {
        self.dir.path().join(host.trim_start_matches('/'))
    }
    fn write(&self, host: &str, bytes: &[u8]) -> PathBuf {
        let p = self.p(host);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }
    /// A k3s node as k3s 1.31 lays it out: data/cni holds symlinks into
    /// data/<hash>/bin/cni, and containerd's config names data/cni.
    fn k3s(&self) {
        let target = self.write(
            &format!("/var/lib/rancher/k3s/data/{K3S_HASH}/bin/cni"),
            K3S_CNI,
        );
        fs::create_dir_all(self.p("/var/lib/rancher/k3s/data/cni")).unwrap();
        // `flatlan` too: a symlink where flatlan goes must be replaced,
        // never written through (it would overwrite k3s's binary).
        for name in ["bridge", "host-local", "loopback", "portmap", "flatlan"] {
            symlink(
                &target,
                self.p(&format!("/var/lib/rancher/k3s/data/cni/{name}")),
            )
            .unwrap();
        }
        self.write(
            "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            b"[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/var/lib/rancher/k3s/data/cni\"\n  conf_dir = \"/var/lib/rancher/k3s/agent/etc/cni/net.d\"\n",
        );
        fs::create_dir_all(self.p("/var/lib/rancher/k3s/agent/etc/cni/net.d")).unwrap();
    }
    /// A k3s node whose node agent has written the slice.
    fn k3s_node() -> Root {
        let r = Root::new();
        r.k3s();
        r.range_file();
        r
    }
    fn range_file(&self) {
        self.write(
            "/var/lib/flatlan/node-range.json",
            b"{\"podCIDRs\":[\"192.168.2.208/28\"]}\n",
        );
    }
    fn opts(&self) -> Options {
        let src = self.dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("flatlan"), FLATLAN).unwrap();
        fs::write(src.join("conflist"), CONFLIST).unwrap();
        Options {
            root: self.dir.path().to_path_buf(),
            binary: Some(src.join("flatlan")),
            conflist: Some(src.join("conflist")),
            wait: Duration::ZERO,
            ..Options::default()
        }
    }
}

fn is_link(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

const K3S_BIN: &str = "/var/lib/rancher/k3s/data/cni/flatlan";
const K3S_CONF: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flatlan.conflist";

#[test]
fn k3s_layout_replaces_the_symlink_and_leaves_k3s_binary_alone() {
    let r = Root::k3s_node();
    let report = install::install(&r.opts()).unwrap();
    assert!(
        report.contains("k3s (bin dir from /var/lib/rancher/k3s/agent/etc/containerd/config.toml)"),
        "{report}"
    );
    assert!(report.contains("replaced a symlink"), "{report}");

    let bin = fs::symlink_metadata(r.p(K3S_BIN)).unwrap();
    assert!(bin.is_file(), "flatlan must be a regular file now");
    assert_eq!(bin.permissions().mode() & 0o777, 0o755);
    assert_eq!(fs::read(r.p(K3S_BIN)).unwrap(), FLATLAN);
    let k3s_cni = r.p(&format!("/var/lib/rancher/k3s/data/{K3S_HASH}/bin/cni"));
    assert_eq!(
        fs::read(&k3s_cni).unwrap(),
        K3S_CNI,
        "k3s's binary was written through the link"
    );
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        let l = r.p(&format!("/var/lib/rancher/k3s/data/cni/{name}"));
        assert_eq!(fs::read_link(&l).unwrap(), k3s_cni, "{name}");
    }
    assert_eq!(fs::read_to_string(r.p(K3S_CONF)).unwrap(), CONFLIST);
    assert_eq!(
        fs::metadata(r.p(K3S_CONF)).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // No temp file is left behind for the runtime to trip over.
    let leftovers: Vec<_> = fs::read_dir(r.p("/var/lib/rancher/k3s/data/cni"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn old_k3s_without_the_stable_dir_uses_current_bin() {
    let r = Root::new();
    fs::create_dir_all(r.p("/var/lib/rancher/k3s/data/current/bin")).unwrap();
    r.range_file();
    let report = install::install(&r.opts()).unwrap();
    assert!(report.contains("data/current/bin"), "{report}");
    assert_eq!(
        fs::read(r.p("/var/lib/rancher/k3s/data/current/bin/flatlan")).unwrap(),
        FLATLAN
    );
    assert!(r.p(K3S_CONF).is_file());
}

#[test]
fn a_rerun_is_a_no_op() {
    let r = Root::k3s_node();
    let o = r.opts();
    install::install(&o).unwrap();
    let stamp = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let files = [
        r.p(K3S_BIN),
        r.p(K3S_CONF),
        r.p("/var/lib/flatlan/installed.json"),
    ];
    let before: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    std::thread::sleep(Duration::from_millis(20));
    let report = install::install(&o).unwrap();
    assert!(
        report.contains(&format!("binary   {K3S_BIN}: unchanged")),
        "{report}"
    );
    assert!(
        report.contains(&format!("conflist {K3S_CONF}: unchanged")),
        "{report}"
    );
    let after: Vec<_> = files.iter().map(|p| stamp(p)).collect();
    assert_eq!(before, after, "a rerun rewrote a file");
}

#[test]
fn uninstall_removes_only_flatlans_files() {
    let r = Root::k3s_node();
    let other = r.write(
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/README",
        b"not a config",
    );
    install::install(&r.opts()).unwrap();
    let o = r.opts();
    let report = install::uninstall(&o).unwrap();
    assert!(report.contains(&format!("{K3S_CONF}: removed")), "{report}");
    assert!(!r.p(K3S_BIN).exists() && fs::symlink_metadata(r.p(K3S_BIN)).is_err());
    assert!(!r.p(K3S_CONF).exists());
    assert!(!r.p("/var/lib/flatlan/installed.json").exists());
    assert!(other.is_file());
    assert!(
        r.p("/var/lib/flatlan/node-range.json").is_file(),
        "the node agent's file is not the installer's"
    );
    for name in ["bridge", "host-local", "loopback", "portmap"] {
        let l = r.p(&format!("/var/lib/rancher/k3s/data/cni/{name}"));
        assert!(is_link(&l), "{name}");
    }
    assert_eq!(
        fs::read(r.p(&format!("/var/lib/rancher/k3s/data/{K3S_HASH}/bin/cni"))).unwrap(),
        K3S_CNI
    );
    // Idempotent.
    assert!(install::uninstall(&o)
        .unwrap()
        .starts_with("nothing to remove"));
}

#[test]
fn uninstall_leaves_a_recorded_path_that_is_now_someone_elses_symlink() {
    let r = Root::k3s_node();
    install::install(&r.opts()).unwrap();
    fs::remove_file(r.p(K3S_BIN)).unwrap();
    symlink("cni", r.p(K3S_BIN)).unwrap();
    let report = install::uninstall(&r.opts()).unwrap();
    assert!(report.contains("left alone"), "{report}");
    assert!(is_link(&r.p(K3S_BIN)));
}

#[test]
fn another_cnis_config_is_refused_naming_the_winner() {
    let r = Root::k3s_node();
    r.write(
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/05-cilium.conflist",
        b"{}",
    );
    let e = install::install(&r.opts()).unwrap_err().to_string();
    assert!(e.starts_with("refusing to install"), "{e}");
    assert!(
        e.contains("05-cilium.conflist sorts before 10-flatlan.conflist"),
        "{e}"
    );
    assert!(e.contains("lexically first"), "{e}");
    assert!(e.contains("--force"), "{e}");
    // Nothing half done: no binary, no conflist, no record.
    assert!(is_link(&r.p(K3S_BIN)));
    assert!(!r.p(K3S_CONF).exists());
    assert!(!r.p("/var/lib/flatlan/installed.json").exists());

    // A flatlan config of our own from an earlier install is not "another CNI".
    let forced = Options {
        force: true,
        ..r.opts()
    };
    let report = install::install(&forced).unwrap();
    assert!(report.contains("--force: installing anyway"), "{report}");
    assert!(r.p(K3S_CONF).is_file());
    let renamed = Options {
        name: "00-flatlan.conflist".into(),
        ..r.opts()
    };
    let e = install::install(&renamed).unwrap_err().to_string();
    assert!(e.contains("05-cilium.conflist"), "{e}");
    assert!(
        !e.contains("10-flatlan.conflist"),
        "our own earlier conflist is not a rival: {e}"
    );
}

#[test]
fn a_rename_removes_the_stale_conflist() {
    let r = Root::k3s_node();
    install::install(&r.opts()).unwrap();
    let renamed = Options {
        name: "00-flatlan.conflist".into(),
        ..r.opts()
    };
    let report = install::install(&renamed).unwrap();
    assert!(
        report.contains(&format!("stale    {K3S_CONF}: removed")),
        "{report}"
    );
    assert!(!r.p(K3S_CONF).exists());
    assert!(r
        .p("/var/lib/rancher/k3s/agent/etc/cni/net.d/00-flatlan.conflist")
        .is_file());
}

#[test]
fn no_conflist_until_the_range_file_exists() {
    let r = Root::new();
    r.k3s();
    let e = install::install(&r.opts()).unwrap_err().to_string();
    assert!(
        e.contains("/var/lib/flatlan/node-range.json does not exist after 0 s"),
        "{e}"
    );
    assert!(e.contains("node agent"), "{e}");
    assert!(
        !r.p(K3S_CONF).exists(),
        "a conflist before the slice is known"
    );
    assert_eq!(
        fs::read(r.p(K3S_BIN)).unwrap(),
        FLATLAN,
        "the binary goes in regardless"
    );

    // Waiting: the conflist appears only after the node agent's file.
    let waiting = Options {
        wait: Duration::from_secs(30),
        ..r.opts()
    };
    let t = std::thread::spawn(move || install::install(&waiting));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !r.p(K3S_CONF).exists(),
        "written before the range file exists"
    );
    assert!(!t.is_finished());
    r.range_file();
    t.join().unwrap().unwrap();
    assert_eq!(fs::read_to_string(r.p(K3S_CONF)).unwrap(), CONFLIST);
}

#[test]
fn generic_layout_and_overrides() {
    let r = Root::new();
    r.range_file();
    let report = install::install(&r.opts()).unwrap();
    assert!(report.contains("generic"), "{report}");
    assert_eq!(fs::read(r.p("/opt/cni/bin/flatlan")).unwrap(), FLATLAN);
    assert!(r.p("/etc/cni/net.d/10-flatlan.conflist").is_file());

    let env = |k: &str| match k {
        "FLATLAN_CNI_BIN_DIR" => Some("/usr/libexec/cni".to_string()),
        "FLATLAN_CNI_CONF_DIR" => Some("/etc/flatlan/net.d".to_string()),
        _ => None,
    };
    let mut o = install::parse(&["--conf-dir".to_string(), "/srv/net.d".to_string()], env).unwrap();
    assert_eq!(o.bin_dir.as_deref(), Some(Path::new("/usr/libexec/cni")));
    assert_eq!(
        o.conf_dir.as_deref(),
        Some(Path::new("/srv/net.d")),
        "a flag wins over the environment"
    );
    let base = r.opts();
    o.root = base.root;
    o.binary = base.binary;
    o.conflist = base.conflist;
    o.wait = Duration::ZERO;
    // The generic install above is flatlan's own: no rival config there.
    install::install(&o).unwrap();
    assert!(r.p("/usr/libexec/cni/flatlan").is_file());
    assert!(r.p("/srv/net.d/10-flatlan.conflist").is_file());

    for bad in [
        vec!["--bin-dir", "relative/dir"],
        vec!["--name", "flatlan.json"],
        vec!["--name", "../10-flatlan.conflist"],
        vec!["--wait", "soon"],
        vec!["--bogus"],
    ] {
        let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
        assert!(install::parse(&args, |_| None).is_err(), "{bad:?}");
    }
}

#[test]
fn a_conflist_without_flatlan_is_refused_before_anything_is_written() {
    let r = Root::new();
    r.k3s();
    let o = r.opts();
    fs::write(
        o.conflist.as_ref().unwrap(),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    let e = install::install(&o).unwrap_err().to_string();
    assert!(e.contains("no plugin of type flatlan"), "{e}");
    assert!(is_link(&r.p(K3S_BIN)));
}

#[test]
fn the_cli_runs_install_and_uninstall() {
    let r = Root::k3s_node();
    let o = r.opts();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flatlan"))
            .args(args)
            .env_remove("FLATLAN_CNI_BIN_DIR")
            .env_remove("FLATLAN_CNI_CONF_DIR")
            .output()
            .unwrap()
    };
    let root = o.root.to_str().unwrap();
    let conflist = o.conflist.as_ref().unwrap().to_str().unwrap();
    let install = [
        "install",
        "--root",
        root,
        "--conflist",
        conflist,
        "--wait",
        "0",
    ];
    let out = run(&install);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With no --binary, the installer copies itself.
    let me = fs::read(env!("CARGO_BIN_EXE_flatlan")).unwrap();
    assert!(fs::read(r.p(K3S_BIN)).unwrap() == me);
    r.write(
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/00-other.conf",
        b"{}",
    );
    let out = run(&install);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("00-other.conf sorts before"));
    let out = run(&["uninstall", "--root", root]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!r.p(K3S_CONF).exists());
    let out = run(&["install", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--range-file"));
}

/// The `command` list of the DaemonSet's init container `install`, read
/// from the manifest source (a line scan: this crate has no YAML parser).
fn daemonset_install_command() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/daemonset.yaml");
    let text = fs::read_to_string(&path).unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "- name: install")
        .skip_while(|l| l.trim() != "command:")
        .skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let Some(item) = l.trim().strip_prefix("- ") else {
            break;
        };
        out.push(item.to_string());
    }
    out
}

#[test]
fn the_daemonsets_install_command_parses() {
    // Regression (issue 14, the real cluster): the DaemonSet passes
    // `--root=/host`, which the parser rejected as an unknown argument,
    // so the init container crash-looped and the node never went Ready.
    let cmd = daemonset_install_command();
    assert_eq!(
        cmd.get(..2),
        Some(&["/flatlan".to_string(), "install".to_string()][..]),
        "{cmd:?}"
    );
    let o = install::parse(&cmd[2..], |_| None).unwrap();
    assert_eq!(o.root, Path::new("/host"));
    assert_eq!(
        o.conflist.as_deref(),
        Some(Path::new("/etc/flatlan/10-flatlan.conflist"))
    );
    assert_eq!(o.wait, Duration::from_secs(60));

    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = install::parse(
        &args(&[
            "--state-dir=/x/state",
            "--force",
            "--name",
            "20-flatlan.conflist",
        ]),
        |_| None,
    )
    .unwrap();
    assert_eq!(o.state_dir, Path::new("/x/state"));
    assert!(o.force);
    assert_eq!(o.name, "20-flatlan.conflist");
    for bad in [
        &["--force=yes"][..],
        &["--wait=soon"][..],
        &["--bogus=1"][..],
    ] {
        assert!(install::parse(&args(bad), |_| None).is_err(), "{bad:?}");
    }
}
