//! A crash-test hook: with `FLATLAN_TEST_CRASH_AFTER=<step>` in the
//! environment, the plugin kills itself with SIGKILL right after that ADD
//! step. The crash-safety suite uses it to prove DEL and GC clean up after
//! a plugin killed at any point. Runtimes never set it.

pub const ENV: &str = "FLATLAN_TEST_CRASH_AFTER";

pub fn maybe_abort(step: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
