//! The writers' side of the grant filter (layout and reasoning in
//! `smtpgate_common::grant_filter`).
//!
//! Any process may grant (the agent, `smtpgate allow`), but only the agent
//! rebuilds. The filter must never deny a grant that is in the map, so:
//!
//! * a rebuild makes the generation odd, zeroes the half not in use, then
//!   adds every key it finds in the map, and makes the generation even
//!   again, which puts the rebuilt half in use;
//! * a grant sets its bits in both halves with atomic ORs, writes the map
//!   entry, and sets its bits again.
//!
//! The second setting is what makes a rebuild safe without anyone waiting
//! for it. Should a rebuild zero a grant's bits after that setting, the
//! zeroing, and so the scan after it, began after the entry was in the map:
//! the scan finds the entry and sets the bits in the rebuilt half. Should it
//! zero them before, the second setting puts them back. The first setting
//! covers the half in use, which no rebuild touches, so that the entry
//! never sits in the map unseen by the gate.

use std::sync::atomic::{
    fence, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};

use anyhow::{bail, Result};
use aya::maps::Map;
use smtpgate_common::{
    address_block::{self, BITMAP_WORDS},
    grant_filter::{self, GENERATION, HEADER_WORDS, MASK},
    AddrKey, KeyWords,
};

use crate::gate::mapped::MappedWords;

/// The filter's words, mapped into this process.
pub struct GrantFilter {
    words: MappedWords,
    /// The Bloom filter's word mask, as the gate reads it from [`MASK`].
    mask: u64,
}

impl GrantFilter {
    pub fn new(map: Map) -> Result<Self> {
        let words = MappedWords::new(map, "grant filter")?;
        let len = words.word_count();
        let half = len.saturating_sub(HEADER_WORDS as usize) / 2;
        let bloom = half.saturating_sub(BITMAP_WORDS as usize) as u64;
        if !bloom.is_power_of_two() || len != HEADER_WORDS as usize + 2 * half {
            bail!("the grant filter map has an unexpected layout ({len} words)");
        }
        Ok(Self {
            words,
            mask: bloom - 1,
        })
    }

    fn word(&self, index: u64) -> &AtomicU64 {
        self.words.word(index)
    }

    /// Sets `key`'s block bit and Bloom bits in the half that starts at
    /// word `half`.
    fn set_bits(&self, half: u64, key: &AddrKey) {
        let words = KeyWords::of(key);
        let (block, block_mask) = grant_filter::block(address_block::bit(words));
        self.word(half + block).fetch_or(block_mask, SeqCst);
        let (hash, bits) = grant_filter::probe(words);
        self.word(grant_filter::bloom_start(half) + (hash & self.mask))
            .fetch_or(bits, SeqCst);
    }

    fn set_in_both_halves(&self, key: &AddrKey) {
        // Generations 0 and 2 read one half each.
        for generation in [0, 2] {
            self.set_bits(grant_filter::half_start(generation, self.mask), key);
        }
    }

    /// Runs `insert` (which writes `key`'s grant into the map) with `key`'s
    /// bits set before and after it, as the module doc describes.
    pub fn admit<T>(&self, key: &AddrKey, insert: impl FnOnce() -> Result<T>) -> Result<T> {
        self.set_in_both_halves(key);
        let inserted = insert()?;
        self.set_in_both_halves(key);
        Ok(inserted)
    }

    /// Starts a rebuild: add every key of the grant map found from now on,
    /// then [`Rebuild::finish`].
    pub fn rebuild(&self) -> Rebuild<'_> {
        let generation = self.word(u64::from(GENERATION));
        // An odd generation is a rebuild that never ended: take it over.
        let current = match generation.load(SeqCst) {
            odd if rebuilding(odd) => odd,
            _ => generation.fetch_add(1, SeqCst) + 1,
        };
        // The half the gate reads once this rebuild ends.
        let unused = grant_filter::half_start(current + 1, self.mask);
        // The gate does not read this half until the rebuild ends.
        let bloom_end = grant_filter::bloom_start(unused) + self.mask + 1;
        for index in unused..bloom_end {
            self.word(index).store(0, Relaxed);
        }
        // The zeroing is done before the scan reads the map.
        fence(SeqCst);
        Rebuild {
            filter: self,
            start: unused,
        }
    }
}

/// Whether a rebuild runs at `generation` (or was abandoned at it, by an
/// agent killed or a scan that failed).
fn rebuilding(generation: u64) -> bool {
    generation & 1 == 1
}

/// A rebuild in progress, filling the half not in use. One dropped
/// unfinished (the map could not be read to the end) leaves the half in use
/// as it was, complete if stale, for the next rebuild to take over.
pub struct Rebuild<'a> {
    filter: &'a GrantFilter,
    start: u64,
}

impl Rebuild<'_> {
    pub fn add(&mut self, key: &AddrKey) {
        self.filter.set_bits(self.start, key);
    }

    /// Every key in the map has been added: puts the rebuilt half in use,
    /// and the filter with it after the first rebuild.
    pub fn finish(self) {
        self.filter.word(u64::from(GENERATION)).fetch_add(1, SeqCst);
        self.filter
            .word(u64::from(MASK))
            .store(self.filter.mask, SeqCst);
    }
}
