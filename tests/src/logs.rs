//! Mail-log lines the agent's tests feed it, and the appending of them.

use std::{fs::OpenOptions, io::Write, path::Path};

use anyhow::Result;

/// A Dovecot 2.3 POP3 login of `user` from `ip`, as rsyslog writes it now
/// (ISO time stamp), with its line feed.
pub fn dovecot_login(user: &str, ip: &str) -> String {
    format!(
        "{} mailhost dovecot[811]: pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=4242, session=<Zx1>\n",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
}

/// Appends `text` to the log at `path`, creating it if needed.
pub fn append(path: &Path, text: &str) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())?;
    Ok(())
}
