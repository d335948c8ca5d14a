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

/// Each slot's state (see `replay::slot_word`). Named after its layout,
/// like every map.
#[map(name = "REPLAY_SLOTS_V1")]
static REPLAY_SLOTS: Array<u64> = Array::pinned(SLOTS, BPF_F_MMAPABLE);

/// Each slot's SYN.
#[map(name = "REFUSED_SYNS_V1")]
static REFUSED_SYNS: Array<RefusedSyn> = Array::pinned(SLOTS, BPF_F_MMAPABLE);

/// Where the network header of an untagged frame starts.
const NETWORK: usize = size_of::<EthHdr>();
/// Version 4, header length 20 bytes: no options.
const IPV4_PLAIN: u8 = 0x45;
/// IPv4's flags and fragment offset, of which only DF may be set.
const IPV4_MORE_OR_OFFSET: u16 = 0x3fff;

/// Records the refused SYN the hook holds, from the source whose grant key
/// reads `key`, if its slot is free: a slot keeps the first SYN it takes
/// until the agent claims it or finds it older than the window. So a
/// flood, whose sources soon hold every slot, costs a read of a word of 32
/// KiB per SYN (no clock: the helper call alone cost a third of what
/// recording added), and a copy only as slots come free.
#[inline(always)]
pub fn record<C: Arrival>(ctx: &C, key: KeyWords, tally: &mut Tally) {
    let (index, tag) = replay::slot(key);
    let Some(&word) = REPLAY_SLOTS.get(index) else {
        return;
    };
    if word != 0 {
        // The same source's later SYNs serve no better than its first.
        if replay::slot_parts(word).1 != tag {
            tally.add(Counter::ReplaySlotBusy);
        }
        return;
    }
    if copy_into(ctx, index, tag) {
        tally.add(Counter::SynsRecorded);
    }
}

/// Copies the SYN into slot `index`, as refused now by the source tagged
/// `tag`; false if it could not.
///
/// A function of its own that reads the frame afresh from the context:
/// inlined, the verifier walked it once for every path of the header walk
/// that ends in a refusal, and the program's verification grew by half.
/// It returns a value so that what its return register last held (a stack
/// pointer, say) is never what it returns: the verifier refuses that.
#[inline(never)]
fn copy_into<C: Arrival>(ctx: &C, index: u32, tag: u16) -> bool {
    let (Some(ifindex), Some(len)) = (ctx.replay_ifindex(), headers_len(ctx)) else {
        return false;
    };
    let (Some(word), Some(syn)) = (
        REPLAY_SLOTS.get_ptr_mut(index),
        REFUSED_SYNS.get_ptr_mut(index),
    ) else {
        return false;
    };
    // SAFETY: a value of the array, alive while the program runs. Another
    // CPU may write the same free slot at once; the agent checks what it
    // replays, so a torn record costs a replay, never a wrong one.
    let syn = unsafe { &mut *syn };
    if !ctx.copy_headers(len, &mut syn.frame) {
        return false;
    }
    syn.ifindex = ifindex;
    // SAFETY: an aligned value of the array; last, so that the record is
    // whole once its slot shows it.
    unsafe { core::ptr::write_volatile(word, replay::slot_word(now_ns(), tag)) };
    true
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
