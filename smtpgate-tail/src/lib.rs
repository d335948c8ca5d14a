//! Follows mail log files by name, like `tail -F`, but without losing or
//! repeating a line.
//!
//! A [`Follower`] reads every line appended to a file and keeps reading
//! across rotation: rename and re-create, copytruncate, truncation in place,
//! and delete and re-create. It wakes on inotify within milliseconds of a
//! write, with a once-a-second look as a safety net.
//!
//! How a new file is recognised, on every wake-up:
//! - another inode at the followed name: the file was moved away or deleted
//!   and replaced. The old file is read to its end through the descriptor
//!   still open on it, then the new one from its start.
//! - the same inode, but shorter than our offset or starting with other
//!   bytes (its [`Fingerprint`]): it was truncated, and maybe refilled. If
//!   copytruncate left a copy under the rotated name (`path.1`,
//!   `path-YYYYMMDD`) the rest is read from the copy first; then the file
//!   is read again from its start.
//! - no file at the name: the old one is followed until a new one appears;
//!   before the first one exists, the follower simply waits.
//!
//! A file that rotation ended with half a line has that half handed out as
//! a line. What no follower can recover is what rotation destroys before it
//! is read: lines written between copytruncate's copy and its truncation,
//! and unread lines a truncation in place throws away.
//!
//! Each line comes with the [`Position`] just past it. The agent persists it
//! once the line is acted upon and resumes from it after a restart
//! ([`StartAt::Resume`]), which then reads the rest of a file that was rotated
//! meanwhile before the new one. A crash can thus repeat lines handed out
//! after the last save, but never skip one.
//!
//! ```no_run
//! use smtpgate_tail::{Follower, StartAt};
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut imap = Follower::open("/var/log/dovecot/imap.log", StartAt::Beginning).await?;
//! let mut pop3 = Follower::open("/var/log/dovecot/pop3.log", StartAt::Beginning).await?;
//! loop {
//!     // `next_line` is cancel-safe, so the losing branch loses nothing.
//!     let line = tokio::select! {
//!         line = imap.next_line() => line?,
//!         line = pop3.next_line() => line?,
//!     };
//!     // Act on line.bytes, then persist line.position.
//! }
//! # }
//! ```

mod dir;
mod lines;
mod position;
mod reader;
mod rotated;
mod source;
mod watch;

use std::io;
use std::path::{Path, PathBuf};

pub use lines::{Line, ReadLine, ReadLines, MAX_LINE_LEN};
pub use position::{Fingerprint, Position};

use position::FileId;
use reader::Reader;
use source::Source;
use watch::Watch;

/// Where a new [`Follower`] starts reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// At the start of the current file: nothing already logged is missed.
    Beginning,
    /// After the last complete line of the current file: only what is
    /// logged from now on (a line being written right now included).
    End,
    /// Where a previous follower of the same path stopped.
    Resume(Position),
}

/// Follows one log file by name. See the crate documentation.
pub struct Follower {
    /// The file being read; `None` until the first one exists.
    source: Option<Source>,
    reader: Reader,
    watch: Watch,
}

impl Follower {
    /// Starts following `path`, which need not exist yet.
    ///
    /// Must be called within a Tokio runtime with I/O and time enabled.
    /// Fails if `path` names no file (`/`, `..`), if inotify is unavailable,
    /// if the file exists but cannot be read, or if a position to resume
    /// belongs to another path.
    pub async fn open(path: impl Into<PathBuf>, start: StartAt) -> io::Result<Follower> {
        let path = path.into();
        let mut watch = Watch::new(&path)?;
        let source = match &start {
            StartAt::Beginning => Source::open(&path, 0)?,
            StartAt::End => Source::open_at_end(&path)?,
            StartAt::Resume(saved) => resume(&path, saved)?,
        };
        if let Some(source) = &source {
            watch.follow(source.file());
        }
        Ok(Follower {
            source,
            reader: Reader::new(path),
            watch,
        })
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        self.reader.path()
    }

    /// Waits for the next complete line.
    ///
    /// Cancel-safe: if the future is dropped before it completes (say, in a
    /// `tokio::select!` branch that lost), no line is lost and none is
    /// skipped; the next call delivers it. All state changes happen between
    /// the future's await points, and a line leaves the follower only in the
    /// same step that returns it.
    ///
    /// An I/O error leaves the follower consistent; calling again retries.
    pub async fn next_line(&mut self) -> io::Result<Line> {
        // A long backlog is read without ever waiting on the file; this
        // yields to other tasks now and then meanwhile.
        tokio::task::coop::consume_budget().await;
        loop {
            if let Some(line) = self.reader.pop() {
                return Ok(line);
            }
            while !self.reader.has_lines() && self.step()? {}
            if !self.reader.has_lines() {
                self.watch.changed().await?;
            }
        }
    }

    /// Position after the last line handed out: what to save, and what
    /// [`StartAt::Resume`] takes back.
    pub fn position(&self) -> Position {
        self.reader.position(self.source.as_ref())
    }

    /// Takes one step of reading or of switching files; returns whether it
    /// got anywhere.
    fn step(&mut self) -> io::Result<bool> {
        let path = self.reader.path();
        let at_path = match std::fs::metadata(path) {
            Ok(meta) => Some(FileId::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let Some(source) = &mut self.source else {
            return match at_path {
                Some(_) => self.switch_to_path(),
                None => Ok(false),
            };
        };
        // Another file at our name: finish the old one, then switch. No file
        // at our name: keep following the old one until a new one appears.
        let replaced = at_path.is_some_and(|id| id != source.id());
        if !replaced && !source.refresh()? {
            // Truncated. If copytruncate left a copy under the rotated name,
            // its bytes continue the ones already read: read the rest there,
            // and a later step comes back to the truncated file as a
            // replacement. Otherwise the unread rest is gone: start over.
            let read_so_far = source.position(path, source.offset());
            match rotated::find(path, &read_so_far) {
                Some(copy) => {
                    self.watch.follow(copy.file());
                    *source = copy;
                }
                None => {
                    self.reader.finish(source);
                    source.rewind()?;
                }
            }
            return Ok(true);
        }
        if self.reader.read(source)? > 0 {
            return Ok(true);
        }
        if replaced {
            return self.switch_to_path();
        }
        Ok(false)
    }

    /// Moves on to the file now at the followed name, from its start; the
    /// current one, if any, has been read to its end. Returns false if the
    /// new file vanished before it could be opened.
    fn switch_to_path(&mut self) -> io::Result<bool> {
        let Some(next) = Source::open(self.reader.path(), 0)? else {
            return Ok(false);
        };
        if let Some(done) = &self.source {
            self.reader.finish(done);
        }
        self.watch.follow(next.file());
        self.source = Some(next);
        Ok(true)
    }
}

/// Opens where `saved` left off: in the file at `path` if it is still the
/// same one; else in the rotated previous generation, whose rest is read
/// before the file now at `path`; else at the start of the file at `path`.
fn resume(path: &Path, saved: &Position) -> io::Result<Option<Source>> {
    if saved.path != path {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "position saved for {} cannot resume {}",
                saved.path.display(),
                path.display()
            ),
        ));
    }
    if let Some(source) = Source::open(path, saved.offset)? {
        if source.holds(saved)? {
            return Ok(Some(source));
        }
    }
    if let Some(previous) = rotated::find(path, saved) {
        return Ok(Some(previous));
    }
    Source::open(path, 0)
}
