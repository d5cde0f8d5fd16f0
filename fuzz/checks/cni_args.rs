//! The `cni_args` check: shared by `fuzz/fuzz_targets/cni_args.rs` and the
//! corpus replay in `cni-plugin/tests/fuzz_corpus.rs`.
//!
//! Input: the `CNI_*` environment as UTF-8 text, one variable value per
//! line in this order: CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
//! CNI_ARGS. A missing line is an unset variable. (Environment values
//! cannot hold a newline or NUL, so none is lost.)

use std::collections::HashMap;
use std::sync::OnceLock;

use flatlan_cni::config::NetConf;
use flatlan_cni::env::{Command, Env};

pub const VARS: [&str; 5] = [
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_IFNAME",
    "CNI_NETNS",
    "CNI_ARGS",
];

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains('\0') {
        return;
    }
    let vars: HashMap<&str, String> = VARS
        .iter()
        .copied()
        .zip(text.split('\n').map(str::to_string))
        .collect();
    let Ok(env) = Env::from_vars(|k| vars.get(k).cloned()) else {
        return;
    };
    let att = &env.attachment;
    let per_attachment = matches!(env.command, Command::Add | Command::Del | Command::Check);
    if !per_attachment {
        assert!(att.container_id.is_empty() && att.args.is_empty());
        return;
    }
    // What validation promises.
    assert!(!att.container_id.trim().is_empty());
    assert!(!att.ifname.is_empty() && att.ifname.len() < 16);
    assert!(!att.ifname.contains(['/', ':']));
    assert!(!att.ifname.chars().any(char::is_whitespace));
    if env.command != Command::Del {
        assert!(att.netns.is_some());
    }
    if let Some(pod) = att.pod() {
        assert_eq!(pod.key(), format!("{}/{}", pod.namespace, pod.name));
        // podman sends K8S_POD_NAME without a namespace; that is an
        // identity too (README "Running under podman"), a nameless one not.
        assert!(!pod.name.is_empty());
        assert_eq!(att.args.get("K8S_POD_NAME"), Some(&pod.name));
    }
    for k in att.args.keys() {
        assert!(!k.contains(['=', ';']), "{k:?}");
    }
    // Round trip: CNI_ARGS rebuilt from the parsed map parses to the same map.
    let rebuilt: Vec<String> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut vars2 = vars.clone();
    vars2.insert("CNI_ARGS", rebuilt.join(";"));
    let env2 = Env::from_vars(|k| vars2.get(k).cloned()).expect("rebuilt CNI_ARGS parses");
    assert_eq!(env2.attachment.args, att.args);
    assert_eq!(env2.attachment.ifname, att.ifname);
    // `IP=` reaches the config's requested-address parser.
    if let Some(ip) = att.args.get("IP") {
        if let Ok(ips) = base_conf().requested_ips(Some(ip)) {
            assert!(ips.len() <= ip.split(',').count());
        }
    }
}

fn base_conf() -> &'static NetConf {
    static CONF: OnceLock<NetConf> = OnceLock::new();
    CONF.get_or_init(|| {
        NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"lan","type":"flatlan",
                 "ipam":{"subnet":"192.168.2.0/24","ranges":["192.168.2.210-192.168.2.219"]}}"#,
        )
        .expect("the base config parses")
    })
}
