//! `smtpgate notify`: the client side of `--listen-unix`, one report per call.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::addr;

pub fn notify(socket: &Path, ip: &str, service: &str, user: Option<&str>) -> Result<()> {
    let ip = addr::parse(ip)?;
    if service.split_whitespace().count() != 1 || user.is_some_and(|u| u.split_whitespace().count() > 1 || u.is_empty()) {
        bail!("service and user must be single words");
    }
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {} (is `smtpgate run --listen-unix` running?)", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let line = match user {
        Some(user) => format!("{ip} {service} {user}\n"),
        None => format!("{ip} {service}\n"),
    };
    stream.write_all(line.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("reading the agent's reply")?;
    let reply = reply.trim();
    match reply.strip_prefix("error: ") {
        Some(message) => bail!("the agent refused the report: {message}"),
        None if reply.starts_with("ok ") => Ok(()),
        None => bail!("unexpected reply from the agent: '{reply}'"),
    }
}
