//! The allowlist filter: the [`address_block`] bitmap of the allowlist,
//! which the gate asks before the allowlist's LPM trie.
//!
//! A SYN that no grant lets through would otherwise always pay for a trie
//! walk, and a flood consists of nothing else. With its block's bit clear
//! the gate knows that no prefix can match and skips the walk; a set bit
//! only means "look it up".
//!
//! Layout (in `u64` words): word [`READY`], then the bitmap. [`READY`] is
//! zero until the agent has first built the filter; until then the gate
//! looks every source up in the trie.
//!
//! Writers keep every prefix in the trie covered by its bits: they set the
//! bits of a prefix before inserting it, and clear bits only by storing a
//! filter recomputed from the trie after a removal.

use crate::address_block::{self, BITMAP_WORDS};

/// Header word: nonzero once the filter has been built.
pub const READY: u32 = 0;
/// Words before the bitmap.
pub const HEADER_WORDS: u32 = 1;
/// Words in the whole filter map.
pub const MAP_WORDS: u32 = HEADER_WORDS + BITMAP_WORDS;

/// The map word and mask of the bit of block `bit` (see
/// [`address_block::bit`]).
#[inline(always)]
pub fn word_and_mask(bit: u32) -> (u32, u64) {
    let (word, mask) = address_block::word_and_mask(bit);
    (HEADER_WORDS + word, mask)
}
