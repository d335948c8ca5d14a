//! A prerequisite removed by hand is back after `cargo xtask setup`, the
//! step `cargo xtask test` runs before any test.
//!
//! The prerequisite is libio-socket-inet6-perl: swaks only recommends it,
//! so a package-name check passes without it, yet without it swaks cannot
//! speak IPv6 and `mailservers::pop_before_smtp_over_ipv6` fails.
//!
//! Needs root, like the rest of the suite, and Debian's package registry
//! (or apt's cache) for the reinstall.
//!
//! This cannot race with the mail tests that run swaks: cargo runs test
//! binaries one after another, never two at once, so in `cargo test` (and
//! `cargo xtask test`) nothing else runs while this binary, which holds only
//! this test, has the package removed. Another `cargo test` started by hand
//! in a second shell meanwhile is not covered: for the few seconds between
//! removal and reinstall, its swaks would lack IPv6.

use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};

const PACKAGE: &str = "libio-socket-inet6-perl";

/// `dpkg --remove PACKAGE`, retried while another dpkg or apt holds the
/// package database (bounded: two minutes).
fn remove_waiting_for_the_lock() -> Result<std::process::Output> {
    for _ in 0..60 {
        let removed = run(Command::new("dpkg").args(["--remove", PACKAGE]))?;
        if removed.status.success() || !String::from_utf8_lossy(&removed.stderr).contains("lock") {
            return Ok(removed);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    run(Command::new("dpkg").args(["--remove", PACKAGE]))
}

#[test]
fn setup_reinstalls_what_swaks_needs_for_ipv6() -> Result<()> {
    let uid = run(Command::new("id").arg("-u"))?;
    ensure!(
        String::from_utf8_lossy(&uid.stdout).trim() == "0",
        "this test removes a Debian package: run it as root"
    );
    let _restore = Restore;

    let removed = remove_waiting_for_the_lock()?;
    ensure!(
        removed.status.success(),
        "dpkg --remove {PACKAGE} failed: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    ensure!(
        !swaks_speaks_ipv6()?,
        "swaks still speaks IPv6 without {PACKAGE}, so this test would prove nothing"
    );

    let (ok, log) = setup()?;
    ensure!(ok, "setup failed:\n{log}");
    ensure!(
        log.contains("xtask: swaks cannot send over IPv6") && log.contains(PACKAGE),
        "setup did not say what was missing and what it installs:\n{log}"
    );
    ensure!(
        swaks_speaks_ipv6()?,
        "swaks cannot speak IPv6 after setup:\n{log}"
    );

    let (ok, log) = setup()?;
    ensure!(ok, "the second setup failed:\n{log}");
    ensure!(
        log.contains("xtask: ok: all") && !log.contains("apt-get"),
        "the second setup did not find everything in place:\n{log}"
    );
    Ok(())
}

/// Runs `xtask setup`; returns whether it succeeded and what it printed.
fn setup() -> Result<(bool, String)> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_xtask")).arg("setup"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok((out.status.success(), log))
}

/// Whether swaks reports IPv6 support (`swaks --support`).
fn swaks_speaks_ipv6() -> Result<bool> {
    let out = run(Command::new("swaks").arg("--support"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|line| line.contains("IPv6 supported")))
}

fn run(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

/// Puts the package back if the test fails before setup did, so a failure
/// here does not break the mail tests after it.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if !swaks_speaks_ipv6().unwrap_or(false) {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends", PACKAGE])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
        }
    }
}
