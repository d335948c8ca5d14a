//! Follows real files in a temporary directory through real rotations.

mod lines;
mod resume;
mod rotation;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use smtpgate_tail::{Follower, Line};
use tempfile::TempDir;
use tokio::time::timeout;

/// A generous bound for anything that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh directory and the path of a log file in it, not yet created.
fn log_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mail.log");
    (dir, path)
}

/// A log line that differs from its neighbours in its first bytes, as
/// timestamped log lines do.
fn numbered(i: usize) -> String {
    format!(
        "{i:06} dovecot: imap-login: Login: user=<user{i}>, rip=192.0.2.{}",
        i % 250
    )
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .expect("append to log");
}

async fn next(follower: &mut Follower) -> Line {
    timeout(PATIENCE, follower.next_line())
        .await
        .expect("timed out waiting for a line")
        .expect("reading the log")
}

async fn next_text(follower: &mut Follower) -> String {
    String::from_utf8(next(follower).await.bytes).expect("UTF-8 line")
}

/// No line arrives for a while. Dropping the pending `next_line` also
/// exercises its cancel safety.
async fn assert_quiet(follower: &mut Follower) {
    if let Ok(line) = timeout(Duration::from_millis(300), follower.next_line()).await {
        panic!("unexpected line: {line:?}");
    }
}

#[tokio::test]
async fn follower_moves_into_a_spawned_task() {
    let (_dir, path) = log_dir();
    append(&path, b"spawned\n");
    let mut follower = Follower::open(&path, smtpgate_tail::StartAt::Beginning)
        .await
        .unwrap();
    let line = tokio::spawn(async move { next(&mut follower).await })
        .await
        .unwrap();
    assert_eq!(line.bytes, b"spawned");
}
