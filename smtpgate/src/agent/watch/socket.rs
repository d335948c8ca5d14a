//! `--listen-unix`: a direct feed of logins with no log in between.
//!
//! A Dovecot post-login script (see the README) runs `smtpgate notify` as the
//! mail user, which writes one line `IP SERVICE [USER]` to this socket. Who
//! may report is decided by the socket file's owner, group and mode; the
//! reporting process's uid, which the kernel vouches for (`SO_PEERCRED`), is
//! logged with each grant.

use std::{os::unix::fs::PermissionsExt, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use smtpgate_logins::{Report, MAX_REPORT};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use super::Watch;
use crate::agent::{
    accept::AcceptErrors,
    privileges,
    settings::{SocketSettings, WatchSettings},
    unix_socket,
};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reporters served at once. A login hook's report takes a millisecond, so
/// this many at once is far beyond any burst of logins; a flood of idle
/// connections holds at most this many descriptors (for [`CLIENT_TIMEOUT`]),
/// and the rest wait in the socket's backlog, leaving the agent descriptors
/// for its logs and its state file.
const MAX_REPORTERS: usize = 64;

/// The login socket `settings` configure, bound; `None` without one.
pub fn bind_configured(settings: &WatchSettings) -> Result<Option<UnixListener>> {
    settings.socket.as_ref().map(bind).transpose()
}

fn bind(settings: &SocketSettings) -> Result<UnixListener> {
    let path = &settings.path;
    unix_socket::make_way(path)?;
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    if let Some(group) = &settings.group {
        let gid = privileges::group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {group} {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
        .with_context(|| format!("chmod {:o} {}", settings.mode, path.display()))?;
    tracing::info!(
        "accepting login reports on {} (mode {:04o})",
        path.display(),
        settings.mode
    );
    Ok(listener)
}

pub async fn serve(watch: Arc<Watch>, listener: UnixListener) {
    let reporters = Arc::new(Semaphore::new(MAX_REPORTERS));
    let mut errors = AcceptErrors::new("login socket");
    loop {
        let slot = reporters
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        match listener.accept().await {
            Ok((stream, _)) => {
                let watch = watch.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(CLIENT_TIMEOUT, answer(&watch, stream))
                        .await
                        .is_err()
                    {
                        tracing::debug!("login report timed out");
                    }
                    drop(slot);
                });
            }
            Err(e) => errors.failed(e).await,
        }
    }
}

/// Answers each report line of one connection with `ok IP SECONDS` or
/// `error: REASON`.
async fn answer(watch: &Watch, stream: UnixStream) -> Result<()> {
    // The kernel's word for who connected; without it nothing is granted.
    let uid = stream
        .peer_cred()
        .map(|c| c.uid())
        .context("reading the reporter's credentials")?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REPORT as u64 + 1));
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).await? > 0 {
        let reply = match report(watch, &line, uid) {
            Ok(reply) => reply,
            Err(e) => format!("error: {e:#}"),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
        line.clear();
    }
    Ok(())
}

/// Grants the login in one report line, `IP SERVICE [USER]`, reported by `uid`.
fn report(watch: &Watch, line: &[u8], uid: u32) -> Result<String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).context("the report is not UTF-8")?;
    let report = Report::parse(line)?;
    let left = watch.grant_report(&report, uid)?;
    Ok(format!("ok {} {}", report.ip, left.as_secs()))
}
