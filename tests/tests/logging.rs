//! The agent's log lines as an operator's tools see them: no colour codes
//! in a pipe or a file, and under systemd a syslog priority the journal
//! understands instead of a time stamp it adds itself.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{smtpgate_bin, Lab, Scratch};

/// Runs the agent on the lab with stderr in `log` (and `env`), until its
/// log says the gate runs; returns the lines.
fn agent_lines(lab: &Lab, log: &std::path::Path, env: &[(&str, String)]) -> Result<Vec<String>> {
    let mut agent: Child = lab
        .server
        .command(smtpgate_bin())
        .args(["run", "--iface", &lab.server_iface, "--bpffs-dir"])
        .arg(lab.bpffs.pin_dir())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        .spawn()
        .context("starting smtpgate run")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(log)?;
        if text.contains("gate running") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait()?;
    ensure!(
        text.contains("gate running"),
        "the agent did not come up: {text}"
    );
    Ok(text.lines().map(str::to_string).collect())
}

#[test]
fn a_file_gets_plain_lines_with_time_stamps() -> Result<()> {
    let (lab, scratch) = (Lab::new()?, Scratch::new()?);
    let lines = agent_lines(&lab, &scratch.path("agent.log"), &[])?;
    ensure!(
        !lines.iter().any(|l| l.contains('\x1b')),
        "colour codes in a file: {lines:?}"
    );
    let first = lines.first().context("no line")?;
    ensure!(
        first.starts_with("20") && first.contains(" INFO "),
        "no time stamp and level: {first}"
    );
    Ok(())
}

#[test]
fn the_journal_stream_gets_syslog_priorities_and_no_time_stamps() -> Result<()> {
    let (lab, scratch) = (Lab::new()?, Scratch::new()?);
    let log = scratch.path("journal-stream");
    File::create(&log)?;
    // What systemd sets for a unit whose stderr is the journal.
    let meta = std::fs::metadata(&log)?;
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let lines = agent_lines(&lab, &log, &[("JOURNAL_STREAM", stream)])?;
    ensure!(
        !lines.iter().any(|l| l.contains('\x1b')),
        "colour codes for the journal: {lines:?}"
    );
    ensure!(
        lines.iter().all(|l| l.starts_with("<6> INFO ")
            || l.starts_with("<4> WARN ")
            || l.starts_with("<3>ERROR ")),
        "lines without a priority prefix: {lines:?}"
    );
    ensure!(
        lines.iter().any(|l| l.starts_with("<6> INFO gate running")),
        "{lines:?}"
    );
    // A JOURNAL_STREAM that is not stderr (inherited, then redirected) is ignored.
    let other = agent_lines(
        &lab,
        &scratch.path("redirected"),
        &[("JOURNAL_STREAM", "1:1".into())],
    )?;
    ensure!(
        other.iter().all(|l| !l.starts_with('<')),
        "a stale JOURNAL_STREAM was believed: {other:?}"
    );
    Ok(())
}
