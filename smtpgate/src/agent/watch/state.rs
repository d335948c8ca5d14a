//! Where each source stopped reading, kept on disk so that no login is lost
//! to a restart: file positions (with what identifies the file), the
//! journal cursor, the last entry a relay applied from each stream, and how
//! far a POP host has numbered its published entries.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use smtpgate_tail::{Position, StartAt};

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    files: BTreeMap<PathBuf, Position>,
    #[serde(default)]
    journal_cursor: Option<String>,
    /// Stream key -> ID of the last entry applied from it.
    #[serde(default)]
    streams: BTreeMap<String, String>,
    /// Sequence numbers up to this one may have been published.
    #[serde(default)]
    published_seq: u64,
}

pub struct StateStore {
    path: PathBuf,
    saved: Mutex<Saved>,
    dirty: AtomicBool,
}

impl StateStore {
    /// Reads `DIR/state.json`, creating the directory if needed. A state file
    /// that cannot be parsed is set aside, not fatal: the sources then read
    /// back a TTL's worth of logins, which is what a first start does.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        let path = dir.join("state.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                let aside = path.with_extension("json.corrupt");
                tracing::warn!(
                    "{} is unreadable ({e}); moved to {}, reading logs back one TTL",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                Saved::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            path,
            saved: Mutex::new(saved),
            dirty: AtomicBool::new(false),
        })
    }

    /// Where to start following `path`: where the last run stopped, or the
    /// beginning of the file on a first start (old lines are filtered by their
    /// time stamps).
    pub fn file_start(&self, path: &Path) -> StartAt {
        match self.saved.lock().expect("state lock").files.get(path) {
            Some(position) => StartAt::Resume(position.clone()),
            None => StartAt::Beginning,
        }
    }

    pub fn record_file(&self, path: &Path, position: Position) {
        self.saved
            .lock()
            .expect("state lock")
            .files
            .insert(path.to_path_buf(), position);
        self.dirty.store(true, Ordering::Release);
    }

    pub fn journal_cursor(&self) -> Option<String> {
        self.saved
            .lock()
            .expect("state lock")
            .journal_cursor
            .clone()
    }

    pub fn record_journal_cursor(&self, cursor: String) {
        self.saved.lock().expect("state lock").journal_cursor = Some(cursor);
        self.dirty.store(true, Ordering::Release);
    }

    /// The ID of the last entry applied from the stream `key`, if any was.
    pub fn stream_position(&self, key: &str) -> Option<String> {
        self.saved
            .lock()
            .expect("state lock")
            .streams
            .get(key)
            .cloned()
    }

    pub fn record_stream_position(&self, key: &str, id: String) {
        self.saved
            .lock()
            .expect("state lock")
            .streams
            .insert(key.to_string(), id);
        self.dirty.store(true, Ordering::Release);
    }

    /// The highest sequence number an earlier run may have published.
    pub fn published_seq(&self) -> u64 {
        self.saved.lock().expect("state lock").published_seq
    }

    /// Notes, on disk before returning, that numbers up to `seq` may be
    /// published: a run after a crash starts above them, so no number is
    /// ever given to two entries.
    pub fn reserve_published_seq(&self, seq: u64) -> Result<()> {
        self.saved.lock().expect("state lock").published_seq = seq;
        self.dirty.store(true, Ordering::Release);
        self.flush()
    }

    /// Writes the state if it changed, atomically (temporary file + rename).
    /// A failed write leaves the state to be written by the next flush.
    pub fn flush(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let written = self.write();
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        written
    }

    fn write(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&*self.saved.lock().expect("state lock"))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}
