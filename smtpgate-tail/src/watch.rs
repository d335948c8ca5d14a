//! Waking up when a followed file may have changed.
//!
//! Two inotify watches cover every way a log changes: one on the directory,
//! filtered to the followed name, sees the file appended to, created, moved
//! or deleted under that name; one on the inode being read sees it appended
//! to after rotation moved or unlinked it. A periodic tick backs both up on
//! filesystems where inotify misses changes (network mounts, some FUSE
//! filesystems) and retries a directory watch that could not be placed yet.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};
use std::time::Duration;

use inotify::{EventMask, EventStream, Inotify, StreamExt, WatchDescriptor, WatchMask, Watches};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

/// How often to look without being told; bounds the delay where inotify
/// stays silent.
const SAFETY_NET: Duration = Duration::from_secs(1);

const DIR_EVENTS: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO);

const FILE_EVENTS: WatchMask = WatchMask::MODIFY
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

pub(crate) struct Watch {
    events: EventStream<Vec<u8>>,
    watches: Watches,
    dir: PathBuf,
    name: OsString,
    dir_wd: Option<WatchDescriptor>,
    file_wd: Option<WatchDescriptor>,
    tick: Interval,
}

impl Watch {
    /// Watches for changes to the file named `path`, which need not exist.
    /// Needs a Tokio runtime with I/O and time enabled.
    pub fn new(path: &Path) -> io::Result<Watch> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        // Room for a burst of events with names up to NAME_MAX.
        let events = inotify.into_event_stream(vec![0; 4096])?;
        let (dir, name) = crate::dir::dir_and_name(path).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file to follow", path.display()),
            )
        })?;
        let mut tick = interval_at(Instant::now() + SAFETY_NET, SAFETY_NET);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watch = Watch {
            events,
            watches,
            dir: dir.to_path_buf(),
            name: name.to_os_string(),
            dir_wd: None,
            file_wd: None,
            tick,
        };
        watch.watch_dir();
        Ok(watch)
    }

    /// Watches the inode behind `file` from now on, instead of the previous
    /// one. The watch goes through `/proc/self/fd`, which resolves to the
    /// open inode even after it was renamed or unlinked; a path lookup could
    /// race with rotation and watch the wrong file.
    pub fn follow(&mut self, file: &File) {
        let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let wd = match self.watches.add(&fd_path, FILE_EVENTS) {
            Ok(wd) => Some(wd),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the open log file; relying on its directory");
                None
            }
        };
        // The same inode yields the same descriptor, which must stay.
        if let Some(old) = self.file_wd.take().filter(|old| Some(old) != wd.as_ref()) {
            // Fails harmlessly when the old inode is gone and took its watch along.
            let _ = self.watches.remove(old);
        }
        self.file_wd = wd;
    }

    /// Waits until the file may have changed: an event about it, or the
    /// periodic tick. Cancel-safe: dropping the future loses nothing, since
    /// the caller looks at the file before waiting again anyway.
    pub async fn changed(&mut self) -> io::Result<()> {
        if self.dir_wd.is_none() {
            self.watch_dir();
        }
        poll_fn(|cx| self.poll_changed(cx)).await
    }

    fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Drain what is queued, so a burst of events makes one wake-up.
        let mut relevant = false;
        loop {
            match self.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    relevant |= self.note(event.wd, event.mask, event.name.as_deref());
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "inotify descriptor closed",
                    )))
                }
                Poll::Pending => break,
            }
        }
        if relevant || self.tick.poll_tick(cx).is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// Takes note of one event; returns whether it concerns the followed file.
    fn note(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<&OsStr>) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return true;
        }
        if self.dir_wd.as_ref() != Some(&wd) {
            return true;
        }
        if mask.contains(EventMask::IGNORED) {
            // The directory went away; the next wait tries to watch it again.
            self.dir_wd = None;
            return true;
        }
        name == Some(self.name.as_os_str())
    }

    fn watch_dir(&mut self) {
        match self.watches.add(&self.dir, DIR_EVENTS) {
            Ok(wd) => self.dir_wd = Some(wd),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "cannot watch log directory yet")
            }
        }
    }
}
