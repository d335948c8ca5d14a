//! Faults the agent must come through without opening the relay or locking
//! a customer out.

use std::{fs::OpenOptions, io::Write, os::unix::fs::PermissionsExt, path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{Family, Lab, Scratch, ANSWERED, SMTP};

fn login_line(user: &str, ip: &str) -> String {
    format!(
        "{} mailhost dovecot[811]: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=42, session=<F1>\n",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
}

fn append(path: &Path, text: &str) -> Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())?;
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The state directory turns unwritable (as a full disk or a read-only
/// remount would make it): logins keep granting, the problem is logged
/// once, and saving resumes when the directory is writable again.
#[test]
fn an_unwritable_state_directory_is_reported_once_and_grants_go_on() -> Result<()> {
    let scratch = Scratch::new()?;
    let (log, state) = (scratch.path("mail.log"), scratch.path("state"));
    std::fs::write(&log, "")?;
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    lab.start_agent(&[
        "--log",
        log.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
    ])?;
    // Without CAP_DAC_OVERRIDE the agent, root as it is, obeys the mode.
    chmod(&state, 0o500)?;
    for n in 1..=4 {
        append(&log, &login_line("lee", &format!("198.51.100.{n}")))?;
        std::thread::sleep(Duration::from_millis(700));
    }
    append(&log, &login_line("lee", smtpgate_tests::CLIENT_V4))?;
    ensure!(
        lab.agent_logged("cannot save read positions", Duration::from_secs(5)),
        "the failure was not logged"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("a login while the state could not be saved")?;
    let warnings = lab.agent_lines("cannot save read positions");
    ensure!(
        warnings == 1,
        "the failure was logged {warnings} times in 3 s, not once"
    );
    chmod(&state, 0o755)?;
    ensure!(
        lab.agent_logged("saving read positions again", Duration::from_secs(5)),
        "saving did not resume"
    );
    let saved = std::fs::read_to_string(state.join("state.json")).context("no state file")?;
    let length = std::fs::metadata(&log)?.len();
    ensure!(
        saved.contains(&length.to_string()),
        "the saved position is not the log's end ({length}): {saved}"
    );
    Ok(())
}
