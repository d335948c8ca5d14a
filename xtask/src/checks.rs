//! The checks `cargo xtask test` runs before the tests: formatting, and
//! clippy on the host crates and, for the BPF target, on the eBPF crates.
//! A failed check ends the run with one line that names it and the command
//! that fixes it or shows why.

use std::process::Command;

use anyhow::{bail, Result};

use crate::shell::{cargo, run};

/// Clippy on every host crate and target, warnings denied.
const CLIPPY: &[&str] = &[
    "clippy",
    "--workspace",
    "--exclude",
    "smtpgate-ebpf",
    "--exclude",
    "bench-ebpf",
    "--all-targets",
    "--",
    "-D",
    "warnings",
];

/// Clippy on the eBPF crates, built as their build scripts build them:
/// nightly, for the BPF target, with `core` built from source.
const CLIPPY_EBPF: &[&str] = &[
    "clippy",
    "--package",
    "smtpgate-ebpf",
    "--package",
    "bench-ebpf",
    "--target",
    "bpfel-unknown-none",
    "-Z",
    "build-std=core",
    "--",
    "-D",
    "warnings",
];

/// Runs every check, in order, stopping at the first that fails.
pub fn all() -> Result<()> {
    check(
        "formatting",
        cargo().args(["fmt", "--all", "--check"]),
        "run `cargo fmt --all` to fix it",
    )?;
    // fuzz/ is a workspace of its own, which `--all` does not reach.
    check(
        "fuzz/ formatting",
        cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--check"]),
        "run `cargo fmt --manifest-path fuzz/Cargo.toml` to fix it",
    )?;
    check(
        "clippy",
        cargo().args(CLIPPY),
        &format!("see above, or run `cargo {}`", CLIPPY.join(" ")),
    )?;
    check(
        "eBPF clippy",
        Command::new("rustup")
            .args(["run", "nightly", "cargo"])
            .args(CLIPPY_EBPF),
        &format!(
            "see above, or run `cargo +nightly {}`",
            CLIPPY_EBPF.join(" ")
        ),
    )
}

/// Runs `cmd`; if it fails, fails with "NAME check failed: REMEDY".
fn check(name: &str, cmd: &mut Command, remedy: &str) -> Result<()> {
    if run(cmd).is_err() {
        bail!("{name} check failed: {remedy}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_is_one_line_naming_it_and_its_remedy() {
        let err = check(
            "formatting",
            &mut Command::new("false"),
            "run `cargo fmt --all`",
        )
        .unwrap_err();
        assert_eq!(err.chain().count(), 1);
        assert_eq!(
            err.to_string(),
            "formatting check failed: run `cargo fmt --all`"
        );
        assert!(check("formatting", &mut Command::new("true"), "-").is_ok());
    }
}
