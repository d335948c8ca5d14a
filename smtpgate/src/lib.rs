//! smtpgate: POP-before-SMTP enforced in the Linux kernel.
//!
//! The kernel program (smtpgate-ebpf) drops SYNs to the gated SMTP ports from
//! addresses without a live grant. This crate attaches it, manages grants and
//! shows what the gate does; the `smtpgate` binary is its command line. The
//! library side also serves the integration tests and benchmarks, which load
//! the same program.

pub mod agent;
pub mod cli;
pub mod gate;

// The flat paths the tests and the benchmark still import, until they move
// to `gate::`.
pub use gate::{addr, allowlist, attach, clock, filter, gate_maps, maps, pins};
