//! Compiles the reference programs (bench-ebpf) for the BPF target, the way
//! smtpgate's build.rs compiles the gate.

fn main() -> anyhow::Result<()> {
    // bench-ebpf's parse-only baseline is built from the gate's parsers,
    // over the shared types.
    for dir in ["/../smtpgate-ebpf/src", "/../smtpgate-common/src"] {
        println!("cargo:rerun-if-changed={}{dir}", env!("CARGO_MANIFEST_DIR"));
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bench-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../bench-ebpf"),
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
