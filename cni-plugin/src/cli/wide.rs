//! The node-side facts `flatlan ipam ls --wide` adds to a pod's address:
//! its host veth, the pod's MAC as the pod sees it, its network namespace
//! (a path and the inode) and the host processes inside it.
//!
//! The store records only the container ID, ifname and MAC (not CNI_NETNS),
//! so the rest comes from the kernel, read from the node's side: the veth's
//! name follows from the attachment (names.rs); its IFLA_LINK_NETNSID names
//! the pod's namespace; the namespace files are the nsfs bind mounts and
//! /proc/PID/ns/net, matched to that id with RTM_GETNSID; the pod-side
//! MAC is read through IFLA_TARGET_NETNSID. Nothing enters a namespace.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use flatlan_l2::mac::MacAddr;

use super::procs;
use crate::names;
use crate::netlink::Socket;

/// Whether a pod's address still has a pod behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// The veth exists and its peer's namespace was found.
    Up,
    /// No host veth: the pod's namespace was deleted without a DEL, or DEL
    /// is still to come. `flatlan ipam release` or GC frees the address.
    Gone,
    /// The veth exists but no namespace file or process holds the peer's
    /// namespace where it could be seen (a runtime keeping it open by fd).
    NoNetns,
    /// The veth could not be looked up (netlink refused).
    Unknown,
}

impl Live {
    pub fn word(self) -> &'static str {
        match self {
            Live::Up => "up",
            Live::Gone => "gone",
            Live::NoNetns => "no-netns",
            Live::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub command: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wide {
    pub veth: String,
    pub live: Live,
    /// The pod interface's MAC read live; None when it could not be read.
    pub pod_mac: Option<String>,
    pub netns: Option<PathBuf>,
    pub inode: Option<u64>,
    pub procs: Vec<Proc>,
}

/// One listing's view of the node: /proc is scanned once, and each
/// namespace is matched to its id at most once, however many pods share
/// the listing.
pub struct Probe {
    proc: PathBuf,
    sock: Option<Socket>,
    pids: BTreeMap<u64, Vec<u32>>,
    /// nsid → (inode, path); filled on first need.
    nsids: Option<BTreeMap<i32, (u64, PathBuf)>>,
}

impl Probe {
    pub fn new() -> Probe {
        let proc = PathBuf::from("/proc");
        let pids = procs::by_netns(&proc);
        let sock = match Socket::new() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no netlink socket for the wide view: {e}");
                None
            }
        };
        Probe {
            proc,
            sock,
            pids,
            nsids: None,
        }
    }

    /// The wide facts of the attachment (container ID, ifname).
    pub fn of(&mut self, container_id: &str, ifname: &str) -> Wide {
        let veth = names::host_veth(container_id, ifname);
        let mut w = Wide {
            veth,
            live: Live::Unknown,
            pod_mac: None,
            netns: None,
            inode: None,
            procs: Vec::new(),
        };
        let Some(sock) = self.sock.as_mut() else {
            return w;
        };
        let peer = match sock.veth_peer(&w.veth) {
            Ok(Some(p)) => p,
            Ok(None) => {
                w.live = Live::Gone;
                return w;
            }
            Err(e) => {
                tracing::warn!("looking up {}: {e}", w.veth);
                return w;
            }
        };
        w.live = Live::NoNetns;
        let Some(nsid) = peer.peer_nsid else {
            return w;
        };
        if let Some(index) = peer.peer_index {
            // Only a reply whose peer is our veth is the pod's end: an old
            // kernel answers for this namespace's link `index` instead. The
            // store's MAC stands when the pod's end cannot be read.
            w.pod_mac = sock
                .link_in_nsid(nsid, index)
                .ok()
                .flatten()
                .filter(|pod| pod.peer_index == Some(peer.host.index))
                .and_then(|pod| pod.host.mac)
                .map(|m| MacAddr(m).to_string());
        }
        let Some((ino, path)) = self.namespaces().get(&nsid).cloned() else {
            return w;
        };
        w.live = Live::Up;
        w.inode = Some(ino);
        w.netns = Some(path);
        w.procs = self
            .pids
            .get(&ino)
            .into_iter()
            .flatten()
            .filter_map(|&pid| procs::command(&self.proc, pid).map(|command| Proc { pid, command }))
            .collect();
        w
    }

    /// Every network namespace that can be named from here, by the id this
    /// namespace gives it: the bind-mounted ones under their mount path,
    /// then those only processes hold, as /proc/PID/ns/net of the first.
    fn namespaces(&mut self) -> &BTreeMap<i32, (u64, PathBuf)> {
        if self.nsids.is_none() {
            let mountinfo =
                std::fs::read_to_string(self.proc.join("self/mountinfo")).unwrap_or_default();
            let mut candidates = procs::nsfs_mounts(&mountinfo);
            let own = std::fs::read_link(self.proc.join("self/ns/net"))
                .ok()
                .and_then(|l| l.to_str().and_then(procs::ns_inode));
            for (ino, pids) in &self.pids {
                if Some(*ino) == own || candidates.iter().any(|(i, _)| i == ino) {
                    continue;
                }
                if let Some(pid) = pids.first() {
                    candidates.push((*ino, self.proc.join(format!("{pid}/ns/net"))));
                }
            }
            let mut map = BTreeMap::new();
            if let Some(sock) = self.sock.as_mut() {
                for (ino, path) in candidates {
                    if let Some(id) = nsid_of(sock, &path, ino) {
                        map.entry(id).or_insert((ino, path));
                    }
                }
            }
            self.nsids = Some(map);
        }
        self.nsids.get_or_insert_with(BTreeMap::new)
    }
}

/// The id of the namespace file at `path`, if it still is namespace `ino`
/// (a PID can be reused between the scan and the open) and has an id here.
fn nsid_of(sock: &mut Socket, path: &Path, ino: u64) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let f = File::open(path).ok()?;
    if f.metadata().ok()?.ino() != ino {
        return None;
    }
    sock.nsid_of(&f).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_are_stable() {
        // Scripts match on these; the README lists them.
        let words: Vec<_> = [Live::Up, Live::Gone, Live::NoNetns, Live::Unknown]
            .iter()
            .map(|l| l.word())
            .collect();
        assert_eq!(words, ["up", "gone", "no-netns", "unknown"]);
    }
}
