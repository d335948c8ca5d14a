//! Recording a refused SYN for replay (see `smtpgate_common::replay`).
//!
//! Only what can be replayed as it came is recorded: an untagged frame
//! with a plain IPv4 or IPv6 header and a TCP header without data. VLAN
//! tags would have to be replayed too (and TC sees the outer one only in
//! the socket buffer); a SYN with data (TCP Fast Open) waits for its
//! retransmission, as every SYN did before replay.

use core::mem::size_of;

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use smtpgate_common::{
    replay::{self, RefusedSyn, FRAME_BYTES, SLOTS},
    Counter, KeyWords,
};

use crate::{
    frame::{EthHdr, Ipv4Hdr, Ipv6Hdr, TcpHdr, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP},
    gate::{now_ns, Arrival, Tally},
};

/// Named after its layout, like every map.
#[map(name = "REFUSED_SYNS_V1")]
static REFUSED_SYNS: Array<RefusedSyn> = Array::pinned(SLOTS, BPF_F_MMAPABLE);

/// Where the network header of an untagged frame starts.
const NETWORK: usize = size_of::<EthHdr>();
/// Version 4, header length 20 bytes: no options.
const IPV4_PLAIN: u8 = 0x45;
/// IPv4's flags and fragment offset, of which only DF may be set.
const IPV4_MORE_OR_OFFSET: u16 = 0x3fff;

/// A source's SYN younger than this is kept in its slot rather than
/// replaced by the same source's next one: a retransmission (a second
/// later) replaces it, a burst of SYNs (a flood, parallel connects, any of
/// which a replay serves) is recorded once.
const HOLD_NS: u64 = 500_000_000;

/// Records the refused SYN the hook holds, from the source whose grant key
/// reads `key` (`high`, `low`), unless its slot holds a SYN to keep: one
/// of another source refused within the window, or one of this source
/// refused less than [`HOLD_NS`] ago. So a flood, whose sources take every
/// slot, costs a read of the slot per SYN, and a copy only once a window.
///
/// A function of its own that reads the frame afresh from the context:
/// inlined, the verifier walked it once for every path of the header walk
/// that ends in a refusal, and the program's verification grew by half.
#[inline(never)]
pub fn record<C: Arrival>(ctx: &C, high: u64, low: u64, window_ms: u32, tally: &mut Tally) {
    let (index, tag) = replay::slot(KeyWords { high, low });
    let Some(slot) = REFUSED_SYNS.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: a value of the array, alive while the program runs. Another
    // CPU may write the same slot at once; the agent checks what it
    // replays, so a torn record costs a replay, never a wrong one.
    let slot = unsafe { &mut *slot };
    let now = now_ns();
    let before = slot.refused_ns;
    let window = u64::from(window_ms) * 1_000_000;
    let age = now.saturating_sub(before);
    if before != 0 {
        if slot.source_tag != tag && age <= window {
            tally.add(Counter::ReplaySlotBusy);
            return;
        }
        if slot.source_tag == tag && age < window.min(HOLD_NS) {
            return;
        }
    }
    let (Some(ifindex), Some(len)) = (ctx.replay_ifindex(), headers_len(ctx)) else {
        return;
    };
    if before != 0 && age > window {
        tally.add(Counter::ReplayExpired);
    }
    // SAFETY: an aligned field of the slot.
    unsafe { core::ptr::write_volatile(&mut slot.refused_ns, 0) };
    if !ctx.copy_headers(len, &mut slot.frame) {
        return;
    }
    slot.ifindex = ifindex;
    slot.source_tag = tag;
    // SAFETY: as above; last, so that the record is whole once it shows.
    unsafe { core::ptr::write_volatile(&mut slot.refused_ns, now) };
    tally.add(Counter::SynsRecorded);
}

/// How many bytes of the frame are its headers, if it is an untagged SYN
/// that can be replayed as it came.
#[inline(always)]
fn headers_len<C: Arrival>(ctx: &C) -> Option<usize> {
    let frame = ctx.frame();
    let limit = frame.packet_len();
    let eth = frame.header::<EthHdr>(0, limit).ok()?;
    let (network_len, declared) = match u16::from_be_bytes(eth.ethertype) {
        ETH_P_IPV6 => {
            let ip = frame.header::<Ipv6Hdr>(NETWORK, limit).ok()?;
            if ip.next_header != IPPROTO_TCP {
                return None;
            }
            let payload = u16::from_be_bytes(ip.payload_len) as usize;
            (size_of::<Ipv6Hdr>(), size_of::<Ipv6Hdr>() + payload)
        }
        ETH_P_IP => {
            let ip = frame.header::<Ipv4Hdr>(NETWORK, limit).ok()?;
            if ip.version_ihl != IPV4_PLAIN
                || u16::from_be_bytes(ip.flags_frag_off) & IPV4_MORE_OR_OFFSET != 0
            {
                return None;
            }
            (
                size_of::<Ipv4Hdr>(),
                u16::from_be_bytes(ip.total_len) as usize,
            )
        }
        // Tagged: the tags would have to be replayed too.
        _ => return None,
    };
    let tcp = frame.header::<TcpHdr>(NETWORK + network_len, limit).ok()?;
    let tcp_len = (tcp.offset_reserved >> 4) as usize * 4;
    // A segment with data is not a SYN to replay without it.
    let len = NETWORK + network_len + tcp_len;
    (declared == network_len + tcp_len && len <= FRAME_BYTES && len <= limit).then_some(len)
}
