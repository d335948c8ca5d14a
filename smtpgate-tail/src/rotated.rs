//! Finding the previous generation of a log under the name rotation gave it.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::position::Position;
use crate::source::Source;

/// Opens the file `saved` was taken in, at the saved offset, if rotation
/// left it under one of the usual names: moved there (same inode) or copied
/// there by copytruncate (same first bytes). A moved file is preferred, as
/// it identifies the file for certain.
///
/// A candidate that cannot be read is passed over with a warning: an
/// unreadable old log must not stop the follower from going on with the
/// current one.
pub(crate) fn find(path: &Path, saved: &Position) -> Option<Source> {
    let mut copy = None;
    for candidate in candidates(path) {
        let source = match open_holding(&candidate, saved) {
            Ok(Some(source)) => source,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(file = %candidate.display(), error = %e, "cannot check rotated log");
                continue;
            }
        };
        if source.id() == saved.file_id() {
            return Some(source);
        }
        copy.get_or_insert(source);
    }
    copy
}

/// Opens `candidate` at the saved offset if it holds the saved bytes.
fn open_holding(candidate: &Path, saved: &Position) -> io::Result<Option<Source>> {
    match Source::open(candidate, saved.offset)? {
        Some(source) if source.holds(saved)? => Ok(Some(source)),
        _ => Ok(None),
    }
}

/// The names logrotate gives the newest rotated generation of `path`:
/// `path.1` by default, `path-YYYYMMDD` (or a longer date) with `dateext`,
/// the latter newest first. Compressed generations cannot be read, so they
/// are not candidates; rotation setups that want a lossless follower keep the
/// newest generation uncompressed (`delaycompress`).
fn candidates(path: &Path) -> Vec<PathBuf> {
    let Some((dir, name)) = crate::dir::dir_and_name(path) else {
        return Vec::new();
    };
    let mut numbered = OsString::from(name);
    numbered.push(".1");
    let mut names = vec![dir.join(numbered)];

    let mut dated: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .filter(|entry| is_dated(name.as_encoded_bytes(), entry.as_encoded_bytes()))
            .map(|entry| dir.join(entry))
            .collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot list rotated logs");
            Vec::new()
        }
    };
    dated.sort_unstable_by(|a, b| b.cmp(a));
    names.append(&mut dated);
    names
}

/// Whether `entry` is `name` followed by `-` and a date of at least eight
/// digits (`-%Y%m%d`, or `-%Y%m%d%H` for hourly rotation).
fn is_dated(name: &[u8], entry: &[u8]) -> bool {
    entry
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(b"-"))
        .is_some_and(|date| date.len() >= 8 && date.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_dateext_names() {
        assert!(is_dated(b"mail.log", b"mail.log-20240501"));
        assert!(is_dated(b"mail.log", b"mail.log-2024050113"));
        assert!(!is_dated(b"mail.log", b"mail.log-20240501.gz"));
        assert!(!is_dated(b"mail.log", b"mail.log-2024"));
        assert!(!is_dated(b"mail.log", b"mail.log.1"));
        assert!(!is_dated(b"mail.log", b"mail.log"));
    }

    #[test]
    fn numbered_first_then_newest_date() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "mail.log-20240501",
            "mail.log-20240503",
            "mail.log-20240502.gz",
            "other-20240504",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let path = dir.path().join("mail.log");
        let names: Vec<_> = candidates(&path)
            .into_iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["mail.log.1", "mail.log-20240503", "mail.log-20240501"]
        );
    }
}
