//! Prerequisites: what a fresh Debian/Ubuntu machine lacks, checked and
//! installed idempotently.

use std::{process::Command, sync::Once};

use anyhow::{bail, Context, Result};

use crate::shell::{probe, run};

/// The eBPF crate needs nightly (for `-Z build-std=core`) with its sources.
const NIGHTLY: &str = "nightly";
/// The bpf-linker line known to build against Debian's LLVM packages.
const BPF_LINKER_VERSION: &str = "^0.13";

/// Debian packages the tests and benchmarks drive: namespaces and veth
/// (iproute2), nsenter/setpriv (util-linux), real mail servers, traffic and
/// NIC tools, and a font for the benchmark chart's labels.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "procps",
    "python3",
    "curl",
    "swaks",
    "dovecot-pop3d",
    "dovecot-imapd",
    "postfix",
    "hping3",
    "nftables",
    "netsniff-ng",
    "xdp-tools",
    "bpftool",
    "ethtool",
    "fonts-dejavu-core",
];

/// Everything: build prerequisites plus the test and benchmark tools.
pub fn everything() -> Result<()> {
    build_prerequisites()?;
    apt_install(TEST_PACKAGES)?;
    eprintln!("xtask: setup complete");
    Ok(())
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
        .args(["--no-default-features", "--features", &format!("llvm-{llvm}")])
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path))
}

fn ensure_nightly() -> Result<()> {
    let installed = probe(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("xtask: installing the {NIGHTLY} toolchain");
        run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))?;
    }
    let components = probe(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", NIGHTLY]))
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

fn is_installed(package: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

/// Installs the missing packages among `packages` with apt-get.
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        eprintln!("xtask: ok: {}", packages.join(" "));
        return Ok(());
    }
    if effective_uid() != 0 {
        bail!("missing Debian packages ({}); run as root so xtask can install them", missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    static UPDATED: Once = Once::new();
    let mut update = Ok(());
    UPDATED.call_once(|| update = run(Command::new("apt-get").args(["update", "-q"])));
    update?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn effective_uid() -> u32 {
    probe(Command::new("id").arg("-u")).and_then(|s| s.trim().parse().ok()).unwrap_or(u32::MAX)
}
