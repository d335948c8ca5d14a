//! `smtpgate generate`: the manual pages and shell completions that the
//! Debian package ships (`cargo xtask deb` runs it before cargo-deb), made
//! from the clap definitions so that they cannot drift from the flags.

use std::{fs, io::Write, path::Path};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::args::{Cli, Generate};

/// Manual pages go to section 8: smtpgate is run by the administrator.
const SECTION: &str = "8";

pub fn run(what: Generate) -> Result<()> {
    match what {
        Generate::Man { dir } => man(&dir),
        Generate::Completions { dir } => completions(&dir),
    }
}

/// Writes `smtpgate.8` and one page per visible subcommand, nested ones
/// included (`smtpgate-run.8`, `smtpgate-allowlist-add.8`), into `dir`.
pub fn man(dir: &Path) -> Result<()> {
    create(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its page name (`smtpgate-run`) and the command
    // line its synopsis shows (`smtpgate run`).
    cmd.build();
    let source = format!("smtpgate {}", env!("CARGO_PKG_VERSION"));
    let mut written = 0;
    write_pages(&cmd, dir, &source, &mut written)?;
    println!("wrote {written} manual pages to {}", dir.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, dir: &Path, source: &str, written: &mut usize) -> Result<()> {
    let page = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .source(source)
        .manual("System Manager's Manual");
    let path = dir.join(page.get_filename());
    let mut file =
        fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    page.render(&mut file)
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, dir, source, written)?;
    }
    Ok(())
}

/// Writes the completions for bash (`smtpgate.bash`), zsh (`_smtpgate`) and
/// fish (`smtpgate.fish`) into `dir`.
pub fn completions(dir: &Path) -> Result<()> {
    create(dir)?;
    // clap_complete offers hidden subcommands too: leave them out (this one).
    let full = Cli::command();
    let mut cmd = clap::Command::new("smtpgate")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, "smtpgate", dir)
            .with_context(|| format!("writing the {shell} completions to {}", dir.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn create(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
