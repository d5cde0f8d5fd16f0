//! A crash-test hook: with `FLATLAN_TEST_CRASH_AFTER=<step>` in the
//! environment, the plugin kills itself with SIGKILL right after that ADD
//! step. The crash-safety suite (tests/tests/crash.rs) uses it to prove DEL
//! and GC clean up after a plugin killed at any point.
//!
//! Only a build with the `test-hooks` feature reads the variable: the
//! end-to-end crate enables it, so `cargo build --workspace --bins` makes a
//! plugin with the hook for the suites, while a release build
//! (scripts/build-release) has neither the check nor the variable's name
//! in it. A runtime's environment can never kill a shipped plugin.

/// The variable that names the step to die after.
#[cfg(feature = "test-hooks")]
pub const ENV: &str = "FLATLAN_TEST_CRASH_AFTER";

/// SIGKILLs the plugin if [`ENV`] names `step`.
#[cfg(feature = "test-hooks")]
pub fn maybe_abort(step: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == step) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Without `test-hooks`: nothing, and inlined away.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn maybe_abort(_step: &str) {}
