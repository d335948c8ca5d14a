//! Compiles the reference programs (bench-ebpf) for the BPF target, the way
//! smtpgate's build.rs compiles the gate.

fn main() -> anyhow::Result<()> {
    // bench-ebpf's parse-only baseline is built from the gate's parsers.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../smtpgate-ebpf/src")
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bench-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../bench-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
