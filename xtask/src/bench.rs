//! `cargo xtask bench`: builds the agent and the benchmark driver in release
//! mode and runs the driver, which measures smtpgate against its baselines
//! and peers and writes the report under `target/bench/`.

use anyhow::Result;

use crate::{setup, shell};

/// Runs the benchmark; `args` go to the driver (`--quick`, `--only PART`).
pub fn run(args: &[String]) -> Result<()> {
    setup::everything()?;
    // The driver starts the agent binary itself (grant delay, flood).
    shell::run(shell::cargo().args(["build", "--release", "--package", "smtpgate"]))?;
    let target = shell::target_dir();
    let out = target.join("bench");
    shell::run(
        shell::cargo()
            .args(["run", "--release", "--package", "smtpgate-bench", "--"])
            .arg("--out")
            .arg(&out)
            .args(args)
            .env("SMTPGATE_BIN", target.join("release").join("smtpgate")),
    )?;
    eprintln!("xtask: report in {}", out.join("report.md").display());
    Ok(())
}
