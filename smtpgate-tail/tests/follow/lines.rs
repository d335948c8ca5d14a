//! What counts as a line, where following starts, and how fast lines come.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use smtpgate_tail::{Follower, StartAt, MAX_LINE_LEN};
use tokio::time::timeout;

use crate::{append, assert_quiet, log_dir, next, next_text, numbered, PATIENCE};

#[tokio::test]
async fn partial_line_is_held_until_its_newline() {
    let (_dir, path) = log_dir();
    append(&path, b"first\nsec");
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_eq!(next_text(&mut follower).await, "first");
    assert_quiet(&mut follower).await;
    append(&path, b"ond");
    assert_quiet(&mut follower).await;
    append(&path, b"\n");
    assert_eq!(next_text(&mut follower).await, "second");
}

#[tokio::test]
async fn line_endings_are_stripped() {
    let (_dir, path) = log_dir();
    append(&path, b"dos\r\nunix\n\nmid\rdle\n");
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    for expected in ["dos", "unix", "", "mid\rdle"] {
        assert_eq!(next_text(&mut follower).await, expected);
    }
}

#[tokio::test]
async fn invalid_utf8_passes_through() {
    let (_dir, path) = log_dir();
    let raw = b"user=<\xff\xfe\xc3(>";
    append(&path, &[raw.as_slice(), b"\n"].concat());
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_eq!(next(&mut follower).await.bytes, raw);
}

#[tokio::test]
async fn over_long_line_is_cut() {
    let (_dir, path) = log_dir();
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    // Written in pieces while the follower reads, several times the cap.
    for _ in 0..3 {
        append(&path, &vec![b'x'; MAX_LINE_LEN]);
        assert_quiet(&mut follower).await;
    }
    append(&path, b"tail of the long line\nnext\n");
    let long = next(&mut follower).await;
    assert_eq!(long.bytes, vec![b'x'; MAX_LINE_LEN]);
    assert!(long.cut, "a cut line says so");
    assert_eq!(long.position.offset as usize, 3 * MAX_LINE_LEN + 22);
    let next_line = next(&mut follower).await;
    assert_eq!(next_line.bytes, b"next");
    assert!(!next_line.cut);
    assert_eq!(
        next_line.position.offset,
        fs::metadata(&path).unwrap().len()
    );
}

#[tokio::test]
async fn position_advances_only_with_lines_handed_out() {
    let (_dir, path) = log_dir();
    append(&path, b"one\ntwo\nthree\n");
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_eq!(follower.position().offset, 0);
    let one = next(&mut follower).await;
    // All three lines were read, but only the first one was handed out.
    assert_eq!(one.position.offset, 4);
    assert_eq!(follower.position(), one.position);
    assert_eq!(next(&mut follower).await.position.offset, 8);
    assert_eq!(next(&mut follower).await.position.offset, 14);
    assert_eq!(follower.position().offset, 14);
}

#[tokio::test]
async fn start_at_end_skips_what_is_logged() {
    let (_dir, path) = log_dir();
    append(&path, b"old\nolder\npart");
    let mut follower = Follower::open(&path, StartAt::End).await.unwrap();
    assert_eq!(follower.position().offset, 10);
    append(&path, b"ial\nnew\n");
    // The line being written when following started comes whole.
    assert_eq!(next_text(&mut follower).await, "partial");
    assert_eq!(next_text(&mut follower).await, "new");
}

#[tokio::test]
async fn waits_for_a_file_that_does_not_exist_yet() {
    let (_dir, path) = log_dir();
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_quiet(&mut follower).await;
    append(&path, b"born\n");
    assert_eq!(next_text(&mut follower).await, "born");
}

#[tokio::test]
async fn waits_for_a_directory_that_does_not_exist_yet() {
    let (dir, _) = log_dir();
    let path = dir.path().join("dovecot").join("mail.log");
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_quiet(&mut follower).await;
    fs::create_dir(path.parent().unwrap()).unwrap();
    append(&path, b"born\n");
    // Found by the periodic look, which also starts watching the directory.
    assert_eq!(next_text(&mut follower).await, "born");
    append(&path, b"watched\n");
    assert_eq!(next_text(&mut follower).await, "watched");
}

#[tokio::test]
async fn appended_line_arrives_promptly() {
    let (_dir, path) = log_dir();
    append(&path, b"");
    let mut follower = Follower::open(&path, StartAt::Beginning).await.unwrap();
    assert_quiet(&mut follower).await;
    let writer_path = path.clone();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        append(&writer_path, b"login\n");
        Instant::now()
    });
    let line = timeout(Duration::from_secs(2), follower.next_line())
        .await
        .expect("line not delivered within 2 s")
        .unwrap();
    let delay = writer.join().unwrap().elapsed();
    assert_eq!(line.bytes, b"login");
    eprintln!("delivered {delay:?} after the write");
}

#[tokio::test]
async fn select_over_followers_loses_nothing() {
    const LINES: usize = 100;
    let (dir, imap) = log_dir();
    let pop3 = dir.path().join("pop3.log");
    let mut imap_follower = Follower::open(&imap, StartAt::Beginning).await.unwrap();
    let mut pop3_follower = Follower::open(&pop3, StartAt::Beginning).await.unwrap();
    let paths = (imap.clone(), pop3.clone());
    let writer = thread::spawn(move || {
        for i in 0..LINES {
            append(&paths.0, format!("{}\n", numbered(i)).as_bytes());
            append(&paths.1, format!("{}\n", numbered(i)).as_bytes());
            thread::sleep(Duration::from_micros(500));
        }
    });
    let (mut from_imap, mut from_pop3) = (Vec::new(), Vec::new());
    timeout(PATIENCE, async {
        while from_imap.len() < LINES || from_pop3.len() < LINES {
            // The losing branch's future is dropped every time round.
            tokio::select! {
                line = imap_follower.next_line() => from_imap.push(line.unwrap().bytes),
                line = pop3_follower.next_line() => from_pop3.push(line.unwrap().bytes),
            }
        }
    })
    .await
    .expect("timed out following both logs");
    writer.join().unwrap();
    let expected: Vec<Vec<u8>> = (0..LINES).map(|i| numbered(i).into_bytes()).collect();
    assert_eq!(from_imap, expected);
    assert_eq!(from_pop3, expected);
}

#[tokio::test]
async fn path_naming_no_file_is_refused() {
    let refused = Follower::open("/", StartAt::Beginning).await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
}
