//! Where a follower stands, in a form the agent can persist and hand back.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A point in a followed log, just after the last line handed out.
///
/// `path` is the name being followed, even when the bytes came from a file
/// that rotation has since moved (`dev`/`inode` say which file that was), so
/// the agent can key saved positions by the name it configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub path: PathBuf,
    pub dev: u64,
    pub inode: u64,
    /// Byte offset of the first byte not yet handed out.
    pub offset: u64,
    pub fingerprint: Fingerprint,
}

impl Position {
    pub(crate) fn file_id(&self) -> FileId {
        FileId {
            dev: self.dev,
            inode: self.inode,
        }
    }
}

/// Which file on disk: inode numbers are only unique per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub dev: u64,
    pub inode: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }
}

/// A hash of a file's first bytes.
///
/// The inode alone cannot tell a file that was truncated and refilled
/// (copytruncate) from the one we were reading, nor find the copy that
/// copytruncate left behind; the first bytes of a log (its first timestamped
/// line) can. A young file is fingerprinted over what it has so far, and the
/// fingerprint grows with the file up to [`Fingerprint::MAX_LEN`] bytes.
///
/// The hash is 64-bit FNV-1a: stable across builds and Rust versions, which a
/// persisted value needs and `std`'s hashers do not promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many leading bytes were hashed.
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    /// Enough to cover a log's first line or several.
    pub(crate) const MAX_LEN: usize = 1024;

    /// Fingerprint of a file whose first bytes are `head`.
    pub(crate) fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(Self::MAX_LEN)];
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = head
            .iter()
            .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
        Fingerprint {
            // MAX_LEN fits comfortably in u32.
            len: head.len() as u32,
            hash,
        }
    }

    /// Whether a file starting with `head` starts with the bytes this
    /// fingerprint was taken over.
    pub(crate) fn matches(&self, head: &[u8]) -> bool {
        let len = self.len as usize;
        head.len() >= len && Fingerprint::of(&head[..len]) == *self
    }

    /// An empty fingerprint matches every file, so it identifies nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Reads up to [`Fingerprint::MAX_LEN`] leading bytes of `file`.
pub(crate) fn read_head(file: &File) -> io::Result<Vec<u8>> {
    let mut head = vec![0; Fingerprint::MAX_LEN];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(filled);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_its_prefix_and_longer_files() {
        let fp = Fingerprint::of(b"2024-05-01 imap-login: Login");
        assert!(fp.matches(b"2024-05-01 imap-login: Login"));
        assert!(fp.matches(b"2024-05-01 imap-login: Login: user=<a>\n"));
        assert!(!fp.matches(b"2024-05-01 imap-login"));
        assert!(!fp.matches(b"2024-05-02 imap-login: Login"));
    }

    #[test]
    fn fingerprint_is_capped() {
        let long = vec![b'x'; Fingerprint::MAX_LEN * 2];
        let fp = Fingerprint::of(&long);
        assert_eq!(fp.len as usize, Fingerprint::MAX_LEN);
        assert_eq!(fp, Fingerprint::of(&long[..Fingerprint::MAX_LEN]));
    }

    #[test]
    fn empty_fingerprint_matches_anything() {
        let fp = Fingerprint::of(b"");
        assert!(fp.is_empty());
        assert!(fp.matches(b"whatever"));
    }

    #[test]
    fn hash_is_stable() {
        // Persisted positions depend on this value never changing.
        assert_eq!(Fingerprint::of(b"a").hash, 0xaf63_dc4c_8601_ec8c);
    }
}
