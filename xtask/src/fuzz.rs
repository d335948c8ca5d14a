//! `cargo xtask fuzz`: the cargo-fuzz targets under `fuzz/` (nightly,
//! libFuzzer with AddressSanitizer), each for a bounded time, starting from
//! seed corpora made from the log fixtures and the README. A run fails if a
//! target panics (a broken property), leaks past its memory bounds or
//! crashes; libFuzzer then leaves the input under `target/fuzz/artifacts/`.
//! The test suite runs every target for a few seconds.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::shell::{probe, run as run_command, target_dir, workspace_root};

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 4] = ["login_lines", "tail_lines", "notify_report", "config_file"];

/// Heap and resident-memory bounds a target must stay within: a single
/// allocation over `MALLOC_LIMIT_MB` or a process over `RSS_LIMIT_MB` is a
/// failure, so a parser that held a whole input line would be caught.
const MALLOC_LIMIT_MB: u32 = 64;
const RSS_LIMIT_MB: u32 = 1024;

/// How the targets are compiled.
#[derive(Clone, Copy)]
pub enum Build {
    /// Optimised, as cargo-fuzz builds by default: for long runs, where
    /// executions per second count.
    Optimised,
    /// Without optimisation (debug assertions and overflow checks stay on):
    /// half the cold build time of the whole agent under the sanitizer, for
    /// the test suite's few seconds per target.
    Quick,
}

/// Runs each of `targets` (every target if empty) for `seconds`, built as
/// `build` says.
pub fn run(targets: &[String], seconds: u64, build: Build) -> Result<()> {
    if probe(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "--version"]))
        .is_none()
    {
        bail!("cargo-fuzz is not installed for the nightly toolchain: run `cargo xtask setup`");
    }
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = chosen.iter().find(|t| !TARGETS.contains(t)) {
        bail!(
            "no fuzz target '{unknown}' (there are: {})",
            TARGETS.join(", ")
        );
    }
    let root = workspace_root();
    let work = target_dir().join("fuzz");
    for target in chosen {
        let seeds = work.join("seeds").join(target);
        let corpus = work.join("corpus").join(target);
        let artifacts = work.join("artifacts").join(target);
        // Seeds are made afresh; the corpus a target grows is kept between runs.
        if seeds.exists() {
            fs::remove_dir_all(&seeds).with_context(|| format!("removing {}", seeds.display()))?;
        }
        for dir in [&seeds, &corpus, &artifacts] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_seeds(target, &root, &seeds)?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        run_command(
            Command::new("rustup")
                .args(["run", "nightly", "cargo", "fuzz", "run"])
                .arg(match build {
                    Build::Optimised => "--release",
                    Build::Quick => "--dev",
                })
                .arg("--fuzz-dir")
                .arg(root.join("fuzz"))
                .arg(target)
                .arg(&corpus)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
                .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
                .arg(format!("-max_len={}", max_len(target)))
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=1")
                .current_dir(&root),
        )?;
    }
    Ok(())
}

/// The longest input a target is given: a Dovecot ID must exceed a 4 KiB
/// piece twice over to make a piece in its middle.
fn max_len(target: &str) -> usize {
    match target {
        "login_lines" => 20_000,
        _ => 4096,
    }
}

/// Writes `target`'s seeds into `dir`, one file each.
fn write_seeds(target: &str, root: &Path, dir: &Path) -> Result<()> {
    let lines = fixture_lines(root)?;
    let seeds: Vec<Vec<u8>> = match target {
        "login_lines" => login_seeds(root, &lines)?,
        "tail_lines" => {
            // Two runs of 56 KiB make a line beyond the 64 KiB bound.
            let long = vec![b'x', 255, b'x', 255, b'\n', 0, b'y', 0, 0xff, 3];
            lines
                .iter()
                .map(|line| runs_of(line))
                .chain([long])
                .collect()
        }
        "notify_report" => [
            "192.0.2.7 imap alice",
            "::ffff:198.51.100.2\tPOP3",
            "0.0.0.0 imap",
            "2001:db8::5 pop3 bob extra",
        ]
        .iter()
        .map(|line| line.as_bytes().to_vec())
        .chain(lines.iter().cloned())
        .collect(),
        "config_file" => vec![
            readme_config(root)?.into_bytes(),
            b"iface = [\"eth0\"]\ntrust-hosts = [\"mx1.example\"]\n".to_vec(),
        ],
        other => bail!("no seeds for {other}"),
    };
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:05}")), seed)?;
    }
    Ok(())
}

