//! Which host processes run in which network namespace, read from /proc:
//! the `ps` half of `flatlan ipam ls --wide`, so "which process is
//! 192.168.2.210?" needs no nsenter.
//!
//! A process that exits mid-scan, or whose namespace link we may not read
//! (another user's, without root), is skipped without a word: the listing is
//! a snapshot of what could be seen, and one vanished `sh` must not turn
//! the whole view into an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Longest command kept; a JVM's classpath is not what anyone is after.
pub const MAX_COMMAND: usize = 200;

/// Network namespace inode → the thread-group leaders in it (the numeric
/// entries of /proc; threads share their leader's namespace in practice,
/// and `ps` lists leaders too), in PID order.
pub fn by_netns(proc: &Path) -> BTreeMap<u64, Vec<u32>> {
    let mut out: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(proc) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(link) = std::fs::read_link(e.path().join("ns/net")) else {
            continue;
        };
        if let Some(ino) = link.to_str().and_then(ns_inode) {
            out.entry(ino).or_default().push(pid);
        }
    }
    for pids in out.values_mut() {
        pids.sort_unstable();
    }
    out
}

/// The inode in a namespace link's target, `net:[4026532281]`.
pub fn ns_inode(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// What `ps -o args` shows for `pid`: its command line, or `[comm]` for a
/// kernel thread or a zombie (an empty cmdline); None once it is gone.
pub fn command(proc: &Path, pid: u32) -> Option<String> {
    let dir = proc.join(pid.to_string());
    // One more byte than MAX_COMMAND characters can take in UTF-8: enough
    // to know it was cut, and a pod's megabyte of arguments is not read
    // again on every --watch frame.
    if let Some(c) = read_capped(&dir.join("cmdline"), 4 * MAX_COMMAND + 1)
        .ok()
        .and_then(|raw| cmdline(&raw))
    {
        return Some(c);
    }
    // A process may clear its argv and set its comm (prctl PR_SET_NAME)
    // to anything, escape sequences included: it is printed to root's
    // terminal, so it gets cmdline's mapping too.
    let comm = read_capped(&dir.join("comm"), 64).ok()?;
    Some(format!("[{}]", cmdline(&comm).unwrap_or_default()))
}

/// At most `cap` bytes of a file.
pub fn read_capped(path: &Path, cap: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(cap).unwrap_or(u64::MAX))
        .read_to_end(&mut out)?;
    Ok(out)
}

/// /proc/PID/cmdline (arguments separated, and usually ended, by NULs) as
/// one line: NULs and control characters (C0, DEL and C1, so no escape
/// sequence reaches the terminal) become spaces, trailing space goes, and
/// anything past [`MAX_COMMAND`] characters is cut with "...". None for an
/// empty command line.
pub fn cmdline(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = spaced.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(truncate(trimmed, MAX_COMMAND))
}

/// `s` cut to at most `max` characters, the last three being "..." when
/// anything was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max <= 3 {
        return s.chars().take(max).collect();
    }
    let keep: String = s.chars().take(max - 3).collect();
    format!("{keep}...")
}

/// The network namespaces bind-mounted somewhere (`ip netns add`, and what
/// containerd, CRI-O and podman pass as CNI_NETNS), as (inode, path), in
/// /proc/self/mountinfo order. The mount's root field names the
/// namespace (`net:[4026532281]`), so no file needs opening.
pub fn nsfs_mounts(mountinfo: &str) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("nsfs") {
            continue;
        }
        // id parent major:minor root mountpoint ...
        let mut f = left.split(' ');
        let (Some(root), Some(point)) = (f.nth(3), f.next()) else {
            continue;
        };
        let Some(ino) = ns_inode(root) else {
            continue;
        };
        if !out.iter().any(|(i, _)| *i == ino) {
            out.push((ino, PathBuf::from(unescape(point))));
        }
    }
    out
}

