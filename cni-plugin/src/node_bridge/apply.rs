//! Carries out a [`Plan`]'s steps and remembers each one done, so that a
//! failure midway, or a gateway that does not answer afterwards, puts the
//! host back as it was (STYLE.md rule 6).

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
            if let Err(e) = injected_failure(n).and_then(|()| self.run(s)) {
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
    /// and returns the `ip` commands that are left to do by hand, with
    /// why each failed (empty: the host is as it was).
    pub fn undo(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        while let Some(s) = self.done.pop() {
            let inv = s.inverse();
            if let Err(e) = self.run_tolerant(&inv) {
                tracing::warn!(step = %self.command(&inv), error = %e, "rollback step failed");
                left.push(format!("{}   # failed: {e}", self.command(&inv)));
            }
        }
        left
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

/// With `test-hooks` (end-to-end builds only, like src/hook.rs),
/// `FLATLAN_TEST_BRIDGE_FAIL_AT=N` makes step N fail as a kernel refusal
/// would, so the lab proves the undo on a real kernel from every step.
#[cfg(feature = "test-hooks")]
fn injected_failure(n: usize) -> Result<()> {
    match std::env::var("FLATLAN_TEST_BRIDGE_FAIL_AT") {
        Ok(v) if v == n.to_string() => Err(Error::netlink(
            format!("step {n} (FLATLAN_TEST_BRIDGE_FAIL_AT)"),
            std::io::Error::from_raw_os_error(libc::EPERM),
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
fn injected_failure(_n: usize) -> Result<()> {
    Ok(())
}
