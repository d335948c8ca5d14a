//! `--journal`: logins from the systemd journal, for hosts where Dovecot
//! logs only there. Reads `journalctl --follow --output=json`, which keeps
//! the agent free of a libsystemd dependency and works with any journald.
//! Each entry's cursor is saved, so a restart resumes right after the last
//! entry read.
//!
//! journalctl follows the journal's files, not journald, so it reads on by
//! itself across a journald restart. What it does not tell is that nobody
//! writes the journal meanwhile: the agent looks at journald's socket and
//! says so once when it stops answering and once when it answers again.
//! (Where systemd holds the socket, as it does for journald under PID 1,
//! entries wait in it during a restart, and there is nothing to say.)

use std::{process::Stdio, sync::Arc, time::Duration};

use jiff::Timestamp;
use serde_json::Value;
use smtpgate_logins::Entry;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use super::Watch;

const RETRY: Duration = Duration::from_secs(2);
/// journald's socket for native entries.
const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

pub async fn follow(watch: Arc<Watch>, units: Vec<String>) {
    tokio::spawn(watch_journald());
    loop {
        if let Err(e) = follow_once(&watch, &units).await {
            tracing::warn!("journal: {e:#}; restarting journalctl");
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn follow_once(watch: &Watch, units: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new("journalctl");
    cmd.args(["--follow", "--output=json", "--all", "--no-pager"]);
    match watch.journal_cursor() {
        Some(cursor) => cmd.arg(format!("--after-cursor={cursor}")),
        // A first start reads back one TTL: those logins still grant.
        None => cmd.arg(format!(
            "--since=@{}",
            Timestamp::now().as_second() - watch.longest_ttl().as_secs() as i64
        )),
    };
    for unit in units {
        cmd.arg(format!("--unit={unit}"));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    tracing::info!("watching the journal for logins");
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        handle(watch, &entry);
        if let Some(cursor) = entry["__CURSOR"].as_str() {
            watch.record_journal_cursor(cursor.to_string());
        }
    }
    let status = child.wait().await?;
    anyhow::bail!("journalctl exited ({status})")
}

/// Says once when journald stops answering on its socket, and once when it
/// answers again; looks every [`RETRY`].
async fn watch_journald() {
    let mut answering = true;
    let mut look = tokio::time::interval(RETRY);
    loop {
        look.tick().await;
        // A datagram socket's connect reaches no further than the socket
        // file: it fails at once when nobody is bound there, and sends
        // nothing.
        let answers = std::os::unix::net::UnixDatagram::unbound()
            .and_then(|socket| socket.connect(JOURNALD_SOCKET))
            .is_ok();
        match (answering, answers) {
            (true, false) => tracing::warn!(
                "journald does not answer on {JOURNALD_SOCKET}: no logins reach the journal until it is back"
            ),
            (false, true) => {
                tracing::info!("journald answers again; its logins are read as they come")
            }
            _ => {}
        }
        answering = answers;
    }
}

/// Grants the login an entry records, judged by the same parser as log
/// lines, with the identifier, host and time stamp the journal keeps apart.
fn handle(watch: &Watch, entry: &Value) {
    let Some(message) = field_bytes(&entry["MESSAGE"]) else {
        return;
    };
    let micros = entry["_SOURCE_REALTIME_TIMESTAMP"]
        .as_str()
        .or(entry["__REALTIME_TIMESTAMP"].as_str())
        .and_then(|t| t.parse::<i64>().ok());
    let entry = Entry {
        identifier: entry["SYSLOG_IDENTIFIER"].as_str().unwrap_or_default(),
        message: &message,
        time: micros.and_then(|us| Timestamp::from_microsecond(us).ok()),
        host: entry["_HOSTNAME"].as_str(),
    };
    watch.handle_entry(&entry);
}

/// journalctl writes a field as a string, or as an array of byte values
/// when it is not valid UTF-8.
fn field_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(text) => Some(text.clone().into_bytes()),
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    }
}
