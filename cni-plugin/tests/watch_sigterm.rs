//! `flatlan ipam watch` stops on SIGTERM when it is PID 1 (issue 14, the
//! real cluster): the DaemonSet's `ipam-watch` container runs it as PID 1
//! of its PID namespace, where the kernel gives SIGTERM no default action.
//! It used to ignore the signal there, so every rolling update and
//! uninstall waited out the 30 s grace period and ended in SIGKILL.
//! Needs root (a PID namespace: `unshare --pid --fork`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[test]
fn ipam_watch_as_pid_1_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("10-flatlan.conflist");
    // A bridge that does not exist: the watcher logs, waits and retries,
    // which is where a node without its bridge yet would sit too.
    std::fs::write(
        &conf,
        format!(
            r#"{{"cniVersion":"1.0.0","name":"sigterm","plugins":[{{"type":"flatlan","bridge":"flw-absent0",
               "ipam":{{"subnet":"192.168.251.0/24","gateway":"192.168.251.1","dataDir":"{}",
               "ranges":["192.168.251.64-192.168.251.95"]}}}}]}}"#,
            dir.path().join("ipam").display()
        ),
    )
    .unwrap();
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_flatlan"))
        .args(["ipam", "watch", "--conf"])
        .arg(&conf)
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    // Running, and PID 1 of its namespace, once it has said why it waits.
    let mut log = BufReader::new(unshare.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(
        line.contains("retrying"),
        "unexpected first log line: {line:?}"
    );
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid1: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "the watcher is not PID 1 of its namespace:\n{status}"
    );

    kill(Pid::from_raw(pid1), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let exit = loop {
        if let Some(s) = unshare.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some(exit) = exit else {
        let _ = unshare.kill();
        let _ = unshare.wait();
        panic!("flatlan ipam watch, PID 1, still ran 3 s after SIGTERM");
    };
    assert!(exit.success(), "exited {exit:?} after SIGTERM, not 0");
}