/// mountinfo writes space, tab, newline and backslash in paths as octal
/// escapes (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_give_their_inode() {
        assert_eq!(ns_inode("net:[4026532281]"), Some(4_026_532_281));
        assert_eq!(ns_inode("mnt:[4026532281]"), None);
        assert_eq!(ns_inode("net:[x]"), None);
        assert_eq!(ns_inode("net:[42"), None);
    }

    #[test]
    fn command_lines_read_like_ps() {
        assert_eq!(cmdline(b"sleep\x001000\x00").as_deref(), Some("sleep 1000"));
        assert_eq!(
            cmdline(b"nginx: worker process\x00\x00\x00").as_deref(),
            Some("nginx: worker process")
        );
        assert_eq!(cmdline(b"a\nb\tc").as_deref(), Some("a b c"));
        assert_eq!(cmdline(b""), None);
        assert_eq!(cmdline(b"\x00\x00"), None);
        let long = cmdline(&[b'x'; 1000]).expect("long");
        assert_eq!(long.chars().count(), MAX_COMMAND);
        assert!(long.ends_with("..."));
        // Invalid UTF-8 is shown, not an error.
        assert!(cmdline(b"\xffbin").is_some());
    }

    #[test]
    fn a_comm_with_escape_sequences_is_shown_without_them() {
        let proc = tempfile::tempdir().expect("proc");
        let dir = proc.path().join("4242");
        std::fs::create_dir(&dir).expect("pid dir");
        // What a pod process gets by clearing its argv and calling
        // prctl(PR_SET_NAME, "\e[2J\e]0;x\a\x9b"): clear the screen,
        // retitle the terminal, and a C1 CSI (invalid UTF-8 alone).
        std::fs::write(dir.join("cmdline"), b"").expect("cmdline");
        std::fs::write(dir.join("comm"), b"\x1b[2J\x1b]0;x\x07\xc2\x9b\xff\n").expect("comm");
        let c = command(proc.path(), 4242).expect("command");
        assert!(!c.chars().any(char::is_control), "{c:?}");
        assert!(
            c.starts_with('[') && c.ends_with(']') && c.contains("[2J"),
            "{c:?}"
        );
        // An empty comm still shows as a bracketed name.
        std::fs::write(dir.join("comm"), b"\n").expect("comm");
        assert_eq!(command(proc.path(), 4242).as_deref(), Some("[]"));
    }

    #[test]
    fn a_huge_cmdline_is_read_only_up_to_the_cap() {
        let proc = tempfile::tempdir().expect("proc");
        let dir = proc.path().join("7");
        std::fs::create_dir(&dir).expect("pid dir");
        let huge = vec![b'a'; 1 << 20];
        std::fs::write(dir.join("cmdline"), &huge).expect("cmdline");
        let raw = read_capped(&dir.join("cmdline"), 4 * MAX_COMMAND + 1).expect("read");
        assert_eq!(raw.len(), 4 * MAX_COMMAND + 1);
        let c = command(proc.path(), 7).expect("command");
        assert_eq!(c.chars().count(), MAX_COMMAND);
        assert!(c.ends_with("..."));
        // Four-byte characters up to the cap still count as cut.
        let wide = "𝕏".repeat(MAX_COMMAND + 1);
        std::fs::write(dir.join("cmdline"), &wide).expect("cmdline");
        let c = command(proc.path(), 7).expect("command");
        assert!(c.ends_with("..."), "{c}");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("äöü", 3), "äöü");
        assert_eq!(truncate("äöüäöü", 5), "äö...");
        assert_eq!(truncate("abcdef", 2), "ab");
    }

    #[test]
    fn mountinfo_gives_the_bind_mounted_network_namespaces() {
        let mi = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
610 29 0:4 net:[4026532281] /run/netns/cni-1234 rw shared:277 - nsfs nsfs rw
611 29 0:4 net:[4026532281] /var/run/netns/cni-1234 rw - nsfs nsfs rw
612 29 0:4 net:[4026532999] /run/netns/with\\040space rw - nsfs nsfs rw
613 29 0:4 mnt:[4026532777] /run/mntns/x rw - nsfs nsfs rw
614 29 0:4 net:[4026532111] /tmp/x rw - tmpfs tmpfs rw
garbage
";
        assert_eq!(
            nsfs_mounts(mi),
            vec![
                (4_026_532_281, PathBuf::from("/run/netns/cni-1234")),
                (4_026_532_999, PathBuf::from("/run/netns/with space")),
            ]
        );
    }

    #[test]
    fn this_process_is_found_in_its_own_namespace() {
        let own = std::fs::read_link("/proc/self/ns/net").expect("own netns link");
        let ino = ns_inode(own.to_str().expect("utf-8")).expect("inode");
        let map = by_netns(Path::new("/proc"));
        assert!(map
            .get(&ino)
            .is_some_and(|p| p.contains(&std::process::id())));
        let me = command(Path::new("/proc"), std::process::id()).expect("own command");
        assert!(!me.is_empty());
        assert_eq!(command(Path::new("/nonexistent"), 1), None);
    }
}
