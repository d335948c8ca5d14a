//! Picking up from a saved position after a restart.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;

use smtpgate_tail::{Follower, Position, StartAt};

use crate::{append, log_dir, next, next_text, numbered};

fn write_lines(path: &Path, range: std::ops::Range<usize>) {
    let text: String = range.map(|i| numbered(i) + "\n").collect();
    append(path, text.as_bytes());
}

/// Reads `count` lines from the start of `path`, then "crashes", returning
/// the position as the agent would have stored it.
async fn read_and_save(path: &Path, count: usize) -> String {
    let mut follower = Follower::open(path, StartAt::Beginning).await.unwrap();
    for i in 0..count {
        assert_eq!(next_text(&mut follower).await, numbered(i));
    }
    serde_json::to_string(&follower.position()).unwrap()
}

async fn resume(path: &Path, saved: &str) -> Follower {
    let position: Position = serde_json::from_str(saved).unwrap();
    Follower::open(path, StartAt::Resume(position))
        .await
        .unwrap()
}

async fn expect_lines(follower: &mut Follower, range: std::ops::Range<usize>) {
    for i in range {
        assert_eq!(next_text(follower).await, numbered(i));
    }
}

#[tokio::test]
async fn continues_exactly_after_appends() {
    let (_dir, path) = log_dir();
    write_lines(&path, 0..5);
    let saved = read_and_save(&path, 3).await;
    write_lines(&path, 5..7);
    let mut follower = resume(&path, &saved).await;
    expect_lines(&mut follower, 3..7).await;
}

#[tokio::test]
async fn reads_rest_of_renamed_file_first() {
    for rotated_name in ["mail.log.1", "mail.log-20240501"] {
        let (dir, path) = log_dir();
        write_lines(&path, 0..5);
        let saved = read_and_save(&path, 3).await;
        fs::rename(&path, dir.path().join(rotated_name)).unwrap();
        write_lines(&path, 5..8);
        let mut follower = resume(&path, &saved).await;
        expect_lines(&mut follower, 3..8).await;
        // And goes on following the new file.
        write_lines(&path, 8..9);
        expect_lines(&mut follower, 8..9).await;
    }
}

#[tokio::test]
async fn reads_rest_of_copytruncated_file_from_the_copy() {
    let (dir, path) = log_dir();
    write_lines(&path, 0..5);
    let saved = read_and_save(&path, 3).await;
    fs::copy(&path, dir.path().join("mail.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    write_lines(&path, 5..8);
    let mut follower = resume(&path, &saved).await;
    expect_lines(&mut follower, 3..8).await;
}

#[tokio::test]
async fn starts_over_when_saved_file_is_gone() {
    let (_dir, path) = log_dir();
    write_lines(&path, 0..5);
    let saved = read_and_save(&path, 3).await;
    fs::remove_file(&path).unwrap();
    write_lines(&path, 10..12);
    let mut follower = resume(&path, &saved).await;
    expect_lines(&mut follower, 10..12).await;
}

#[tokio::test]
async fn waits_when_no_file_is_left() {
    let (_dir, path) = log_dir();
    write_lines(&path, 0..5);
    let saved = read_and_save(&path, 5).await;
    fs::remove_file(&path).unwrap();
    let mut follower = resume(&path, &saved).await;
    append(&path, b"fresh\n");
    assert_eq!(next(&mut follower).await.bytes, b"fresh");
}

#[tokio::test]
async fn position_of_another_path_is_refused() {
    let (dir, path) = log_dir();
    write_lines(&path, 0..1);
    let saved: Position = serde_json::from_str(&read_and_save(&path, 1).await).unwrap();
    let other = dir.path().join("other.log");
    let refused = Follower::open(&other, StartAt::Resume(saved)).await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidInput)
    );
}
