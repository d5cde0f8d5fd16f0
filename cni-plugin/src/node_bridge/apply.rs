//! Carries out a [`Plan`]'s steps and remembers each one done, so that a
//! failure midway, or a gateway that does not answer afterwards, puts the
//! host back as it was (STYLE.md rule 6).

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::netlink::host::HostNetlink;

use super::plan::{Dev, Plan, Step};

pub struct Executor<'a, N: HostNetlink> {
    nl: &'a mut N,
    uplink: u32,
    uplink_name: String,
    bridge_name: String,
    bridge: Option<u32>,
    done: Vec<Step>,
}

impl<'a, N: HostNetlink> Executor<'a, N> {
    pub fn new(nl: &'a mut N, plan: &Plan) -> Self {
        Executor {
            nl,
            uplink: plan.uplink.index,
            uplink_name: plan.uplink.name.clone(),
            bridge_name: plan.bridge.name.clone(),
            bridge: None,
            done: Vec::new(),
        }
    }

    /// Runs the steps in order and stops at the first failure, saying
    /// which step (as an `ip` command) and why. What was done stays
    /// recorded for [`Executor::undo`].
    pub fn apply(&mut self, steps: &[Step]) -> std::result::Result<(), String> {
        for (n, s) in steps.iter().enumerate() {
            if let Err(e) = injected(Phase::Do, n).and_then(|()| self.run(s)) {
                return Err(format!("at `{}`: {e}", self.command(s)));
            }
            self.done.push(s.clone());
        }
        Ok(())
    }

    /// True once a step has changed the host.
    pub fn changed(&self) -> bool {
        !self.done.is_empty()
    }

    /// Undoes every step done, newest first. Keeps going past a failure
    /// and returns the `ip` commands that are left to do by hand, in the
    /// order to run them, each with why (empty: the host is as it was).
    ///
    /// Two refinements keep that list exactly what is left (the lab runs
    /// it after refusing each undo step in turn, and compares the host):
    /// - a failed step on the bridge's side is not left to do once the
    ///   bridge itself is deleted: its port, addresses and routes went
    ///   with it (`ip addr del … dev br0` on a bridge that is gone would
    ///   fail, and call a whole host half migrated);
    /// - once an IPv4 address fails to come back, the later ones in its
    ///   subnet are held back too: added now, the first would become the
    ///   subnet's primary in its place, and so the node's source address
    ///   (the lab saw .12 chosen over the DHCP-reserved .11).
    pub fn undo(&mut self) -> Vec<String> {
        let mut left: Vec<(Step, String)> = Vec::new();
        let mut bridge_gone = false;
        let mut held: Vec<IpNet> = Vec::new();
        while let Some(s) = self.done.pop() {
            let inv = s.inverse();
            if let Step::AddAddr(Dev::Uplink, a) = &inv {
                if let Some(first) = held.iter().find(|n| **n == a.net.trunc()) {
                    let why = format!(
                        "not run: it would become {first}'s primary in place of the address above"
                    );
                    left.push((inv, why));
                    continue;
                }
            }
            let r = injected(Phase::Undo, self.done.len()).and_then(|()| self.run_tolerant(&inv));
            match r {
                Ok(()) => bridge_gone |= matches!(inv, Step::DeleteBridge(_)),
                Err(e) => {
                    tracing::warn!(step = %self.command(&inv), error = %e, "rollback step failed");
                    if let Step::AddAddr(Dev::Uplink, a) = &inv {
                        if a.net.addr().is_ipv4() {
                            held.push(a.net.trunc());
                        }
                    }
                    left.push((inv, format!("failed: {e}")));
                }
            }
        }
        left.into_iter()
            .filter(|(inv, _)| !(bridge_gone && inv.goes_with_the_bridge()))
            .map(|(inv, why)| format!("{}   # {why}", self.command(&inv)))
            .collect()
    }

    fn command(&self, s: &Step) -> String {
        s.command(&self.uplink_name, &self.bridge_name)
    }

    fn index(&mut self, d: Dev) -> Result<u32> {
        match d {
            Dev::Uplink => Ok(self.uplink),
            Dev::Bridge => {
                if let Some(i) = self.bridge {
                    return Ok(i);
                }
                let name = self.bridge_name.clone();
                let i = self
                    .nl
                    .host_links()?
                    .into_iter()
                    .find(|l| l.name == name)
                    .map(|l| l.index)
                    .ok_or_else(|| Error::NodeBridge(format!("bridge {name} vanished")))?;
                self.bridge = Some(i);
                Ok(i)
            }
        }
    }

    fn run(&mut self, s: &Step) -> Result<()> {
        match s {
            Step::CreateBridge(spec) => {
                self.nl.create_bridge(spec)?;
                self.bridge = None;
                self.index(Dev::Bridge).map(|_| ())
            }
            Step::DeleteBridge(name) => self.nl.delete_bridge(name).map(|_| ()),
            Step::Enslave => {
                let b = self.index(Dev::Bridge)?;
                self.nl.set_master(self.uplink, b)
            }
            Step::Release => self.nl.set_master(self.uplink, 0),
            Step::AddAddr(d, a) => {
                let i = self.index(*d)?;
                self.nl.add_addr(i, a)
            }
            Step::DelAddr(d, a) => {
                let i = self.index(*d)?;
                self.nl.del_addr(i, a).map(|_| ())
            }
            Step::AddRoute(d, r) => {
                let mut r = r.clone();
                r.oif = self.index(*d)?;
                self.nl.add_route(&r)
            }
            Step::DelRoute(d, r) => {
                let mut r = r.clone();
                r.oif = self.index(*d)?;
                self.nl.del_route(&r).map(|_| ())
            }
        }
    }

    /// An undo step whose effect is already there (the address back, the
    /// route back) is done, not failed.
    fn run_tolerant(&mut self, s: &Step) -> Result<()> {
        match self.run(s) {
            Err(Error::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::EEXIST)
                    && matches!(s, Step::AddAddr(..) | Step::AddRoute(..)) =>
            {
                Ok(())
            }
            r => r,
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Do,
    Undo,
}

/// With `test-hooks` (end-to-end builds only, like src/hook.rs),
/// `FLATLAN_TEST_BRIDGE_FAIL_AT=N` makes step N fail as a kernel refusal
/// would, and `FLATLAN_TEST_BRIDGE_UNDO_FAIL_AT=N` the undo of step N, so
/// the lab proves the undo, and the commands printed when the undo itself
/// fails, on a real kernel from every step.
/// (`scripts/build-release` checks that neither name is in a release
/// binary.)
#[cfg(feature = "test-hooks")]
fn injected(when: Phase, n: usize) -> Result<()> {
    let var = match when {
        Phase::Do => "FLATLAN_TEST_BRIDGE_FAIL_AT",
        Phase::Undo => "FLATLAN_TEST_BRIDGE_UNDO_FAIL_AT",
    };
    match std::env::var(var) {
        Ok(v) if v == n.to_string() => Err(Error::netlink(
            format!("step {n} ({var})"),
            std::io::Error::from_raw_os_error(libc::EPERM),
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
fn injected(_when: Phase, _n: usize) -> Result<()> {
    Ok(())
}
