//! The grant filter: what the gate asks before the grant map itself, in
//! two levels. The first is the [`address_block`] bitmap of the grants'
//! blocks (16 KiB); the second a Bloom filter of the grants.
//!
//! A flood comes from sources without a grant. Looking each up in a grant
//! map sized for a million customers touches a random line of a bucket
//! array of 16 MiB, which misses every cache and the TLB. The Bloom filter
//! is one byte per grant slot, yet at a million slots still a megabyte,
//! which a flood pushes out of the cache; the block bitmap stays cached and
//! answers "certainly not granted" for every source outside the few blocks
//! an ISP's customers live in. The Bloom filter answers it for nearly all
//! sources inside them, with one word read.
//!
//! Layout (in `u64` words): the header, then two halves, each the block
//! bitmap followed by [`bloom_words`] words of Bloom filter. Each source
//! sets its block's bit and [`PROBE_BITS`] bits in one Bloom word (a
//! blocked Bloom filter: one cache line per lookup). The halves exist so
//! that the agent can rebuild one from the grant map, dropping the bits of
//! grants long gone, while the gate reads the other:
//!
//! * word [`GENERATION`] is even while no rebuild runs, odd during one; the
//!   gate reads half `(generation >> 1) & 1`, so the half in use changes
//!   only when a rebuild ends;
//! * word [`MASK`] is `bloom_words - 1`, written after the first rebuild.
//!   While it is zero the gate ignores the filter and looks every source up
//!   in the grant map.
//!
//! Writers set a source's bits in both halves before and after inserting
//! its grant, and only rebuilds clear bits, so the filter never denies a
//! grant that is in the map (see `smtpgate::filter` for why that suffices
//! without anyone waiting for a rebuild).

use crate::address_block::{self, BITMAP_WORDS};
use crate::KeyWords;

/// Header word holding the rebuild generation.
pub const GENERATION: u32 = 0;
/// Header word holding the word mask of one half.
pub const MASK: u32 = 1;
/// Words before the first half.
pub const HEADER_WORDS: u32 = 2;
/// Bits each source sets in its word.
pub const PROBE_BITS: u32 = 3;

/// Words of Bloom filter in one half for a grant map of `capacity` slots:
/// a byte per slot, rounded up to a power of two.
pub const fn bloom_words(capacity: u32) -> u32 {
    let words = capacity / 8;
    if words <= 1 {
        1
    } else {
        words.next_power_of_two()
    }
}

/// Words in the whole filter map for a grant map of `capacity` slots.
pub const fn map_words(capacity: u32) -> u32 {
    HEADER_WORDS + 2 * (BITMAP_WORDS + bloom_words(capacity))
}

/// Where the bit of block `bit` (see [`address_block::bit`]) lives in a
/// half: the word and its mask.
#[inline(always)]
pub fn block(bit: u32) -> (u64, u64) {
    let (word, mask) = address_block::word_and_mask(bit);
    (u64::from(word), mask)
}

/// Where `key` lives in a half's Bloom filter: the word (to be masked, and
/// counted from [`bloom_start`]) and its bits there.
#[inline(always)]
pub fn probe(words: KeyWords) -> (u64, u64) {
    let hash = words.hash();
    let bits = (1u64 << (hash & 63)) | (1u64 << ((hash >> 6) & 63)) | (1u64 << ((hash >> 12) & 63));
    (hash >> 32, bits)
}

/// Index of the first word of the half the gate reads at `generation`,
/// where `mask` is the Bloom filter's.
#[inline(always)]
pub fn half_start(generation: u64, mask: u64) -> u64 {
    u64::from(HEADER_WORDS) + ((generation >> 1) & 1) * (u64::from(BITMAP_WORDS) + mask + 1)
}

/// Index of the first Bloom word of the half that starts at `half`.
#[inline(always)]
pub fn bloom_start(half: u64) -> u64 {
    half + u64::from(BITMAP_WORDS)
}