/// Every log line of `smtpgate-logins/tests/logs/*.log` (comments left out).
fn fixture_lines(root: &Path) -> Result<Vec<Vec<u8>>> {
    let dir = root.join("smtpgate-logins/tests/logs");
    let mut lines = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "log") {
            let bytes = fs::read(&path)?;
            lines.extend(
                bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
                    .map(<[u8]>::to_vec),
            );
        }
    }
    Ok(lines)
}

/// `login_lines` input: a template, a prefix, a pid width, then client
/// fields separated by NUL. Each fixture line is a client field of one
/// template after another, and the IMAP IDs that a real Dovecot wrote in
/// pieces shaped to start like logins are IDs of the Dovecot template.
fn login_seeds(root: &Path, lines: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    const TEMPLATES: u8 = 12;
    let mut seeds: Vec<Vec<u8>> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let field: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
            [
                &[i as u8 % TEMPLATES, i as u8 % 4, 4][..],
                &field,
                b"\0host.example",
            ]
            .concat()
        })
        .collect();
    seeds.extend(captured_ids(root)?);
    Ok(seeds)
}

/// The IDs in `dovecot-2.3-id-pieces.log` (its `log_path` lines), put back
/// together from their pieces as `login_lines` input: the Dovecot ID
/// template in Dovecot's own file, from a process with a five-digit pid (as
/// the capture's), keys and values separated by 0x01, then the user name
/// the client tried, if any.
fn captured_ids(root: &Path) -> Result<Vec<Vec<u8>>> {
    const PROCESS: &[u8] = b"imap-login: Info: ";
    let path = root.join("smtpgate-logins/tests/logs/dovecot-2.3-id-pieces.log");
    let log = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for line in log.split(|&b| b == b'\n') {
        let Some(at) = find(line, PROCESS) else {
            continue;
        };
        let piece = &line[at + PROCESS.len()..];
        match piece.strip_prefix(b"ID sent: ") {
            Some(first) => messages.push(first.to_vec()),
            None if piece.starts_with(b"Disconnected") => {}
            None => messages
                .last_mut()
                .context("a piece before any ID")?
                .extend_from_slice(piece),
        }
    }
    let mut inputs = Vec::new();
    for message in messages {
        // The client's own elements follow the ID's pairs.
        let own = rfind(&message, b": user=<").context("an ID without the client's elements")?;
        let user = &message[own + b": user=<".len()..];
        let user = &user[..user.iter().position(|&b| b == b'>').unwrap_or(user.len())];
        let mut input = vec![2, 3, 4];
        let pairs = message[..own]
            .split(|&b| b == b',')
            .map(|pair| pair.strip_prefix(b" ").unwrap_or(pair));
        for (i, pair) in pairs.enumerate() {
            let (key, value) =
                pair.split_at(pair.iter().position(|&b| b == b'=').unwrap_or(pair.len()));
            if i > 0 {
                input.push(1);
            }
            input.extend_from_slice(key);
            input.push(1);
            input.extend_from_slice(value.strip_prefix(b"=").unwrap_or(value));
        }
        input.push(0);
        input.extend_from_slice(user);
        inputs.push(input);
    }
    Ok(inputs)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// `tail_lines` input for `bytes`: each byte once (a run of one), then
/// 0xff, which ends the runs, and chunk sizes.
fn runs_of(bytes: &[u8]) -> Vec<u8> {
    let mut runs: Vec<u8> = bytes
        .iter()
        .filter(|&&b| b != 0xff)
        .flat_map(|&b| [b, 0])
        .collect();
    runs.extend_from_slice(&[b'\n', 0, 0xff, 1, 40]);
    runs
}

/// The configuration example of the README (its ```toml block).
fn readme_config(root: &Path) -> Result<String> {
    let readme = fs::read_to_string(root.join("README.md"))?;
    let start = readme
        .find("```toml\n")
        .context("README.md has no ```toml block")?
        + "```toml\n".len();
    let end = readme[start..]
        .find("```")
        .context("README.md's ```toml block does not end")?;
    Ok(readme[start..start + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long each target runs in the test suite.
    const SMOKE_SECONDS: u64 = 6;

    /// Part of `cargo xtask test`: every target, briefly.
    #[test]
    fn every_fuzz_target_runs_clean_for_a_while() {
        run(&[], SMOKE_SECONDS, Build::Quick)
            .expect("a fuzz target failed; see its artifact under target/fuzz/artifacts/");
    }
}
