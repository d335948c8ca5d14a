//! Compiles the kernel program (smtpgate-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker, so `cargo build` yields one agent binary
//! that embeds it. `cargo xtask setup` installs what this needs.

fn main() -> anyhow::Result<()> {
    // The program's maps are laid out by the shared types: a change there
    // must rebuild it, or the agent and the program disagree on sizes.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../smtpgate-common/src")
    );
    // The fuzz targets (cargo-fuzz builds with `--cfg fuzzing`) exercise
    // parsers only and never load the program: an empty object spares them
    // a second BPF build of minutes.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join("smtpgate"), [])?;
        return Ok(());
    }
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
