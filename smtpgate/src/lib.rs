//! smtpgate: POP-before-SMTP enforced in the Linux kernel.
//!
//! The kernel program (smtpgate-ebpf) drops SYNs to the gated SMTP ports from
//! addresses without a live grant. This crate attaches it, manages grants and
//! shows what the gate does; the `smtpgate` binary is its command line.
//!
//! Three layers, each importing only from the ones below it:
//!
//! - [`gate`]: the kernel-facing library. It loads and attaches the program
//!   and reads and writes its pinned maps, and knows nothing of what drives
//!   it, so the agent, the one-shot commands, the integration tests and the
//!   benchmark all drive the same code.
//! - [`agent`]: the long-running service of `smtpgate run`, which turns
//!   logins into grants and keeps the gate tidy. It starts from settings
//!   already resolved and checked, so it never deals in flags or files.
//! - [`cli`]: the command line. It resolves flags and the configuration file
//!   into the agent's settings, and runs the one-shot commands, which act on
//!   the pinned gate whether or not an agent runs.

pub mod agent;
pub mod cli;
pub mod gate;
