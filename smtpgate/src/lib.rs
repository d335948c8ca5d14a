//! smtpgate: POP-before-SMTP enforced in the Linux kernel.
//!
//! The kernel program (smtpgate-ebpf) drops SYNs to the gated SMTP ports from
//! addresses without a live grant. This crate attaches it, manages grants and
//! shows what the gate does; the `smtpgate` binary is its command line. The
//! library side also serves the integration tests and benchmarks, which load
//! the same program.

pub mod accept;
pub mod addr;
pub mod allowlist;
pub mod attach;
pub mod batch;
pub mod check_log;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod errno;
pub mod filter;
pub mod gate_maps;
pub mod mapped;
pub mod maps;
pub mod metrics;
pub mod notify;
pub mod pins;
pub mod run;
pub mod settings;
pub mod throttle;
pub mod upgrade;
pub mod watch;
pub mod quota;
pub mod policy_protocol;
