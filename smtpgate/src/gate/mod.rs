//! The gate as user space sees it: the kernel program, loaded and attached
//! ([`attach`]), the bpffs pins that let it outlive every process ([`pins`]),
//! typed access to its maps ([`maps`], [`allowlist`], [`gate_maps`]) and the
//! options it runs with ([`options`]). Nothing here knows of the agent or
//! the command line: the tests and the benchmark use this module alone.

pub mod addr;
pub mod allowlist;
pub mod attach;
pub mod batch;
pub mod clock;
pub mod errno;
pub mod filter;
pub mod gate_maps;
pub mod mapped;
pub mod maps;
pub mod options;
pub mod owners;
pub mod pins;
pub mod replay;
pub mod upgrade;
