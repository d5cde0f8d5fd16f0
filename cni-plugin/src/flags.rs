//! The scanner behind the hand-written CLIs (`ipam`, `install`, `doctor`,
//! `node bridge`): `--flag value` and `--flag=value` alike. The speaker's
//! clap flags take both, the DaemonSet's commands use the `=` form, and
//! an installer that rejected it once left a real node NotReady (issue
//! 14); every command of this binary now reads both.

use std::iter::Peekable;
use std::slice::Iter;

use crate::error::{Error, Result};

pub struct Flags<'a> {
    it: Peekable<Iter<'a, String>>,
    usage: &'a str,
    /// The argument last returned by [`Flags::next`].
    flag: &'a str,
    /// Its `=value`, until a `value` call takes it.
    inline: Option<&'a str>,
}

impl<'a> Flags<'a> {
    /// `usage` ends every error message, as the parsers' errors always did.
    pub fn new(args: &'a [String], usage: &'a str) -> Self {
        Flags {
            it: args.iter().peekable(),
            usage,
            flag: "",
            inline: None,
        }
    }

    /// The next flag (with any `=value` split off) or positional argument.
    /// A `=value` given to a flag that took none is an error here, not a
    /// silently dropped value: `--force=false` must not mean force.
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<&'a str>> {
        if let Some(v) = self.inline.take() {
            return Err(self.usage(format!("{} takes no value (got {0}={v})", self.flag)));
        }
        let Some(arg) = self.it.next() else {
            return Ok(None);
        };
        self.flag = arg;
        if let Some((flag, v)) = arg.split_once('=') {
            if flag.starts_with("--") {
                self.flag = flag;
                self.inline = Some(v);
            }
        }
        Ok(Some(self.flag))
    }

    /// The current flag's value: its `=value`, or else the next argument.
    pub fn value(&mut self) -> Result<String> {
        match self
            .inline
            .take()
            .or_else(|| self.it.next().map(String::as_str))
        {
            Some(v) => Ok(v.to_string()),
            None => Err(self.usage(format!("{} needs a value", self.flag))),
        }
    }

    /// An optional value: its `=value`, or the next argument unless that
    /// is a flag.
    pub fn optional_value(&mut self) -> Option<&'a str> {
        self.inline
            .take()
            .or_else(|| self.it.next_if(|v| !v.starts_with('-')).map(String::as_str))
    }

    /// The error for an argument the command does not know.
    pub fn unknown(&self) -> Error {
        self.usage(format!("unknown argument {}", self.flag))
    }

    /// A usage error with the command's usage text under `msg`.
    pub fn usage(&self, msg: String) -> Error {
        Error::Usage(format!("{msg}\n{}", self.usage))
    }
}

/// The flag name of an argument, without any `=value`.
pub fn name(arg: &str) -> &str {
    match arg.split_once('=') {
        Some((flag, _)) if flag.starts_with("--") => flag,
        _ => arg,
    }
}

/// A command line written as one string, for the parsers' tests.
#[cfg(test)]
pub(crate) fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument as the scanner sees it: a flag with its value when
    /// the flag is in `valued`, else the flag or positional alone.
    fn scan(s: &str, valued: &[&str]) -> Result<Vec<String>> {
        let a = args(s);
        let mut f = Flags::new(&a, "USAGE");
        let mut out = Vec::new();
        while let Some(arg) = f.next()? {
            if valued.contains(&arg) {
                out.push(format!("{arg}:{}", f.value()?));
            } else {
                out.push(arg.to_string());
            }
        }
        Ok(out)
    }

    #[test]
    fn both_forms_give_the_same_value() {
        let spaced = scan("--root /host --force pos", &["--root"]).expect("scans");
        let joined = scan("--root=/host --force pos", &["--root"]).expect("scans");
        assert_eq!(spaced, ["--root:/host", "--force", "pos"]);
        assert_eq!(joined, spaced);
        // Only the first '=' splits; a value may hold more.
        let eq = scan("--label=a=b", &["--label"]).expect("scans");
        assert_eq!(eq, ["--label:a=b"]);
        // An empty `=value` is a value, not a missing one.
        assert_eq!(scan("--root=", &["--root"]).expect("scans"), ["--root:"]);
    }

    #[test]
    fn a_value_given_to_a_flag_that_takes_none_is_an_error() {
        for s in ["--force=false", "--force=false pos", "pos --force=1"] {
            let e = scan(s, &[]).expect_err(s).to_string();
            assert!(e.contains("--force takes no value"), "{s}: {e}");
            assert!(e.ends_with("USAGE"), "{s}: {e}");
        }
    }

    #[test]
    fn a_missing_value_names_the_flag() {
        let e = scan("--force --root", &["--root"]).expect_err("no value");
        assert!(e.to_string().starts_with("--root needs a value\n"), "{e}");
    }

    #[test]
    fn only_double_dash_arguments_split() {
        // A positional such as a label selector keeps its '='.
        assert_eq!(scan("a=b -x=y", &[]).expect("scans"), ["a=b", "-x=y"]);
        assert_eq!(name("--watch=2"), "--watch");
        assert_eq!(name("a=b"), "a=b");
    }

    #[test]
    fn an_optional_value_is_never_a_flag() {
        let a = args("--watch --json --watch 3 --watch=4 --watch");
        let mut f = Flags::new(&a, "U");
        let mut got = Vec::new();
        while let Some(arg) = f.next().expect("scans") {
            got.push((arg, f.optional_value()));
        }
        assert_eq!(
            got,
            [
                ("--watch", None),
                ("--json", None),
                ("--watch", Some("3")),
                ("--watch", Some("4")),
                ("--watch", None),
            ]
        );
    }
}
