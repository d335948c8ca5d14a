//! The replay table: the first refused SYN of each source, kept so that
//! the agent can hand it back to the gate the moment the source's grant
//! lands, instead of the client waiting a second for its retransmission.
//!
//! A mail client's "send and receive" opens SMTP while its POP3 login is
//! still in flight; the gate refuses that first SYN. With replay on
//! ([`crate::GateConfig::replay_window_ms`] nonzero) the gate copies each
//! plain, untagged SYN it drops silently into the slot of its source's
//! grant key, as it came: Ethernet, IP and TCP headers, options and all.
//! When the agent writes a grant, it claims the slot of the grant's key
//! and, if it holds a SYN of a source the grant covers, refused within the
//! window, replays it.
//!
//! Slots are indexed by a hash of the source, so the table's memory is
//! fixed. A slot keeps the first SYN it takes until the agent claims it,
//! or frees it once it is older than the window: in a flood, strangers
//! hold the slots (and now and then a customer's, who then waits for the
//! retransmission as without replay). Each slot's state is one word of
//! [`crate::REPLAY_SLOTS_MAP`] (32 KiB in all, which stays in the cache, so
//! a flood's SYN costs a word read), its SYN a record of
//! [`crate::REFUSED_SYNS_MAP`]. A slot is claimed or freed by swapping its
//! word with zero: of any number of claimants, one gets the SYN.

use crate::KeyWords;

/// Slots in the table.
pub const SLOTS: u32 = 4096;

/// Bytes of frame a record holds: Ethernet, IPv6 and TCP with 40 bytes of
/// options, the longest SYN header recorded.
pub const FRAME_BYTES: usize = 114;

/// One refused SYN, as the gate copied it from the frame: the value of
/// [`crate::REFUSED_SYNS_MAP`]. Its slot's word says whether it is one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RefusedSyn {
    /// The interface it arrived on.
    pub ifindex: u32,
    pub reserved: [u8; 2],
    /// The frame from its Ethernet header to the end of its TCP options:
    /// untagged, with a plain IPv4 or IPv6 header. How much of it is the
    /// frame's own headers say.
    pub frame: [u8; FRAME_BYTES],
}

/// A slot's word: zero while the slot is free; else when its SYN was
/// refused (nanoseconds on the gate's clock, `CLOCK_MONOTONIC`, to
/// [`TAG_BITS`] of them) with its source's tag in the low bits. The gate
/// writes a slot only while its word is zero, and the word last.
pub const TAG_BITS: u32 = 16;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// The word of a slot holding a SYN refused at `refused_ns` by the source
/// tagged `tag`: never zero (the clock has run past 2^16 ns at boot).
#[inline(always)]
pub const fn slot_word(refused_ns: u64, tag: u16) -> u64 {
    (refused_ns & !TAG_MASK) | tag as u64
}

/// When the SYN of a slot's word was refused (to [`TAG_BITS`] of
/// nanoseconds), and its source's tag.
#[inline(always)]
pub const fn slot_parts(word: u64) -> (u64, u16) {
    (word & !TAG_MASK, (word & TAG_MASK) as u16)
}

/// Where the SYN of the source whose grant key reads `words` goes: its
/// slot and its tag there.
#[inline(always)]
pub fn slot(words: KeyWords) -> (u32, u16) {
    let hash = words.hash();
    ((hash as u32) & (SLOTS - 1), (hash >> 48) as u16)
}

#[cfg(feature = "user")]
// SAFETY: plain data without padding (bytemuck's derive checks this).
unsafe impl aya::Pod for RefusedSyn {}

const _: () = assert!(core::mem::size_of::<RefusedSyn>() == 120);
const _: () = assert!(SLOTS.is_power_of_two());
