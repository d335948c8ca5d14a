//! Address blocks: IPv4 /16s and IPv6 /32s, one bit each in a 16 KiB
//! bitmap (IPv6 blocks hashed to 65,536 bits).
//!
//! The filters in front of the grant map and the allowlist each keep such a
//! bitmap, with a block's bit set wherever an entry lies in the block. An
//! ISP's customers and its own networks occupy few blocks and a flood's
//! sources nearly all of them, so one cached word settles most of a flood.

use crate::KeyWords;

/// The prefix length of the blocks of each family.
pub const V4_BLOCK_LEN: u8 = 16;
pub const V6_BLOCK_LEN: u8 = 32;
/// Bits of each family's part of the bitmap: IPv4 first, then IPv6.
pub const V4_BITS: u32 = 1 << 16;
pub const V6_BITS: u32 = 1 << 16;
/// `u64` words in the bitmap.
pub const BITMAP_WORDS: u32 = (V4_BITS + V6_BITS) / 64;

/// The bit that stands for the block of the key read as `words`.
#[inline(always)]
pub fn bit(words: KeyWords) -> u32 {
    // `::ffff:0:0/96`: bytes 0..10 zero, bytes 10 and 11 0xff.
    if words.high == 0 && words.low & 0xffff_ffff == 0xffff_0000 {
        // Bytes 12 and 13, the IPv4 address's first two, in network order.
        (((words.low >> 32) as u16).swap_bytes()).into()
    } else {
        V4_BITS + v6_block_bit((words.high as u32).swap_bytes())
    }
}

/// The bit (within the IPv6 part) of the /32 whose first 32 bits are `block`.
#[inline(always)]
pub fn v6_block_bit(block: u32) -> u32 {
    // Fibonacci hashing: a multiply spreads neighbouring blocks (an ISP's
    // 2001:db8::/32 and 2001:db9::/32) far apart; the top 16 bits index.
    block.wrapping_mul(0x9e37_79b9) >> 16
}

/// The bitmap word holding `bit` and the bit's mask in it.
#[inline(always)]
pub fn word_and_mask(bit: u32) -> (u32, u64) {
    (bit / 64, 1u64 << (bit % 64))
}
