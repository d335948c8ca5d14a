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
    replay::{self, RefusedSyn, MAX_OPTIONS, SLOTS},
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

/// Records the refused SYN the hook holds, from the source whose grant key
/// reads `key` (`high`, `low`).
///
/// A function of its own that reads the frame afresh from the context:
/// inlined, the verifier walked it once for every path of the header walk
/// that ends in a refusal, and the program's verification grew by half.
#[inline(never)]
pub fn record<C: Arrival>(ctx: &C, high: u64, low: u64, window_ms: u32, tally: &mut Tally) {
    let Some(ifindex) = ctx.replay_ifindex() else {
        return;
    };
    let frame = ctx.frame();
    let limit = frame.packet_len();
    let Ok(eth) = frame.header::<EthHdr>(0, limit) else {
        return;
    };
    let ipv6 = match u16::from_be_bytes(eth.ethertype) {
        ETH_P_IPV6 => true,
        ETH_P_IP => false,
        // Tagged: the tags would have to be replayed too.
        _ => return,
    };
    let (network_len, declared) = if ipv6 {
        let Ok(ip) = frame.header::<Ipv6Hdr>(NETWORK, limit) else {
            return;
        };
        if ip.next_header != IPPROTO_TCP {
            return;
        }
        (
            size_of::<Ipv6Hdr>(),
            size_of::<Ipv6Hdr>() + u16::from_be_bytes(ip.payload_len) as usize,
        )
    } else {
        let Ok(ip) = frame.header::<Ipv4Hdr>(NETWORK, limit) else {
            return;
        };
        if ip.version_ihl != IPV4_PLAIN
            || u16::from_be_bytes(ip.flags_frag_off) & IPV4_MORE_OR_OFFSET != 0
        {
            return;
        }
        (
            size_of::<Ipv4Hdr>(),
            u16::from_be_bytes(ip.total_len) as usize,
        )
    };
    let transport = NETWORK + network_len;
    let Ok(tcp) = frame.header::<[u8; 20]>(transport, limit) else {
        return;
    };
    let option_words = ((tcp[12] >> 4) as usize).saturating_sub(5);
    // A segment with data is not a SYN to replay without it.
    if declared != network_len + size_of::<TcpHdr>() + option_words * 4 {
        return;
    }
    let Ok(macs) = frame.header::<[u8; 12]>(0, limit) else {
        return;
    };
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
    if before != 0 {
        if now.saturating_sub(before) > u64::from(window_ms) * 1_000_000 {
            tally.add(Counter::ReplayExpired);
        } else if slot.source_tag != tag {
            tally.add(Counter::ReplayDisplaced);
        }
    }
    // SAFETY: an aligned field of the slot.
    unsafe { core::ptr::write_volatile(&mut slot.refused_ns, 0) };
    slot.ifindex = ifindex;
    slot.source_tag = tag;
    slot.macs = *macs;
    let copied = if ipv6 {
        frame
            .header::<[u8; 40]>(NETWORK, limit)
            .map(|ip| slot.network = *ip)
    } else {
        frame
            .header::<[u8; 20]>(NETWORK, limit)
            .map(|ip| slot.network[..20].copy_from_slice(ip))
    };
    if copied.is_err() {
        return;
    }
    slot.tcp = *tcp;
    let options = transport + size_of::<TcpHdr>();
    for i in 0..MAX_OPTIONS / 4 {
        if i >= option_words {
            break;
        }
        let Ok(word) = frame.header::<[u8; 4]>(options + i * 4, limit) else {
            return;
        };
        slot.options[i] = *word;
    }
    // SAFETY: as above; last, so that the record is whole once it shows.
    unsafe { core::ptr::write_volatile(&mut slot.refused_ns, now) };
    tally.add(Counter::SynsRecorded);
}
