//! Where a followed path lives.

use std::ffi::OsStr;
use std::path::Path;

/// The directory holding `path` and the file's name in it; `.` for a bare
/// name. `None` if `path` names no file, as `/` or `..` do.
pub(crate) fn dir_and_name(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some((dir, name))
}
