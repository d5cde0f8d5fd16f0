//! SIGHUP, SIGINT and SIGTERM held back while the host is half migrated.
//! An SSH session that dies sends SIGHUP; with the default action flatlan
//! would die between moving the address and rolling back, leaving the
//! node unreachable: the very thing the gateway check is there to
//! prevent (`netplan try` holds signals the same way). They stay pending
//! until the migration is verified or undone; one that came meanwhile
//! counts as "roll back".

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::{Error, Result};

pub struct Held {
    fd: SignalFd,
    old: SigSet,
}

fn mask() -> SigSet {
    let mut m = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM] {
        m.add(s);
    }
    m
}

impl Held {
    /// Blocks the three signals in this thread (flatlan's CLI has one)
    /// until dropped.
    pub fn new() -> Result<Held> {
        let m = mask();
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&m), Some(&mut old))
            .map_err(|e| Error::io("block", "SIGHUP, SIGINT and SIGTERM", e.into()))?;
        let fd = match SignalFd::with_flags(&m, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = old.thread_set_mask();
                return Err(Error::io(
                    "signalfd",
                    "SIGHUP, SIGINT and SIGTERM",
                    e.into(),
                ));
            }
        };
        Ok(Held { fd, old })
    }

    /// The first signal that came since [`Held::new`] (consumed), if any.
    pub fn take(&self) -> Option<Signal> {
        let mut first = None;
        while let Ok(Some(info)) = self.fd.read_signal() {
            let s = i32::try_from(info.ssi_signo)
                .ok()
                .and_then(|n| Signal::try_from(n).ok());
            first = first.or(s);
        }
        first
    }
}

impl Drop for Held {
    /// Back to the caller's mask; a signal that came after the last
    /// [`Held::take`] is delivered now, with the host in a known state.
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}
