//! Who a process runs as and what it may do: capability sets as /proc
//! shows them, and system users made for one test.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{sh, unique_name};

/// CAP_NET_ADMIN (12) and CAP_BPF (39): what the running agent keeps.
pub const KEPT: u64 = (1 << 12) | (1 << 39);

/// A capability set of a `/proc/PID/status` (or a task's), e.g. `CapEff`.
pub fn capability_set(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:\t")))
        .with_context(|| format!("no {field} line"))?;
    Ok(u64::from_str_radix(line.trim(), 16)?)
}

/// A system user with a group of its own name, as the package makes
/// `smtpgate`; deleted, with the group, on drop.
pub struct SystemUser {
    pub name: String,
}

impl SystemUser {
    pub fn new() -> Result<Self> {
        let name = format!("{}u", unique_name());
        sh(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ],
        )?;
        Ok(Self { name })
    }

    /// Its uid and its group's gid.
    pub fn ids(&self) -> Result<(u32, u32)> {
        let id = |flag| -> Result<u32> { Ok(sh("id", &[flag, &self.name])?.trim().parse()?) };
        Ok((id("-u")?, id("-g")?))
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = sh("userdel", &[&self.name]);
        let _ = sh("groupdel", &[&self.name]);
    }
}

/// Whether someone with uid 65534 (nobody) and `gid` as their only group
/// may list `dir`.
pub fn listable_by(gid: u32, dir: &Path) -> Result<bool> {
    Ok(Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .arg("ls")
        .arg(dir)
        .output()?
        .status
        .success())
}
