//! Turning a refused SYN into the TCP RST that answers it (XDP_TX).
//!
//! The reply reuses the frame in place: MACs, addresses and ports swapped,
//! VLAN tags kept, the TCP header rewritten as RST+ACK acknowledging the SYN
//! (as a closed port would answer, RFC 9293 3.10.7.1), options and payload
//! cut off. Only plain network headers are answered; a SYN with IPv4
//! options or IPv6 extension headers is dropped silently instead.

use core::mem::{size_of, swap};

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext, EbpfContext};

use crate::{
    frame::{EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, TcpHdr, IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_RST},
    parse::PlainHeaders,
};

const TCP_HEADER_LEN: u16 = size_of::<TcpHdr>() as u16;
const REPLY_TTL: u8 = 64;

/// Rewrites the frame into the RST. False if the frame could not be
/// rewritten, in which case the caller drops it.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, reply: PlainHeaders) -> bool {
    let mut frame = Frame::new(ctx.data(), ctx.data_end());
    if swap_macs(&mut frame).is_none() {
        return false;
    }
    let pseudo_sum = if reply.ipv6 {
        ipv6_reply(&mut frame, reply.network_offset)
    } else {
        ipv4_reply(&mut frame, reply.network_offset)
    };
    let Some(pseudo_sum) = pseudo_sum else {
        return false;
    };
    if tcp_reply(&mut frame, reply.transport_offset, pseudo_sum).is_none() {
        return false;
    }
    // Cut TCP options and any payload: the reply ends after its TCP header.
    let excess =
        frame.packet_len() as i32 - (reply.transport_offset as i32 + TCP_HEADER_LEN as i32);
    // SAFETY: shrinking an XDP frame; the context pointer is valid.
    excess <= 0 || unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, -excess) } == 0
}

#[inline(always)]
fn swap_macs(frame: &mut Frame) -> Option<()> {
    let eth = frame.header_mut::<EthHdr>(0)?;
    swap(&mut eth.dst, &mut eth.src);
    Some(())
}

/// Rewrites the IPv4 header; returns the TCP pseudo-header sum.
#[inline(always)]
fn ipv4_reply(frame: &mut Frame, offset: usize) -> Option<u32> {
    let ip = frame.header_mut::<Ipv4Hdr>(offset)?;
    swap(&mut ip.src, &mut ip.dst);
    ip.tos = 0;
    ip.total_len = (size_of::<Ipv4Hdr>() as u16 + TCP_HEADER_LEN).to_be_bytes();
    ip.id = [0, 0];
    ip.flags_frag_off = 0x4000u16.to_be_bytes(); // DF
    ip.ttl = REPLY_TTL;
    ip.checksum = [0, 0];
    // SAFETY: `ip` is a valid, bounds-checked 20-byte header.
    let bytes: &[u8; 20] = unsafe { &*(ip as *const Ipv4Hdr as *const [u8; 20]) };
    ip.checksum = fold(sum_bytes(bytes, 0)).to_be_bytes();
    let mut pseudo = sum_bytes(&ip.src, 0);
    pseudo = sum_bytes(&ip.dst, pseudo);
    Some(pseudo + IPPROTO_TCP as u32 + TCP_HEADER_LEN as u32)
}

/// Rewrites the IPv6 header; returns the TCP pseudo-header sum.
#[inline(always)]
fn ipv6_reply(frame: &mut Frame, offset: usize) -> Option<u32> {
    let ip = frame.header_mut::<Ipv6Hdr>(offset)?;
    swap(&mut ip.src, &mut ip.dst);
    ip.payload_len = TCP_HEADER_LEN.to_be_bytes();
    ip.hop_limit = REPLY_TTL;
    let mut pseudo = sum_bytes(&ip.src, 0);
    pseudo = sum_bytes(&ip.dst, pseudo);
    Some(pseudo + IPPROTO_TCP as u32 + TCP_HEADER_LEN as u32)
}

#[inline(always)]
fn tcp_reply(frame: &mut Frame, offset: usize, pseudo_sum: u32) -> Option<()> {
    let tcp = frame.header_mut::<TcpHdr>(offset)?;
    swap(&mut tcp.src_port, &mut tcp.dst_port);
    // The SYN occupies one sequence number: acknowledge it.
    tcp.ack = u32::from_be_bytes(tcp.seq).wrapping_add(1).to_be_bytes();
    tcp.seq = [0; 4];
    tcp.offset_reserved = (TCP_HEADER_LEN as u8 / 4) << 4;
    tcp.flags = TCP_FLAG_RST | TCP_FLAG_ACK;
    tcp.window = [0, 0];
    tcp.urgent = [0, 0];
    tcp.checksum = [0, 0];
    // SAFETY: `tcp` is a valid, bounds-checked 20-byte header.
    let bytes: &[u8; 20] = unsafe { &*(tcp as *const TcpHdr as *const [u8; 20]) };
    tcp.checksum = fold(sum_bytes(bytes, pseudo_sum)).to_be_bytes();
    Some(())
}

/// Adds `bytes` as big-endian 16-bit words to a one's-complement sum.
#[inline(always)]
fn sum_bytes<const N: usize>(bytes: &[u8; N], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the Internet checksum.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
