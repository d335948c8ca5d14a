//! The external programs the tests spawn, looked up before they are spawned.
//!
//! Most of them run inside a namespace through `nsenter`, which starts fine
//! even when the program is missing and only then fails with exit status
//! 127, so the test would fail far from the cause. Looking the program up
//! first makes it fail at once with a line that names the program and what
//! installs it. A missing program is always a failure, never a skip.

use std::{env, os::unix::fs::PermissionsExt, path::PathBuf};

use anyhow::{anyhow, Result};

/// The path of the executable `program` on PATH, or an error naming it.
pub fn require(program: &str) -> Result<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            anyhow!("{program} is not installed (not on PATH); `cargo xtask setup` installs it")
        })
}
