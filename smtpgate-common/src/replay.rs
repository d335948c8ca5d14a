//! The replay table: the latest refused SYN of each source, kept so that
//! the agent can hand it back to the gate the moment the source's grant
//! lands, instead of the client waiting a second for its retransmission.
//!
//! A mail client's "send and receive" opens SMTP while its POP3 login is
//! still in flight; the gate refuses that first SYN. With replay on
//! ([`crate::GateConfig::replay_window_ms`] nonzero) the gate copies each
//! plain, untagged SYN it drops silently into the slot of its source's
//! grant key, as it came: Ethernet, IP and TCP headers, options and all. When
//! the agent writes a grant, it claims the slot of the grant's key and, if
//! it holds a SYN of a source the grant covers, refused within the window,
//! replays it.
//!
//! Slots are indexed by a hash of the source, so the table's memory is
//! fixed. A slot keeps its SYN for the window unless the same source sends
//! a later one: in a flood, strangers take the slots (and now and then a
//! customer's, who then waits for the retransmission as without replay),
//! and each SYN of the flood costs one read of its slot. A slot is claimed
//! by swapping its [`RefusedSyn::refused_ns`] with zero: of any number of
//! claimants, one gets the SYN.

use crate::KeyWords;

/// Slots in the table: 512 KiB of records.
pub const SLOTS: u32 = 4096;

/// Bytes of frame a slot holds: Ethernet, IPv6 and TCP with 40 bytes of
/// options, the longest SYN header recorded.
pub const FRAME_BYTES: usize = 114;

/// One refused SYN, as the gate copied it from the frame.
///
/// 128 bytes: two cache lines. The gate writes [`RefusedSyn::refused_ns`]
/// zero first and the refusal's time last, so that a reader that finds the
/// same time before and after reading the rest read one SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RefusedSyn {
    /// When the gate refused the SYN, in nanoseconds on the gate's clock
    /// (`CLOCK_MONOTONIC`); zero for an empty or claimed slot.
    pub refused_ns: u64,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// Part of the source's hash that the slot's index is not, telling
    /// apart the sources that share this slot.
    pub source_tag: u16,
    /// The frame from its Ethernet header to the end of its TCP options:
    /// untagged, with a plain IPv4 or IPv6 header. How much of it is the
    /// frame's own headers say.
    pub frame: [u8; FRAME_BYTES],
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

const _: () = assert!(core::mem::size_of::<RefusedSyn>() == 128);
const _: () = assert!(SLOTS.is_power_of_two());
