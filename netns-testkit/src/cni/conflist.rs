//! Network configuration lists, executed the way libcni does: the same
//! config injection, order and prevResult handling, so a plugin that works
//! here works under containerd and CRI-O.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{CniCommand, CniInvocation, Launcher, PLUGIN_TIMEOUT};
use crate::error::{Error, Result};
use crate::netns::Netns;

/// One container's attachment to the network: what the runtime knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS, e.g. `K8S_POD_NAMESPACE`, `K8S_POD_NAME`.
    pub args: Vec<(String, String)>,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &Netns) -> Self {
        Attachment {
            container_id: container_id.to_owned(),
            netns: Some(netns.path()),
            ifname: "eth0".to_owned(),
            args: Vec::new(),
        }
    }
}

/// A conflist (`{cniVersion, name, plugins: [...]}`) ready to execute.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    conflist: Value,
    /// CNI_PATH: where plugin binaries are found, in order.
    pub path_dirs: Vec<PathBuf>,
    /// libcni's CapabilityArgs, e.g. `portMappings`; each plugin gets the
    /// ones it declares in `capabilities` as `runtimeConfig`.
    pub capability_args: Map<String, Value>,
    pub timeout: Duration,
    /// How each plugin process is started; see [`Launcher`].
    pub launcher: Launcher,
}

/// (major, minor, patch) of a CNI version string.
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let major = it.next()??;
    let minor = it.next().unwrap_or(Some(0))?;
    let patch = it.next().unwrap_or(Some(0))?;
    it.next().is_none().then_some((major, minor, patch))
}

impl CniNetwork {
    /// Validates the list as libcni's loader would: a name, a cniVersion
    /// and a non-empty array of plugin objects with a `type`.
    pub fn new(conflist: Value, path_dirs: Vec<PathBuf>) -> Result<Self> {
        let bad = |m: &str| Err(Error::CniConfig(m.to_owned()));
        let Some(obj) = conflist.as_object() else {
            return bad("conflist is not a JSON object");
        };
        if !obj.get("name").is_some_and(Value::is_string) {
            return bad("conflist has no string \"name\"");
        }
        match obj.get("cniVersion").and_then(Value::as_str) {
            Some(v) if parse_version(v).is_some() => {}
            _ => return bad("conflist has no valid \"cniVersion\""),
        }
        let Some(plugins) = obj.get("plugins").and_then(Value::as_array) else {
            return bad("conflist has no \"plugins\" array");
        };
        if plugins.is_empty() {
            return bad("conflist has no plugins");
        }
        if !plugins
            .iter()
            .all(|p| p.get("type").is_some_and(Value::is_string))
        {
            return bad("every plugin needs a string \"type\"");
        }
        Ok(CniNetwork {
            conflist,
            path_dirs,
            capability_args: Map::new(),
            timeout: PLUGIN_TIMEOUT,
            launcher: Launcher::default(),
        })
    }

    pub fn name(&self) -> &str {
        self.conflist["name"].as_str().unwrap_or_default()
    }

    pub fn cni_version(&self) -> &str {
        self.conflist["cniVersion"].as_str().unwrap_or_default()
    }

