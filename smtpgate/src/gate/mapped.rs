//! A memory-mappable BPF array of `u64` words, mapped into this process.
//!
//! The kernel program reads such an array (the grant filter, the allowlist
//! filter) while the agent writes it. Through the mapping every word is
//! written with one atomic store or OR, so the program never sees a torn
//! word, which a `BPF_MAP_UPDATE_ELEM` copy does not promise.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::AtomicU64,
};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};

pub struct MappedWords {
    words: NonNull<AtomicU64>,
    len: usize,
    // Keeps the map alive while it is mapped.
    _map: MapData,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for MappedWords {}
// SAFETY: as above.
unsafe impl Sync for MappedWords {}

impl MappedWords {
    /// Maps `map`, which must be an array of `u64` created with
    /// `BPF_F_MMAPABLE`; `what` names it in errors.
    pub fn new(map: Map, what: &str) -> Result<Self> {
        Self::of_values(map, what, size_of::<u64>())
    }

    /// Maps `map`, an array of `value_size`-byte values (a multiple of 8)
    /// created with `BPF_F_MMAPABLE`, as the words of its values in a row.
    pub fn of_values(map: Map, what: &str, value_size: usize) -> Result<Self> {
        let Map::Array(map) = map else {
            bail!("the {what} map has an unexpected type");
        };
        let info = map
            .info()
            .with_context(|| format!("reading the {what}'s layout"))?;
        if info.value_size() as usize != value_size {
            bail!(
                "the {what} map has an unexpected layout (values of {} bytes)",
                info.value_size()
            );
        }
        let len = info.max_entries() as usize * value_size / size_of::<u64>();
        // SAFETY: maps the array's values (offset 0), shared with the kernel;
        // the result is checked before use and unmapped on drop.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * size_of::<u64>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("mapping the {what} into memory"));
        }
        let words = NonNull::new(at.cast()).context("mmap returned null")?;
        Ok(Self {
            words,
            len,
            _map: map,
        })
    }

    /// How many words the array holds.
    pub fn word_count(&self) -> usize {
        self.len
    }

    pub fn word(&self, index: u64) -> &AtomicU64 {
        assert!(index < self.len as u64, "word {index} out of range");
        // SAFETY: in range of the mapping, which lives as long as `self`.
        unsafe { &*self.words.as_ptr().add(index as usize) }
    }
}

impl Drop for MappedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.words.as_ptr().cast(), self.len * size_of::<u64>()) };
    }
}
