//! `flatlan-lab`: the demo and the bench of flatlan, an application on
//! top of netns-testkit's primitives (the lab, namespaces, processes,
//! probes, the CNI launcher and the speaker fleet).
//!
//! - [`demo`]: pods on the simulated LAN with the real `flatlan` binary,
//!   then `flatlan-speaker` announcing a VIP and failing over; a report.
//! - [`bench`]: flatlan against Debian's reference `bridge` +
//!   `host-local` plugins in one interleaved run, plus the speaker's
//!   figures from [`speaker_bench`].
//! - [`speaker_bench`]: failover, handoff, first GARP, ARP reply latency
//!   and RSS of the real `flatlan-speaker` on netns-testkit's
//!   `SpeakerLab` (also behind `flatlan-speaker bench`), and
//!   [`speaker_bench_lossy`]: the same on a poor LAN (loss, a busy node).
//!
//! It is its own crate so that netns-testkit stays the kit the test suites
//! build on, and neither the kit nor the shipped binaries carry the demo
//! or the bench (docs/ARCHITECTURE.md, "The workspace").
#![forbid(unsafe_code)]

pub mod bench;
mod bench_cni;
mod bench_datapath;
mod bench_report;
mod bench_speaker;
mod bench_stats;
pub mod demo;
mod demo_speaker;
pub mod mdns_browse;
pub mod speaker_bench;
pub mod speaker_bench_link;
pub mod speaker_bench_lossy;
mod speaker_bench_markdown;