    fn plugins(&self) -> &[Value] {
        self.conflist["plugins"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn version_at_least(&self, min: (u32, u32, u32)) -> bool {
        parse_version(self.cni_version()).is_some_and(|v| v >= min)
    }

    fn flag(&self, key: &str) -> bool {
        self.conflist.get(key).and_then(Value::as_bool) == Some(true)
    }

    /// Plugin `index` with the list's `name` and `cniVersion` injected:
    /// all that STATUS and GC get.
    fn base_config(&self, index: usize) -> Result<Map<String, Value>> {
        let Some(Value::Object(orig)) = self.plugins().get(index) else {
            return Err(Error::CniConfig(format!("no plugin at index {index}")));
        };
        let mut conf = orig.clone();
        conf.insert("name".into(), json!(self.name()));
        conf.insert("cniVersion".into(), json!(self.cni_version()));
        Ok(conf)
    }

    /// The stdin of plugin `index` for ADD, CHECK and DEL, as libcni's
    /// buildOneConfig makes it: the list's `name` and `cniVersion`
    /// injected, `prevResult` when given, and `runtimeConfig` holding the
    /// capability args the plugin declares (replacing any `runtimeConfig`
    /// in the file).
    pub fn plugin_config(&self, index: usize, prev_result: Option<&Value>) -> Result<Value> {
        let mut conf = self.base_config(index)?;
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut rc = Map::new();
        if let Some(Value::Object(caps)) = conf.get("capabilities") {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = self.capability_args.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        Ok(Value::Object(conf))
    }

    /// Finds the plugin binary for `type` in CNI_PATH (libcni FindInPath).
    fn find(&self, index: usize) -> Result<PathBuf> {
        let ty = self
            .plugins()
            .get(index)
            .and_then(|p| p["type"].as_str())
            .unwrap_or_default();
        if ty.is_empty() || ty.contains('/') {
            return Err(Error::CniConfig(format!("bad plugin type {ty:?}")));
        }
        self.path_dirs
            .iter()
            .map(|d| d.join(ty))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::CniPluginNotFound {
                plugin: ty.to_owned(),
                path: self.path_dirs.clone(),
            })
    }

    fn invocation(
        &self,
        index: usize,
        command: CniCommand,
        att: Option<&Attachment>,
        config: Value,
    ) -> Result<CniInvocation> {
        let mut inv = CniInvocation::new(self.find(index)?, command, config);
        inv.launcher = self.launcher;
        inv.path_dirs = self.path_dirs.clone();
        inv.timeout = self.timeout;
        inv.ifname = String::new();
        if let Some(a) = att {
            inv.container_id = a.container_id.clone();
            inv.netns = a.netns.clone();
            inv.ifname = a.ifname.clone();
            inv.args = a.args.clone();
        }
        Ok(inv)
    }

    /// ADD through every plugin in order, each getting the previous one's
    /// result as `prevResult`. Returns the last result, which the caller
    /// keeps (as libcni caches it) for CHECK and DEL. Stops at the first
    /// failure without undoing anything: like a real runtime, the caller
    /// is expected to DEL afterwards.
    pub fn add(&self, node: &Netns, att: &Attachment) -> Result<Value> {
        validate_add(self.name(), att)?;
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins().len() {
            let conf = self.plugin_config(i, prev.as_ref())?;
            let result = self
                .invocation(i, CniCommand::Add, Some(att), conf)?
                .run(node)?
                .result()?;
            prev = Some(result);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// [`CniNetwork::add`] with its wall-clock time.
    pub fn add_timed(&self, node: &Netns, att: &Attachment) -> Result<(Value, Duration)> {
        let t = Instant::now();
        let r = self.add(node, att)?;
        Ok((r, t.elapsed()))
    }

    /// DEL through the plugins in reverse order. From CNI 0.4.0 on, each
    /// gets the cached ADD result as `prevResult` (the final result, the
    /// same for every plugin, as libcni does). Stops at the first failure.
    pub fn del(&self, node: &Netns, att: &Attachment, cached: Option<&Value>) -> Result<()> {
        let prev = if self.version_at_least((0, 4, 0)) {
            cached.filter(|v| !v.is_null())
        } else {
            None
        };
        for i in (0..self.plugins().len()).rev() {
            let conf = self.plugin_config(i, prev)?;
            self.invocation(i, CniCommand::Del, Some(att), conf)?
                .run(node)?
                .result()?;
        }
        Ok(())
    }

    /// [`CniNetwork::del`] with its wall-clock time.
    pub fn del_timed(
        &self,
        node: &Netns,
        att: &Attachment,
        cached: Option<&Value>,
    ) -> Result<Duration> {
        let t = Instant::now();
        self.del(node, att, cached)?;
        Ok(t.elapsed())
    }

    /// CHECK through the plugins in order with the cached result as
    /// `prevResult`. Needs CNI 0.4.0+; a no-op when the list sets
    /// `disableCheck`.
    pub fn check(&self, node: &Netns, att: &Attachment, cached: &Value) -> Result<()> {
        if !self.version_at_least((0, 4, 0)) {
            return Err(Error::CniConfig(format!(
                "CHECK needs cniVersion 0.4.0 or later, not {}",
                self.cni_version()
            )));
        }
        if self.flag("disableCheck") {
            return Ok(());
        }
        for i in 0..self.plugins().len() {
            let conf = self.plugin_config(i, Some(cached))?;
            self.invocation(i, CniCommand::Check, Some(att), conf)?
                .run(node)?
                .result()?;
        }
        Ok(())
    }

    /// STATUS on every plugin in order (CNI 1.1.0+; a no-op before).
    pub fn status(&self, node: &Netns) -> Result<()> {
        if !self.version_at_least((1, 1, 0)) {
            return Ok(());
        }
        for i in 0..self.plugins().len() {
            let conf = Value::Object(self.base_config(i)?);
            self.invocation(i, CniCommand::Status, None, conf)?
                .run(node)?
                .result()?;
        }
        Ok(())
    }

    /// GC on every plugin with `cni.dev/valid-attachments` (CNI 1.1.0+; a
    /// no-op before or with `disableGC`). Like libcni, every plugin runs
    /// even if one fails; the first error is returned. libcni also DELs
    /// attachments from its result cache that are not valid; there is no
    /// cache here, so a test that wants that does the DEL itself.
    pub fn gc(&self, node: &Netns, valid: &[Attachment]) -> Result<()> {
        if !self.version_at_least((1, 1, 0)) || self.flag("disableGC") {
            return Ok(());
        }
        let attachments: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        let mut first_err = None;
        for i in 0..self.plugins().len() {
            let run = || -> Result<()> {
                let mut conf = self.plugin_config(i, None)?;
                if let Value::Object(m) = &mut conf {
                    m.insert(
                        "cni.dev/valid-attachments".into(),
                        Value::Array(attachments.clone()),
                    );
                }
                self.invocation(i, CniCommand::Gc, None, conf)?
                    .run(node)?
                    .result()?;
                Ok(())
            };
            if let Err(e) = run() {
                tracing::warn!(plugin = i, error = %e, "GC failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// libcni's checks before ADD (utils.ValidateContainerID,
/// ValidateNetworkName, ValidateInterfaceName): a runtime never hands a
/// plugin such values. Use [`super::CniInvocation`] to send them anyway.
fn validate_add(network: &str, att: &Attachment) -> Result<()> {
    let id_like = |s: &str| {
        let mut b = s.bytes();
        b.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    };
    if !id_like(&att.container_id) {
        return Err(Error::CniConfig(format!(
            "invalid container ID {:?}",
            att.container_id
        )));
    }
    if !id_like(network) {
        return Err(Error::CniConfig(format!(
            "invalid network name {network:?}"
        )));
    }
    let ifname = &att.ifname;
    let if_ok = !ifname.is_empty()
        && ifname.len() <= 15
        && ifname != "."
        && ifname != ".."
        && !ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !if_ok {
        return Err(Error::CniConfig(format!(
            "invalid interface name {ifname:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> CniNetwork {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "lan",
            "plugins": [
                {"type": "flatlan", "bridge": "br0", "runtimeConfig": {"stale": true}},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
            ]
        });
        CniNetwork::new(list, vec!["/usr/lib/cni".into()]).expect("valid")
    }

    #[test]
    fn injects_name_version_and_prev_result() {
        let n = net();
        let first = n.plugin_config(0, None).expect("config");
        assert_eq!(first["name"], "lan");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "br0");
        assert!(first.get("prevResult").is_none());
        // No capabilities declared: the file's runtimeConfig is left alone.
        assert_eq!(first["runtimeConfig"], json!({"stale": true}));
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "192.168.2.210/24"}]});
        let second = n.plugin_config(1, Some(&prev)).expect("config");
        assert_eq!(second["prevResult"], prev);
        assert!(second.get("runtimeConfig").is_none());
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let mut n = net();
        let pm = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        n.capability_args.insert("portMappings".into(), pm.clone());
        n.capability_args
            .insert("bandwidth".into(), json!({"ingressRate": 1}));
        let second = n.plugin_config(1, None).expect("config");
        assert_eq!(second["runtimeConfig"], json!({"portMappings": pm}));
        let first = n.plugin_config(0, None).expect("config");
        assert_eq!(first["runtimeConfig"], json!({"stale": true}));
    }

    #[test]
    fn rejects_what_libcni_rejects() {
        for bad in [
            json!([]),
            json!({"name": "x", "plugins": [{"type": "a"}]}),
            json!({"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}),
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": []}),
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"notype": 1}]}),
            json!({"cniVersion": "one", "name": "x", "plugins": [{"type": "a"}]}),
        ] {
            assert!(CniNetwork::new(bad.clone(), vec![]).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_inputs_are_validated_like_libcni() {
        let att = |id: &str, ifname: &str| Attachment {
            container_id: id.into(),
            netns: None,
            ifname: ifname.into(),
            args: vec![],
        };
        assert!(validate_add("lan", &att("abc-1.2_3", "eth0")).is_ok());
        assert!(validate_add("lan", &att("", "eth0")).is_err());
        assert!(validate_add("lan", &att("-x", "eth0")).is_err());
        assert!(validate_add("lan", &att("a/b", "eth0")).is_err());
        assert!(validate_add("bad name", &att("abc", "eth0")).is_err());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(validate_add("lan", &att("abc", bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("0.3.1"), Some((0, 3, 1)));
        assert_eq!(parse_version("1.1.0"), Some((1, 1, 0)));
        assert_eq!(parse_version("1.10"), Some((1, 10, 0)));
        assert_eq!(parse_version("1.x"), None);
        assert_eq!(parse_version("1.0.0.0"), None);
        assert!(parse_version("0.10.0") > parse_version("0.4.0"));
    }

    #[test]
    fn missing_plugin_is_reported_with_the_path() {
        let n = CniNetwork::new(
            json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "no-such-plugin"}]}),
            vec!["/usr/lib/cni".into()],
        )
        .expect("valid");
        let err = n.find(0).expect_err("missing");
        assert!(matches!(err, Error::CniPluginNotFound { .. }), "{err}");
    }
}
