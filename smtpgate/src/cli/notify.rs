//! `smtpgate notify`: the client side of `--listen-unix`, one report per call.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use smtpgate_logins::Report;

/// Sends one report and waits for the agent's answer. The report is checked
/// here as the agent checks it, so a mistake is named without a round trip.
pub fn notify(socket: &Path, ip: &str, service: &str, user: Option<&str>) -> Result<()> {
    let one_word = |text: &str| text.split_ascii_whitespace().count() == 1;
    if !one_word(service) || !user.is_none_or(one_word) {
        bail!("service and user must be single words");
    }
    let fields = [Some(ip), Some(service), user]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let line = Report::parse(&fields)?
        .to_line()
        .context("the report is longer than the agent reads")?;
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `smtpgate run --listen-unix` running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(line.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the agent's reply")?;
    let reply = reply.trim();
    match reply.strip_prefix("error: ") {
        Some(message) => bail!("the agent refused the report: {message}"),
        None if reply.starts_with("ok ") => Ok(()),
        None => bail!("unexpected reply from the agent: '{reply}'"),
    }
}
