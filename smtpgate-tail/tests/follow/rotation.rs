//! Every line exactly once and in order while a writer rotates the log
//! under the follower's feet.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use smtpgate_tail::{Follower, StartAt};
use tokio::time::timeout;

use crate::{assert_quiet, log_dir, numbered, PATIENCE};

const LINES: usize = 200;
const ROTATE_EVERY: usize = 40;

/// A mail server writing numbered lines, as a blocking thread does.
struct Writer {
    path: PathBuf,
    file: File,
    written: usize,
    /// How many lines the follower has handed out so far.
    received: Arc<AtomicUsize>,
}

impl Writer {
    fn new(path: &Path, received: Arc<AtomicUsize>) -> Writer {
        Writer {
            path: path.to_path_buf(),
            file: open_append(path),
            written: 0,
            received,
        }
    }

    /// Writes the next line; every third one in two pieces with a pause
    /// between, so the follower sees half a line.
    fn line(&mut self) {
        let line = format!("{}\n", numbered(self.written));
        let pieces: Vec<&[u8]> = if self.written % 3 == 0 {
            let (head, tail) = line.as_bytes().split_at(line.len() / 2);
            vec![head, tail]
        } else {
            vec![line.as_bytes()]
        };
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                thread::sleep(Duration::from_millis(3));
            }
            self.file.write_all(piece).expect("write log");
        }
        self.written += 1;
    }

    /// Writes the next few lines at once, as a busy server does, so the
    /// follower is likely behind when the rotation that follows strikes.
    fn burst(&mut self) {
        let text: String = (self.written..self.written + 5)
            .map(|i| numbered(i) + "\n")
            .collect();
        self.file.write_all(text.as_bytes()).expect("write log");
        self.written += 5;
    }

    /// Reopens the log by name, as a server does when told to after
    /// rotation.
    fn reopen(&mut self) {
        self.file = open_append(&self.path);
    }

    fn rotated(&self, generation: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{generation}"));
        PathBuf::from(name)
    }

    /// Moves the previous rotated generation out of the way, as logrotate
    /// does before rotating.
    fn shift(&self) {
        if self.rotated(1).exists() {
            fs::rename(self.rotated(1), self.rotated(2)).expect("shift rotated log");
        }
    }

    /// Waits until the follower has handed out everything written, for
    /// rotations that destroy what was not yet read.
    fn wait_until_read(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.received.load(Ordering::SeqCst) < self.written {
            assert!(
                Instant::now() < deadline,
                "follower stalled at {:?}",
                self.received
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn truncate(&self) {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|file| file.set_len(0))
            .expect("truncate log");
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for writing")
}

/// Runs a writer that calls `rotate` every [`ROTATE_EVERY`] lines against a
/// follower, and checks the follower saw every line once, in order.
async fn follow_through(rotate: fn(&mut Writer)) {
    let (_dir, path) = log_dir();
    let received = Arc::new(AtomicUsize::new(0));
    let mut writer = Writer::new(&path, Arc::clone(&received));
    let mut follower = Follower::open(&path, StartAt::Beginning)
        .await
        .expect("open follower");

    let writing = thread::spawn(move || {
        while writer.written < LINES {
            if writer.written > 0 && writer.written % ROTATE_EVERY == 0 {
                rotate(&mut writer);
            }
            writer.line();
            thread::sleep(Duration::from_millis(1));
        }
    });

    // Until the last line, so a lost line shows in the comparison below
    // rather than as a time-out.
    let last = numbered(LINES - 1);
    let mut got = Vec::with_capacity(LINES);
    let reading = timeout(PATIENCE * 3, async {
        while got.last() != Some(&last) {
            let line = follower.next_line().await.expect("reading the log");
            received.fetch_add(1, Ordering::SeqCst);
            got.push(String::from_utf8(line.bytes).expect("UTF-8 line"));
        }
    })
    .await;
    assert!(
        reading.is_ok(),
        "timed out following the log after {} lines",
        got.len()
    );
    writing.join().expect("writer failed");

    assert_eq!(got, (0..LINES).map(numbered).collect::<Vec<_>>());
    assert_quiet(&mut follower).await;

    // Everything was handed out, so the position is the end of the live file.
    let position = follower.position();
    let meta = fs::metadata(&path).expect("stat log");
    assert_eq!(position.inode, std::os::unix::fs::MetadataExt::ino(&meta));
    assert_eq!(position.offset, meta.len());
}

#[tokio::test]
async fn rename_and_create() {
    follow_through(|writer| {
        writer.burst();
        writer.shift();
        fs::rename(&writer.path, writer.rotated(1)).expect("rotate log");
        // The server keeps writing to the moved file until it reopens the log,
        // right up to the moment it does.
        writer.line();
        thread::sleep(Duration::from_millis(5));
        writer.burst();
        writer.reopen();
    })
    .await;
}

#[tokio::test]
async fn copytruncate() {
    follow_through(|writer| {
        writer.burst();
        writer.shift();
        fs::copy(&writer.path, writer.rotated(1)).expect("copy log");
        writer.truncate();
    })
    .await;
}

#[tokio::test]
async fn truncate_in_place() {
    follow_through(|writer| {
        // Truncation destroys what was not yet read: no follower can get it.
        writer.wait_until_read();
        writer.truncate();
    })
    .await;
}

#[tokio::test]
async fn delete_and_recreate() {
    follow_through(|writer| {
        writer.burst();
        fs::remove_file(&writer.path).expect("delete log");
        // Still written through the open descriptor while no file has the
        // name, right up to the moment the server reopens the log.
        writer.line();
        thread::sleep(Duration::from_millis(5));
        writer.burst();
        writer.reopen();
    })
    .await;
}
