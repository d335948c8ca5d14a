//! Installing Debian packages.

use std::process::Command;

use anyhow::{bail, Result};

use crate::shell::{probe, run};

/// Installs `packages` with apt-get, without their Recommends: whatever a
/// capability needs beyond a package's Depends is named in the list.
/// Packages already installed are left as they are. The package lists are
/// refreshed only when an install from the current ones fails (a fresh
/// machine has none, an old one may name versions the mirror no longer has).
pub(super) fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "installing Debian packages ({}) needs root",
            packages.join(" ")
        );
    }
    let install = || {
        run(apt_get()
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    if install().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: refreshing the package lists and trying again");
    run(apt_get().args(["update", "-q"]))?;
    install()
}

/// apt-get waiting for the package database when another apt or dpkg holds
/// it (two setups at once), instead of failing.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-o", "DPkg::Lock::Timeout=300"]);
    cmd
}

pub(super) fn is_root() -> bool {
    probe(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}
