//! `cargo xtask deb`: the Debian package, made with cargo-deb from the
//! `[package.metadata.deb]` table of smtpgate/Cargo.toml.
//!
//! cargo-deb packs what is under the target directory's `release/`: the
//! binary, and the manual pages and completions that the binary itself
//! writes (`smtpgate generate`) into `release/packaging/`, and the README.
//! So the steps are: build (or take) the binary, generate, gzip the pages
//! and the README as Debian Policy asks (`gzip -9n`), then cargo-deb with
//! `--no-build`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::shell::{cargo, run, target_dir, workspace_root};

/// Builds the package into `output` (default `target/debian/`) and prints
/// its path on standard output.
///
/// Without `binary`, from a release build. With it, from that binary
/// instead (the package test gives its debug build, sparing the suite a
/// release build): it is copied into `OUTPUT/stage/release/`, and cargo-deb
/// is pointed there with `CARGO_TARGET_DIR`, the way it finds a release
/// build anywhere. It strips the copy either way.
pub fn run_deb(binary: Option<&Path>, output: Option<&Path>) -> Result<PathBuf> {
    crate::setup::packaging_tools()?;
    let output = output.map_or_else(|| target_dir().join("debian"), Path::to_path_buf);
    fs::create_dir_all(&output).with_context(|| format!("creating {}", output.display()))?;
    let output = output.canonicalize()?;
    let (stage, agent) = match binary {
        None => (target_dir(), crate::build(true)?),
        Some(binary) => {
            let stage = output.join("stage");
            let release = stage.join("release");
            fs::create_dir_all(&release)?;
            let agent = release.join("smtpgate");
            fs::copy(binary, &agent)
                .with_context(|| format!("copying {} to {}", binary.display(), agent.display()))?;
            (stage, agent)
        }
    };
    let packaging = stage.join("release/packaging");
    if packaging.exists() {
        // Pages of renamed subcommands must not linger.
        fs::remove_dir_all(&packaging)?;
    }
    let man = packaging.join("man");
    // Standard output carries only the package's path.
    run(Command::new(&agent)
        .args(["generate", "man"])
        .arg(&man)
        .stdout(std::io::stderr()))?;
    run(Command::new(&agent)
        .args(["generate", "completions"])
        .arg(packaging.join("completions"))
        .stdout(std::io::stderr()))?;
    let doc = packaging.join("doc");
    fs::create_dir_all(&doc)?;
    fs::copy(workspace_root().join("README.md"), doc.join("README.md"))?;
    // Debian Policy: manual pages, and documents over 4 kB, gzip -9n.
    run(Command::new("gzip").arg("-9nr").arg(&man).arg(&doc))?;

    let mut deb = cargo();
    deb.args(["deb", "--package", "smtpgate", "--no-build", "--output"])
        .arg(&output)
        .env("CARGO_TARGET_DIR", &stage)
        .stderr(Stdio::inherit());
    if binary.is_some() {
        // A test package: lighter compression, seconds instead of a minute.
        deb.arg("--fast");
    }
    eprintln!(
        "xtask: $ CARGO_TARGET_DIR={} cargo deb --package smtpgate --no-build --output {}{}",
        stage.display(),
        output.display(),
        if binary.is_some() { " --fast" } else { "" }
    );
    let out = deb.output().context("starting cargo deb")?;
    if !out.status.success() {
        bail!("`cargo deb` failed ({})", out.status);
    }
    // cargo-deb prints the path of the package it wrote, and nothing else.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let package = stdout
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not say where it wrote the package")?;
    eprintln!("xtask: built {}", package.display());
    println!("{}", package.display());
    Ok(package)
}
