//! `cargo xtask`: the project's build, setup, run and test entry points.
//!
//! Every command first makes sure the machine has what it needs and installs
//! what is missing, printing each step, so that a fresh Debian or Ubuntu
//! machine goes from clone to running gate (or passing suite) in one command.

mod bench;
mod checks;
mod deb;
mod fuzz;
mod setup;
mod shell;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::shell::{cargo, target_dir};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every prerequisite and install what is missing (idempotent).
    Setup,
    /// Build the agent (which embeds the kernel program).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run the agent: `cargo xtask run -- run --iface eth0`.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for smtpgate.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the Debian package with cargo-deb: the release binary, the
    /// hardened unit, the example configuration, manual pages and shell
    /// completions. Writes target/debian/ and prints the package's path.
    Deb {
        /// Package this binary instead of a release build (the package test
        /// gives its debug build).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Where to write the package [default: target/debian].
        #[arg(long, value_name = "DIR")]
        output: Option<PathBuf>,
    },
    /// Measure smtpgate against baselines and peers; writes target/bench/.
    Bench {
        /// Arguments for the driver: --quick, --only per-packet|agent|flood.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the fuzz targets (nightly, cargo-fuzz) for SECONDS each; all of
    /// them, or those named.
    Fuzz {
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Build without optimisation, as the test suite does: half the
        /// cold build time, fewer executions per second.
        #[arg(long)]
        quick: bool,
        targets: Vec<String>,
    },
    /// A narrated, throw-away lab: Dovecot and Postfix behind the gate, a
    /// customer and a stranger. Cleans up on exit or Ctrl-C.
    Demo,
    /// Differential fuzzing of the gate against the kernel's own stack,
    /// longer than the test suite's run: `cargo xtask fuzz-frames --cases N --seed S`.
    FuzzFrames {
        /// Arguments for the fuzzer: --cases N, --seed S, --first I, --hook xdp|tc.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and clippy, then run the unit tests and the
    /// privileged integration tests.
    Test {
        /// Extra arguments for the test binaries (a name filter, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::everything(),
        Command::Build { release } => build(release).map(drop),
        Command::Run { release, args } => {
            let agent = build(release)?;
            shell::exec(std::process::Command::new(agent).args(args))
        }
        Command::Test { args } => test(&args),
        Command::Demo => run_with_agent("demo", &[]),
        Command::FuzzFrames { args } => run_with_agent("fuzz_frames", &args),
        Command::Deb { binary, output } => {
            deb::run_deb(binary.as_deref(), output.as_deref()).map(drop)
        }
        Command::Bench { args } => bench::run(&args),
        Command::Fuzz {
            seconds,
            quick,
            targets,
        } => {
            let build = if quick {
                fuzz::Build::Quick
            } else {
                fuzz::Build::Optimised
            };
            fuzz::run(&targets, seconds, build)
        }
    }
}

/// Builds the agent and returns the path of its binary.
fn build(release: bool) -> Result<PathBuf> {
    setup::build_prerequisites()?;
    let mut cmd = cargo();
    cmd.args(["build", "--package", "smtpgate"]);
    if release {
        cmd.arg("--release");
    }
    shell::run(&mut cmd)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("smtpgate"))
}

fn test(args: &[String]) -> Result<()> {
    setup::everything()?;
    checks::all()?;
    let agent = build(false)?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "smtpgate-ebpf",
        "--exclude",
        "bench-ebpf",
        "--no-fail-fast",
        "--",
    ])
    .args(args)
    .env("SMTPGATE_BIN", agent)
    // The namespace tests mostly wait on timers, not on the CPU.
    .env("RUST_TEST_THREADS", "6");
    shell::run(&mut cmd)
}

/// Sets up, builds the agent, and runs a binary of the tests crate against it.
fn run_with_agent(bin: &str, args: &[String]) -> Result<()> {
    setup::everything()?;
    let agent = build(false)?;
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "smtpgate-tests",
        "--bin",
        bin,
        "--",
    ])
    .args(args)
    .env("SMTPGATE_BIN", agent);
    shell::run(&mut cmd)
}
