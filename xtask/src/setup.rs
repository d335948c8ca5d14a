//! Prerequisites: what a fresh Debian/Ubuntu machine lacks, checked and
//! installed idempotently.

mod apt;
mod tools;

use std::{process::Command, sync::Once};

use anyhow::{Context, Result};

use crate::shell::{cargo, probe, run};
use apt::apt_install;

/// The eBPF crate needs nightly (for `-Z build-std=core`) with its sources.
const NIGHTLY: &str = "nightly";
/// The bpf-linker line known to build against Debian's LLVM packages.
const BPF_LINKER_VERSION: &str = "^0.13";

/// Everything: build prerequisites plus what the tests, the demo and the
/// benchmark need from the machine's tools.
pub fn everything() -> Result<()> {
    build_prerequisites()?;
    tools::ensure()?;
    ensure_cargo_fuzz()?;
    ensure_checkers()?;
    eprintln!("xtask: setup complete");
    Ok(())
}

/// What `cargo xtask deb` needs beyond a build: cargo-deb.
pub fn packaging_tools() -> Result<()> {
    tools::ensure_packaging()
}

/// cargo-fuzz, which runs the fuzz targets (`cargo xtask fuzz`, and briefly
/// in the test suite) on the nightly toolchain.
fn ensure_cargo_fuzz() -> Result<()> {
    let mut version = Command::new("rustup");
    version.args(["run", NIGHTLY, "cargo", "fuzz", "--version"]);
    if probe(&mut version).is_some() {
        eprintln!("xtask: ok: cargo-fuzz");
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (a few minutes)");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// rustfmt and clippy, which `cargo xtask test` runs before the tests: on
/// the toolchain running xtask, and clippy on nightly too (the eBPF crates).
fn ensure_checkers() -> Result<()> {
    let works = |args: &[&str]| probe(cargo().args(args)).is_some();
    if works(&["fmt", "--version"]) && works(&["clippy", "--version"]) {
        eprintln!("xtask: ok: rustfmt and clippy");
    } else {
        eprintln!("xtask: adding rustfmt and clippy");
        run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    }
    let mut nightly = Command::new("rustup");
    nightly.args(["run", NIGHTLY, "cargo", "clippy", "--version"]);
    if probe(&mut nightly).is_some() {
        eprintln!("xtask: ok: clippy on {NIGHTLY}");
        return Ok(());
    }
    eprintln!("xtask: adding clippy to {NIGHTLY}");
    run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", NIGHTLY]))
}

/// What `cargo build` of the agent needs: nightly with rust-src, and a
/// bpf-linker built against an LLVM at least as new as nightly's.
pub fn build_prerequisites() -> Result<()> {
    static DONE: Once = Once::new();
    let mut result = Ok(());
    DONE.call_once(|| result = ensure_build_prerequisites());
    result
}

fn ensure_build_prerequisites() -> Result<()> {
    ensure_nightly()?;
    let llvm = nightly_llvm_major()?;
    if probe(Command::new("bpf-linker").arg("--version")).is_some() {
        eprintln!("xtask: ok: bpf-linker");
        return Ok(());
    }
    let dev = format!("llvm-{llvm}-dev");
    let polly = format!("libpolly-{llvm}-dev");
    apt_install(&[dev.as_str(), polly.as_str(), "build-essential"])?;
    let prefix = format!("/usr/lib/llvm-{llvm}");
    eprintln!("xtask: installing bpf-linker against LLVM {llvm} (about a minute)");
    let path = format!("{prefix}/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path))
}

fn ensure_nightly() -> Result<()> {
    let installed = probe(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("xtask: installing the {NIGHTLY} toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let components = probe(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: ok: {NIGHTLY} with rust-src");
        return Ok(());
    }
    eprintln!("xtask: adding rust-src to {NIGHTLY}");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The LLVM major version nightly rustc is built with: bpf-linker must use
/// an LLVM at least this new to read its bitcode.
fn nightly_llvm_major() -> Result<u32> {
    let info = probe(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))
        .context("running `rustc +nightly -vV`")?;
    info.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse().ok())
        .context("`rustc +nightly -vV` did not report an LLVM version")
}
