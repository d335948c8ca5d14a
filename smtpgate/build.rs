//! Compiles the kernel program (smtpgate-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker, so `cargo build` yields one agent binary
//! that embeds it. `cargo xtask setup` installs what this needs.

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../smtpgate-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "smtpgate-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
