//! bench-ebpf's compiled object.

/// bench-ebpf's programs (the baselines, the harness, the flood generator),
/// compiled by build.rs.
pub static BENCH_PROGRAMS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench-programs"));
