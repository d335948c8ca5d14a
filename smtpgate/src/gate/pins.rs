//! The bpffs directory where smtpgate pins its maps and attachments.
//!
//! Pins are what let the gate outlive the agent: the kernel keeps a pinned
//! map or link alive with no process holding it, so a stopped or crashed
//! agent leaves the gate enforcing and every grant in place, and the next
//! `smtpgate run` picks them up again.

use std::{
    ffi::CString,
    io,
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapInfo, MapType};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP, OLDER_GRANT_MAPS, PINNED_MAPS, RETIRED_MAPS};

use crate::gate::options::Hook;

/// Where pins live unless `--bpffs-dir` says otherwise.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/smtpgate";
/// The conventional bpffs mount point, mounted by `run` when missing.
const SYSTEM_BPFFS: &str = "/sys/fs/bpf";
/// Mode of the pin directory: the agent's user (root, or a dedicated one)
/// and its group.
const PIN_DIR_MODE: u32 = 0o750;
/// `statfs` magic number of the BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug)]
pub struct PinDir {
    dir: PathBuf,
}

impl PinDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every pinned map.
    pub fn maps(&self) -> [PathBuf; PINNED_MAPS.len()] {
        PINNED_MAPS.map(|m| self.map(m))
    }

    /// The first pinned map whose pin is gone, judged by its path alone:
    /// the check of a running agent, which must not take a failure to
    /// open a pin (no descriptor left, say) for a removed gate.
    pub fn removed_map(&self) -> Option<PathBuf> {
        self.maps().into_iter().find(|path| {
            std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        })
    }

    /// Where older versions pinned maps this one no longer reads.
    pub fn retired_maps(&self) -> [PathBuf; RETIRED_MAPS.len()] {
        RETIRED_MAPS.map(|m| self.map(m))
    }

    /// An exclusive lock on the directory, held until the guard drops.
    /// Writers of state that changes in several steps (the allowlist and
    /// its filter) take it, so that two processes never interleave them.
    pub fn lock(&self) -> Result<DirLock> {
        let dir = std::fs::File::open(&self.dir)
            .with_context(|| format!("opening {}", self.dir.display()))?;
        // SAFETY: a valid fd, owned by `dir` for the lock's lifetime.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("locking {}", self.dir.display()));
        }
        Ok(DirLock { _dir: dir })
    }

    /// The pinned bpf_link of the program on `iface` through `hook`.
    pub fn link(&self, hook: Hook, iface: &str) -> PathBuf {
        self.dir.join(format!("link-{}-{iface}", hook.name()))
    }

    /// The gate's XDP program, pinned so that every process that writes a
    /// grant can replay the SYN refused before it (see `replay`), whichever
    /// hook the gate is attached through.
    pub fn program(&self) -> PathBuf {
        self.dir.join("prog-xdp")
    }

    /// Where the legacy (netlink) TC filter of `iface` is recorded. Netlink
    /// filters are not bpf_links and cannot be pinned; their priority and
    /// handle are kept here (as a symlink's target) so a later run can find
    /// and replace them.
    pub fn tc_netlink_record(&self, iface: &str) -> PathBuf {
        self.dir.join(format!("tc-netlink-{iface}"))
    }

    /// Every interface with a pinned attachment, with its hook.
    pub fn attachments(&self) -> Result<Vec<(Hook, String)>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            for (prefix, hook) in [
                ("link-xdp-", Hook::Xdp),
                ("link-tc-", Hook::Tc),
                ("tc-netlink-", Hook::Tc),
            ] {
                if let Some(iface) = name.strip_prefix(prefix) {
                    found.push((hook, iface.to_string()));
                }
            }
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        found.dedup();
        Ok(found)
    }

    /// Makes sure the directory exists on a bpffs, mounting the system bpffs
    /// at /sys/fs/bpf first if this host has none (fresh machines often
    /// don't), with mode 0750 and, if given, the group `group`.
    pub fn prepare(&self, group: Option<u32>) -> Result<()> {
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent)? {
            if parent == Path::new(SYSTEM_BPFFS) {
                mount_bpffs(parent)?;
            } else {
                bail!(
                    "{} is not on a BPF filesystem; mount one first (mount -t bpf bpf {})",
                    self.dir.display(),
                    parent.display()
                );
            }
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating pin directory {}", self.dir.display()))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&self.dir, None, Some(gid))
                .with_context(|| format!("chgrp {gid} {}", self.dir.display()))?;
        }
        // Whoever can open the pins can grant, revoke and detach: the
        // owner and the group only (and root).
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(PIN_DIR_MODE))
            .with_context(|| format!("restricting {}", self.dir.display()))
    }

    /// Fails with a clear message unless a gate of this version has been
    /// set up here. A gate an older version set up (still running, say,
    /// between a package upgrade and the agent's restart) keeps maps this
    /// version no longer writes: acting on it would, for one, grant
    /// without telling the old program's filter.
    pub fn require_gate(&self) -> Result<()> {
        if let Some(old) = self.retired_maps().iter().find(|path| path.exists()) {
            bail!(
                "the gate under {} was set up by an older smtpgate ({} is still pinned); restart `smtpgate run` \
                 with this version to upgrade it in place",
                self.dir.display(),
                old.display()
            );
        }
        let grants = self.map(GRANTS_MAP);
        if !grants.exists() {
            if let Some(newer) = self.unknown_grant_maps()?.first() {
                bail!(
                    "the gate under {} was set up by a newer smtpgate (it pins {newer}); use that version's commands",
                    self.dir.display()
                );
            }
            bail!(
                "no smtpgate gate under {}: nothing is attached yet (start it with `smtpgate run --iface IFACE`)",
                self.dir.display()
            );
        }
        require_grant_layout(&grants)
    }

    /// Pinned maps named like a grant map of a layout this version does
    /// not know.
    fn unknown_grant_maps(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut unknown = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with("GRANTS")
                && name != GRANTS_MAP
                && !OLDER_GRANT_MAPS.contains(&name.as_str())
            {
                unknown.push(name);
            }
        }
        Ok(unknown)
    }
}

/// Fails unless the map pinned at `path` is a grant map of this layout: a
/// map of that name pinned by another program, or by a build whose layout
/// differs, would be misread.
fn require_grant_layout(path: &Path) -> Result<()> {
    let info = MapInfo::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let (key, value) = (info.key_size() as usize, info.value_size() as usize);
    let lru = matches!(info.map_type(), Ok(MapType::LruHash));
    if !lru || key != size_of::<AddrKey>() || value != size_of::<Grant>() {
        bail!(
            "{} is not a grant map smtpgate made (type {:?}, key {key} bytes, value {value} bytes); \
             the directory belongs to another program or an incompatible build: give --bpffs-dir another directory",
            path.display(),
            info.map_type()
        );
    }
    Ok(())
}

/// Holds [`PinDir::lock`]; closing the directory releases it.
pub struct DirLock {
    _dir: std::fs::File,
}

fn is_bpffs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(err).with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> Result<()> {
    tracing::info!("mounting the BPF filesystem at {}", at.display());
    std::fs::create_dir_all(at).with_context(|| format!("creating {}", at.display()))?;
    let target = CString::new(at.as_os_str().as_bytes())?;
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs at {}", at.display()));
    }
    Ok(())
}
