//! The Unix sockets the agent listens on (login reports, policy requests).

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Makes way for a Unix socket at `path`: creates its directory, and
/// removes a socket an earlier run left there. Any other file at `path`
/// is an error, never removed.
pub fn make_way(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    Ok(())
}
