//! The allowlist filter: one bit per IPv4 /16 and per hashed IPv6 /32, set
//! wherever an allowlist prefix covers part of it, which the gate asks
//! before the allowlist's LPM trie.
//!
//! A SYN that no grant lets through would otherwise always pay for a trie
//! walk, and a flood consists of nothing else. With the bit clear the gate
//! knows that no prefix can match and skips the walk; a set bit only means
//! "look it up". 16 KiB in all, so it stays in the cache.
//!
//! Layout (in `u64` words): word [`READY`], then [`V4_BITS`] bits for
//! IPv4-mapped keys, indexed by the address's first 16 bits, then
//! [`V6_BITS`] bits for every other key, indexed by a hash of its first 32
//! bits. [`READY`] is zero until the agent has first built the filter;
//! until then the gate looks every source up in the trie.
//!
//! Writers keep every prefix in the trie covered by its bits: they set the
//! bits of a prefix before inserting it, and clear bits only by storing a
//! filter recomputed from the trie after a removal.

use crate::AddrKey;

/// Header word: nonzero once the filter has been built.
pub const READY: u32 = 0;
/// Words before the bits.
pub const HEADER_WORDS: u32 = 1;
/// Bits of the IPv4 part: one per /16.
pub const V4_BITS: u32 = 1 << 16;
/// Bits of the IPv6 part.
pub const V6_BITS: u32 = 1 << 16;
/// The prefix length of the IPv6 blocks the bits stand for.
pub const V6_BLOCK_LEN: u8 = 32;
/// The prefix length of the IPv4 blocks the bits stand for.
pub const V4_BLOCK_LEN: u8 = 16;
/// Words in the whole filter map.
pub const MAP_WORDS: u32 = HEADER_WORDS + (V4_BITS + V6_BITS) / 64;

/// The bit that stands for `key`: its IPv4 /16, or its IPv6 /32 hashed.
#[inline(always)]
pub fn bit(key: &AddrKey) -> u32 {
    let word = |i: usize| u32::from_be_bytes([key[i], key[i + 1], key[i + 2], key[i + 3]]);
    // `::ffff:0:0/96`, compared word by word: the kernel program has no memcmp.
    if word(0) == 0 && word(4) == 0 && word(8) == 0xffff {
        u32::from(u16::from_be_bytes([key[12], key[13]]))
    } else {
        V4_BITS + v6_block_hash(word(0))
    }
}

/// The bit of the IPv6 /32 whose first 32 bits are `block`.
#[inline(always)]
pub fn v6_block_hash(block: u32) -> u32 {
    // Fibonacci hashing: a multiply spreads neighbouring blocks (an ISP's
    // 2001:db8::/32 and 2001:db9::/32) far apart; the top 16 bits index.
    block.wrapping_mul(0x9e37_79b9) >> 16
}

/// The word holding `bit` and the bit's mask in it.
#[inline(always)]
pub fn word_and_mask(bit: u32) -> (u32, u64) {
    (HEADER_WORDS + bit / 64, 1u64 << (bit % 64))
}
