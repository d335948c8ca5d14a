//! `--listen-unix`: a direct feed of logins with no log in between.
//!
//! A Dovecot post-login script (see the README) runs `smtpgate notify` as the
//! mail user, which writes one line `IP SERVICE [USER]` to this socket. Who
//! may report is decided by the socket file's owner, group and mode; the
//! reporting process's uid is logged with each grant.

use std::{ffi::CString, os::unix::fs::PermissionsExt, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use smtpgate_logins::Service;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::Watch;
use crate::{addr, settings::SocketSettings};

/// A report is one short line; anything longer is refused.
const MAX_REPORT: usize = 512;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn bind(settings: &SocketSettings) -> Result<UnixListener> {
    let path = &settings.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by an earlier run is replaced; any other file is not.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    if let Some(group) = &settings.group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid)).with_context(|| format!("chgrp {group} {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.mode))
        .with_context(|| format!("chmod {:o} {}", settings.mode, path.display()))?;
    tracing::info!("accepting login reports on {} (mode {:04o})", path.display(), settings.mode);
    Ok(listener)
}

fn group_id(name: &str) -> Result<u32> {
    let c_name = CString::new(name.as_bytes())?;
    // SAFETY: valid C string; the result is read before any other call.
    let entry = unsafe { libc::getgrnam(c_name.as_ptr()) };
    if entry.is_null() {
        bail!("no group named '{name}'");
    }
    Ok(unsafe { (*entry).gr_gid })
}

pub async fn serve(watch: Arc<Watch>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let watch = watch.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(CLIENT_TIMEOUT, answer(&watch, stream)).await.is_err() {
                        tracing::debug!("login report timed out");
                    }
                });
            }
            Err(e) => tracing::warn!("login socket: {e}"),
        }
    }
}

async fn answer(watch: &Watch, stream: UnixStream) -> Result<()> {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REPORT as u64 + 1));
    let mut line = String::new();
    while reader.read_line(&mut line).await? > 0 {
        let reply = match report(watch, line.trim_end_matches(['\r', '\n']), uid) {
            Ok(reply) => reply,
            Err(e) => format!("error: {e:#}"),
        };
        write.write_all(format!("{reply}\n").as_bytes()).await?;
        line.clear();
    }
    Ok(())
}

/// Grants the login in one report line: `IP SERVICE [USER]`.
fn report(watch: &Watch, line: &str, uid: Option<u32>) -> Result<String> {
    if line.len() > MAX_REPORT {
        bail!("report longer than {MAX_REPORT} bytes");
    }
    let mut fields = line.split_whitespace();
    let (Some(ip), Some(service)) = (fields.next(), fields.next()) else {
        bail!("expected 'IP SERVICE [USER]'");
    };
    let ip = addr::parse(ip)?;
    let service: Service = service.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !watch.services.contains(&service) {
        bail!("{service} logins do not grant here");
    }
    let user = fields.next().unwrap_or("");
    tracing::debug!(%ip, ?uid, "login report");
    let left = watch.grant(ip, service, user, watch.ttl, "socket")?;
    Ok(format!("ok {ip} {}", left.as_secs()))
}
