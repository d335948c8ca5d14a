//! One open log file and how far it has been read.
//!
//! Reads are plain positional reads on the open descriptor. Log files are
//! regular files served from the page cache, so a read returns at once; the
//! descriptor keeps a rotated or deleted file readable until we let go.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::lines::MAX_LINE_LEN;
use crate::position::{read_head, FileId, Fingerprint, Position};

#[derive(Debug)]
pub(crate) struct Source {
    file: File,
    id: FileId,
    /// Next byte to read.
    offset: u64,
    fingerprint: Fingerprint,
}

impl Source {
    /// Opens `path` to be read from `offset`; `None` if there is no such file.
    pub fn open(path: &Path, offset: u64) -> io::Result<Option<Source>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = FileId::of(&file.metadata()?);
        let fingerprint = Fingerprint::of(&read_head(&file)?);
        Ok(Some(Source {
            file,
            id,
            offset,
            fingerprint,
        }))
    }

    /// Opens `path` just past its last complete line, so a line being
    /// written right now is delivered whole rather than as a fragment.
    pub fn open_at_end(path: &Path) -> io::Result<Option<Source>> {
        let Some(mut source) = Source::open(path, 0)? else {
            return Ok(None);
        };
        let size = source.file.metadata()?.len();
        let window = size.min(MAX_LINE_LEN as u64);
        let mut tail = vec![0; window as usize];
        source.file.read_exact_at(&mut tail, size - window)?;
        let after_newline = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        source.offset = size - window + after_newline as u64;
        Ok(Some(source))
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn id(&self) -> FileId {
        self.id
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Position at `offset` in this file, filed under the followed `path`.
    pub fn position(&self, path: &Path, offset: u64) -> Position {
        Position {
            path: path.to_path_buf(),
            dev: self.id.dev,
            inode: self.id.inode,
            offset,
            fingerprint: self.fingerprint,
        }
    }

    /// Reads what follows the offset into `buf` and moves past it; 0 at end
    /// of file.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, self.offset) {
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this file still holds the bytes we have read: it has not
    /// shrunk below our offset and still starts as it did. Grows the
    /// fingerprint as the file grows.
    pub fn refresh(&mut self) -> io::Result<bool> {
        if self.file.metadata()?.len() < self.offset {
            return Ok(false);
        }
        let head = read_head(&self.file)?;
        if !self.fingerprint.matches(&head) {
            return Ok(false);
        }
        self.fingerprint = Fingerprint::of(&head);
        Ok(true)
    }

    /// Starts over at the beginning: the file was truncated in place.
    pub fn rewind(&mut self) -> io::Result<()> {
        self.offset = 0;
        self.fingerprint = Fingerprint::of(&read_head(&self.file)?);
        Ok(())
    }

    /// Whether this file holds the bytes `saved` was taken in, at least up to
    /// its offset: the same file, or a copy of it. A saved position with an
    /// empty fingerprint can only be recognised by its inode.
    pub fn holds(&self, saved: &Position) -> io::Result<bool> {
        if self.id != saved.file_id() && saved.fingerprint.is_empty() {
            return Ok(false);
        }
        Ok(self.file.metadata()?.len() >= saved.offset
            && saved.fingerprint.matches(&read_head(&self.file)?))
    }
}
