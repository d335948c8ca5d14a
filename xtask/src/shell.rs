//! Running commands with their command line echoed, so every step is visible.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Where cargo builds: `CARGO_TARGET_DIR` (else `CARGO_BUILD_TARGET_DIR`) if
/// set, else `target/` in the workspace root. A relative path is taken from
/// the workspace root, where [`cargo`] runs.
pub fn target_dir() -> PathBuf {
    let set = ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|name| std::env::var_os(name).filter(|dir| !dir.is_empty()));
    workspace_root().join(set.unwrap_or_else(|| "target".into()))
}

/// `cargo` as invoked by `cargo xtask`, working in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd`, failing unless it exits successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("xtask: $ {line}");
    let status = cmd.status().with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its standard output, or None if it could
/// not run or failed. For probes.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces this process with `cmd` (keeps signals and exit code intact).
pub fn exec(cmd: &mut Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("xtask: $ {}", describe(cmd));
    Err(cmd.exec()).context("starting smtpgate")
}
