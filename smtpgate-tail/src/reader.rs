//! Turning the bytes of the file being read into lines with positions.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use crate::lines::{Line, LineSplitter, MAX_LINE_LEN};
use crate::position::{Fingerprint, Position};
use crate::source::Source;

/// How much to read from a file at a time.
const CHUNK: usize = 64 * 1024;

/// Lines read but not yet handed out, and what is needed to say where the
/// caller stands. The lines may span a switch of files, so the reader does
/// not own the file; each call is given the one being read.
pub(crate) struct Reader {
    /// The followed name, which every position is filed under.
    path: PathBuf,
    splitter: LineSplitter,
    ready: VecDeque<Line>,
    /// Position after the last line handed out; meaningful while `ready` is
    /// not empty, when it can no longer be derived from the file.
    handed_out: Position,
    buf: Box<[u8]>,
}

impl Reader {
    pub fn new(path: PathBuf) -> Reader {
        Reader {
            handed_out: nowhere(&path),
            path,
            splitter: LineSplitter::new(MAX_LINE_LEN),
            ready: VecDeque::new(),
            buf: vec![0; CHUNK].into_boxed_slice(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn has_lines(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next line, which counts as handed out from now on.
    pub fn pop(&mut self) -> Option<Line> {
        let line = self.ready.pop_front()?;
        self.handed_out = line.position.clone();
        Some(line)
    }

    /// Position after the last line handed out, `source` being the file
    /// being read, if any.
    pub fn position(&self, source: Option<&Source>) -> Position {
        match source {
            Some(source) if self.ready.is_empty() => self.consumed(source),
            None if self.ready.is_empty() => nowhere(&self.path),
            _ => self.handed_out.clone(),
        }
    }

    /// Reads one chunk of `source` and queues the lines it completes;
    /// returns how many bytes it read, 0 at the end of the file.
    pub fn read(&mut self, source: &mut Source) -> io::Result<usize> {
        self.note_handed_out(source);
        let n = source.read(&mut self.buf)?;
        let chunk_start = source.offset() - n as u64;
        let (path, ready) = (&self.path, &mut self.ready);
        self.splitter.feed(&self.buf[..n], |bytes, cut, end| {
            ready.push_back(Line {
                bytes,
                cut,
                position: source.position(path, chunk_start + end as u64),
            });
        });
        Ok(n)
    }

    /// Queues the unterminated last line of `source`, if it has one: the
    /// file has ended for good, and no newline will come.
    pub fn finish(&mut self, source: &Source) {
        self.note_handed_out(source);
        if let Some((bytes, cut)) = self.splitter.finish() {
            self.ready.push_back(Line {
                bytes,
                cut,
                position: source.position(&self.path, source.offset()),
            });
        }
    }

    /// With nothing queued, everything read from `source` up to the
    /// unfinished line has been handed out; remember where that is before
    /// queueing more.
    fn note_handed_out(&mut self, source: &Source) {
        if self.ready.is_empty() {
            self.handed_out = self.consumed(source);
        }
    }

    /// Position after what was read from `source` that forms complete lines.
    fn consumed(&self, source: &Source) -> Position {
        source.position(&self.path, source.offset() - self.splitter.pending())
    }
}

/// Position before any file was seen.
fn nowhere(path: &Path) -> Position {
    Position {
        path: path.to_path_buf(),
        dev: 0,
        inode: 0,
        offset: 0,
        fingerprint: Fingerprint::default(),
    }
}
