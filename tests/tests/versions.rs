//! Every supported CNI version works end to end, with the result shape
//! that version defines, and VERSION reports them.

use flatlan_e2e::{run_raw, FlatLab};
use netns_testkit::cni::{Attachment, CniNetwork};
use netns_testkit::LabConfig;
use serde_json::json;

#[test]
fn version_reports_the_supported_versions() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let run = run_raw(
        l.node_ns(1),
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.1.0"}"#,
    );
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn add_check_del_work_in_every_supported_version() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    let versions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
    for (i, version) in versions.into_iter().enumerate() {
        let list = json!({
            "cniVersion": version,
            "name": "lan",
            "plugins": [flatlan_e2e::plugin_conf(l.state.path(), 1, &[]).expect("plugin config")],
        });
        let net = CniNetwork::new(list, vec![flatlan_e2e::bin_dir()]).expect("conflist");
        let ns = l.lab.add_pod_netns(1, &format!("v{i}")).expect("netns");
        let att = Attachment::new(&format!("ctr-v{i}"), &ns);
        let r = net
            .add(l.node_ns(1), &att)
            .unwrap_or_else(|e| panic!("{version} ADD: {e}"));
        assert_eq!(r["cniVersion"], version);
        let ip = &r["ips"][0];
        let legacy = version.starts_with("0.");
        if legacy {
            assert_eq!(
                ip["version"], "4",
                "0.3.x and 0.4.0 results carry the IP version: {r}"
            );
        } else {
            assert!(
                ip.get("version").is_none(),
                "{version} results must not: {r}"
            );
        }
        assert_eq!(
            ip["interface"], 1,
            "the IP belongs to the pod interface: {r}"
        );
        assert!(r["interfaces"][1]["sandbox"].is_string(), "{r}");
        if version.starts_with("0.3.") {
            // 0.3.x has no CHECK: refused with code 1, as the reference
            // plugins refuse it, and nothing is touched.
            let mut conf = net.plugin_config(0, Some(&r)).expect("conf");
            conf["cniVersion"] = version.into();
            let netns = att.netns.as_ref().expect("netns").display().to_string();
            let run = run_raw(
                l.node_ns(1),
                &[
                    ("CNI_COMMAND", "CHECK"),
                    ("CNI_CONTAINERID", att.container_id.as_str()),
                    ("CNI_NETNS", netns.as_str()),
                    ("CNI_IFNAME", "eth0"),
                ],
                conf.to_string().as_bytes(),
            );
            assert_eq!(run.cni_code(), Some(1), "{version} CHECK: {}", run.stdout);
            assert!(run.stdout.contains("has no CHECK"), "{}", run.stdout);
        } else {
            net.check(l.node_ns(1), &att, &r)
                .unwrap_or_else(|e| panic!("{version} CHECK: {e}"));
        }
        net.del(l.node_ns(1), &att, Some(&r))
            .unwrap_or_else(|e| panic!("{version} DEL: {e}"));
    }
    assert_eq!(flatlan_e2e::allocation_count(&l.data_dir(1)), 0);
    flatlan_e2e::settle_store(&l.data_dir(1));
}

/// STATUS and GC came with CNI 1.1.0: an older config gets code 1, as from
/// the reference plugins, not a reply the runtime never asked for.
#[test]
fn status_and_gc_need_cni_1_1_0() {
    let l = FlatLab::new(LabConfig::new().nodes(1));
    for version in ["0.3.1", "1.0.0"] {
        let mut conf = flatlan_e2e::plugin_conf(l.state.path(), 1, &[]).expect("plugin config");
        conf["cniVersion"] = version.into();
        conf["name"] = "lan".into();
        conf["cni.dev/valid-attachments"] = json!([]);
        for verb in ["STATUS", "GC"] {
            let run = run_raw(
                l.node_ns(1),
                &[("CNI_COMMAND", verb)],
                conf.to_string().as_bytes(),
            );
            assert_eq!(run.cni_code(), Some(1), "{version} {verb}: {}", run.stdout);
            assert!(run.stdout.contains("1.1.0"), "{}", run.stdout);
        }
    }
}
