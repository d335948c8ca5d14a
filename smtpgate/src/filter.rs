//! The writers' side of the grant filter (layout and reasoning in
//! `smtpgate_common::grant_filter`).
//!
//! Any process may grant (the agent, `smtpgate allow`), but only the agent
//! rebuilds. The filter must never deny a grant that is in the map, so:
//!
//! * a grant sets its bits in both halves with atomic ORs on the mapped
//!   words, then writes the map entry;
//! * a rebuild makes the generation odd, zeroes the half not in use, adds
//!   every key it then finds in the map, and makes the generation even again,
//!   which puts the rebuilt half in use;
//! * a grant that saw the generation change (or odd) between setting its
//!   bits and finishing sets them again once no rebuild runs: the rebuild
//!   may have zeroed them before its scan could find the new entry.
//!
//! A grant that saw one even generation throughout cannot have overlapped a
//! rebuild, and any later rebuild finds its entry in the map.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{
        AtomicU64,
        Ordering::{Relaxed, SeqCst},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};
use smtpgate_common::{
    grant_filter::{self, GENERATION, HEADER_WORDS, MASK},
    AddrKey,
};

/// How long a grant waits for a rebuild to end before it takes the
/// generation for stale: an agent killed in mid-rebuild leaves it odd,
/// which is harmless (the gate keeps reading the half in use, and grants
/// keep setting bits in it) but must not stall `smtpgate allow` for good.
const REBUILD_WAIT: Duration = Duration::from_secs(10);
const REBUILD_POLL: Duration = Duration::from_millis(1);

/// The filter's words, mapped into this process.
pub struct GrantFilter {
    words: NonNull<AtomicU64>,
    len: usize,
    half_words: u64,
    // Keeps the map alive while it is mapped.
    _map: MapData,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for GrantFilter {}
// SAFETY: as above.
unsafe impl Sync for GrantFilter {}

impl GrantFilter {
    pub fn new(map: Map) -> Result<Self> {
        let Map::Array(map) = map else {
            bail!("the grant filter map has an unexpected type");
        };
        let info = map.info().context("reading the grant filter's layout")?;
        let len = info.max_entries() as usize;
        let half_words = (len.saturating_sub(HEADER_WORDS as usize) / 2) as u64;
        if info.value_size() != 8 || !half_words.is_power_of_two() {
            bail!("the grant filter map has an unexpected layout ({len} words of {} bytes)", info.value_size());
        }
        let bytes = len * size_of::<u64>();
        // SAFETY: maps the array's values (offset 0), shared with the kernel;
        // the result is checked before use and unmapped on drop.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mapping the grant filter into memory");
        }
        let words = NonNull::new(at.cast()).context("mmap returned null")?;
        Ok(Self { words, len, half_words, _map: map })
    }

    fn word(&self, index: u64) -> &AtomicU64 {
        assert!(index < self.len as u64, "filter word {index} out of range");
        // SAFETY: in range of the mapping, which lives as long as `self`.
        unsafe { &*self.words.as_ptr().add(index as usize) }
    }

    fn generation(&self) -> u64 {
        self.word(u64::from(GENERATION)).load(SeqCst)
    }

    /// Sets `key`'s bits in the half that starts at word `start`.
    fn set_bits(&self, start: u64, key: &AddrKey) {
        let (hash, bits) = grant_filter::probe(key);
        self.word(start + (hash & (self.half_words - 1))).fetch_or(bits, SeqCst);
    }

    fn set_in_both_halves(&self, key: &AddrKey) {
        // Generations 0 and 2 read one half each.
        for generation in [0, 2] {
            self.set_bits(grant_filter::half_start(generation, self.half_words - 1), key);
        }
    }

    /// Runs `insert` (which writes `key`'s grant into the map) with `key`'s
    /// bits set around it, as the module doc describes.
    pub fn admit<T>(&self, key: &AddrKey, insert: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut seen = self.generation();
        self.set_in_both_halves(key);
        let inserted = insert()?;
        let deadline = Instant::now() + REBUILD_WAIT;
        loop {
            let now = self.generation();
            if rebuilding(now) && Instant::now() < deadline {
                thread::sleep(REBUILD_POLL);
                continue;
            }
            if now == seen && !rebuilding(now) {
                return Ok(inserted);
            }
            self.set_in_both_halves(key);
            if rebuilding(now) {
                tracing::warn!("a grant filter rebuild has not ended in {REBUILD_WAIT:?}; taking it for abandoned");
                return Ok(inserted);
            }
            seen = now;
        }
    }

    /// Starts a rebuild: add every key of the grant map found from now on,
    /// then [`Rebuild::finish`] (or drop it unfinished if the map could not
    /// be read).
    pub fn rebuild(&self) -> Rebuild<'_> {
        let generation = self.word(u64::from(GENERATION));
        // An odd generation is a rebuild that never ended: take it over.
        let current = match generation.load(SeqCst) {
            odd if rebuilding(odd) => odd,
            _ => generation.fetch_add(1, SeqCst) + 1,
        };
        // The half the gate reads once this rebuild ends.
        let unused = grant_filter::half_start(current + 1, self.half_words - 1);
        // The gate does not read this half; `finish` publishes it.
        for index in unused..unused + self.half_words {
            self.word(index).store(0, Relaxed);
        }
        Rebuild { filter: self, start: unused, complete: false }
    }
}

/// Whether a rebuild runs at `generation` (or was abandoned at it).
fn rebuilding(generation: u64) -> bool {
    generation & 1 == 1
}

impl Drop for GrantFilter {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.words.as_ptr().cast(), self.len * size_of::<u64>()) };
    }
}

/// A rebuild in progress, filling the half not in use. It ends when
/// dropped, which puts the rebuilt half in use (and the filter with it,
/// after the first rebuild).
pub struct Rebuild<'a> {
    filter: &'a GrantFilter,
    start: u64,
    complete: bool,
}

impl Rebuild<'_> {
    pub fn add(&mut self, key: &AddrKey) {
        self.filter.set_bits(self.start, key);
    }

    /// Every key in the map has been added: the half may deny the rest.
    pub fn finish(mut self) {
        self.complete = true;
    }
}

impl Drop for Rebuild<'_> {
    /// A rebuild given up half way (the map could not be read to the end)
    /// ends too, so that no grant waits for it, but with every bit of its
    /// half set: the gate then looks every source up in the map until the
    /// next rebuild.
    fn drop(&mut self) {
        if !self.complete {
            for index in self.start..self.start + self.filter.half_words {
                self.filter.word(index).store(u64::MAX, Relaxed);
            }
        }
        self.filter.word(u64::from(GENERATION)).fetch_add(1, SeqCst);
        self.filter.word(u64::from(MASK)).store(self.filter.half_words - 1, SeqCst);
    }
}
