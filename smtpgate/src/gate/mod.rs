//! The gate: the kernel program and its maps.
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
pub mod pins;
