//! The header walk: one small function per header, each taking the offset
//! where its header starts and returning what comes next, in the style of
//! xdp-tools' parsing helpers; [`look`] chains them.
//!
//! The walk fails closed. It lets a frame pass unjudged only where it can
//! prove that the kernel's stack will not take the frame as a
//! connection-opening TCP segment:
//!
//! * **Another ethertype**, once every VLAN tag has been peeled: only the
//!   IPv4 and IPv6 handlers lead to TCP. Linux strips any number of
//!   priority tags (VLAN ID 0) and a VLAN device may take any ID, so every
//!   802.1Q and 802.1ad tag is peeled, up to [`MAX_VLAN_TAGS`]; a deeper
//!   stack is refused, never passed.
//! * **Another protocol** at the end of the IPv6 extension-header chain,
//!   walked up to [`MAX_IPV6_EXT_HEADERS`] (a longer chain is doubtful), or
//!   in the IPv4 header.
//! * **TCP without SYN, or with ACK**: not a connection request.
//! * **A later fragment** (offset not zero): the flags, ports and chain
//!   that make a datagram a SYN to a gated port sit in its first fragment,
//!   which is judged, and only on what it holds itself. No later fragment
//!   can change those bytes, because the kernel discards a datagram whose
//!   fragments overlap (RFC 5722; IPv4 since Linux 4.19) and keeps the
//!   first of exact duplicates; and without its first fragment a datagram
//!   is never reassembled.
//! * **A frame the kernel discards**: an IP or TCP header cut short by the
//!   packet's declared length or by the frame itself, a wrong IP version,
//!   an IPv4 header length below 20 bytes, a TCP data offset below 5.
//!
//! What the walk cannot read but could be a SYN is doubtful: judged like a
//! gated SYN by its source, counted by its reason when refused. Where the
//! source itself is out of sight (too many VLAN tags), it is refused.

use core::mem::size_of;

use smtpgate_common::{v4_key, AddrKey, Counter};

use crate::frame::{
    Cut, EthHdr, Frame, Ipv4Hdr, Ipv6ExtHdr, Ipv6Hdr, TcpHdr, TcpPorts, VlanTag, ETH_P_8021AD,
    ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
    IPPROTO_ROUTING, IPPROTO_TCP, TCP_FLAG_ACK, TCP_FLAG_SYN,
};

/// VLAN tags peeled before a frame is refused. Real networks stack two
/// (802.1ad + 802.1Q); the TC hook sees one fewer, the outer tag having
/// moved into the socket buffer.
pub const MAX_VLAN_TAGS: usize = 8;
/// IPv6 extension headers walked before a chain is doubtful. RFC 7872
/// measured that chains of even one or two headers are widely dropped on
/// the Internet, so no customer depends on longer ones.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// What the gate learns from a frame's headers.
pub enum Look {
    /// Certainly no connection-opening TCP segment: passes untouched.
    Pass,
    /// Passes, counted by why it needs no judging.
    Counted(Counter),
    /// A SYN, or a frame that could be one, whose source is known.
    Segment(Segment),
    /// Could be a SYN, but its source is out of sight: refused.
    Hidden(Counter),
}

/// A (possible) connection-opening segment. Its addresses stay in the
/// packet until the gate needs them ([`Segment::source`],
/// [`Segment::destination`]): most SYNs are decided before.
///
/// Plain fields only, no `Option` with a payload: a `None` leaves its
/// payload undefined, and the compiler may fill it from any register,
/// which the verifier rejects when that register held a pointer.
pub struct Segment {
    /// The destination port, where the frame shows it.
    pub port: Port,
    /// False where a source route could deliver the segment to another
    /// local address than `dst`: IPv4 options, or an IPv6 routing header
    /// with segments left.
    pub dst_final: bool,
    /// Why the gate cannot be sure this is a SYN; `None` when it is one.
    pub doubt: Option<Counter>,
    /// Where the headers are, for a RST reply written in place.
    pub headers: PlainHeaders,
    /// No IPv4 options, no IPv6 extension headers: a reply may reuse the
    /// headers in place.
    pub plain: bool,
}

/// A destination port that a frame may not show.
#[derive(Clone, Copy)]
pub struct Port(u32);

impl Port {
    /// Not in the frame (a fragment too short to hold it).
    pub const HIDDEN: Port = Port(u32::MAX);

    #[inline(always)]
    pub fn shown(port: u16) -> Port {
        Port(u32::from(port))
    }

    #[inline(always)]
    pub fn get(self) -> Option<u16> {
        u16::try_from(self.0).ok()
    }
}

/// The offsets of a segment's network and TCP headers.
#[derive(Clone, Copy)]
pub struct PlainHeaders {
    pub network_offset: usize,
    pub transport_offset: usize,
    pub ipv6: bool,
}

/// Where the addresses sit in the IPv4 and IPv6 headers.
const IPV4_SOURCE: usize = 12;
const IPV4_DESTINATION: usize = 16;
const IPV6_SOURCE: usize = 8;
const IPV6_DESTINATION: usize = 24;

/// The network layer as the walk has seen it so far.
struct Ip {
    network_offset: usize,
    ipv6: bool,
    /// Where the bytes the kernel keeps of this packet end: the declared
    /// length, or for a fragment that is not the last, the whole 8-byte
    /// units of it (the kernel trims the rest, RFC 791 / 8200).
    end: usize,
    /// In the first fragment of a fragmented datagram, whose headers may
    /// continue in later fragments.
    fragment: bool,
    dst_final: bool,
    /// No IPv4 options and no IPv6 extension headers.
    plain: bool,
}

impl Segment {
    /// The source address, as the grant map keys it.
    #[inline(always)]
    pub fn source(&self, frame: &Frame) -> Option<AddrKey> {
        self.address(frame, IPV4_SOURCE, IPV6_SOURCE)
    }

    /// The destination address, as the gated destinations are keyed.
    #[inline(always)]
    pub fn destination(&self, frame: &Frame) -> Option<AddrKey> {
        self.address(frame, IPV4_DESTINATION, IPV6_DESTINATION)
    }

    /// The address at `v4` or `v6` bytes into the network header. The walk
    /// read the whole header already; this reads it again for the verifier.
    #[inline(always)]
    fn address(&self, frame: &Frame, v4: usize, v6: usize) -> Option<AddrKey> {
        let at = self.headers.network_offset;
        let limit = frame.packet_len();
        if self.headers.ipv6 {
            frame.header::<AddrKey>(at + v6, limit).ok().copied()
        } else {
            frame
                .header::<[u8; 4]>(at + v4, limit)
                .ok()
                .map(|&octets| v4_key(octets))
        }
    }

    /// Where to write the RST that answers a certain, plain SYN.
    #[inline(always)]
    pub fn reply(&self) -> Option<PlainHeaders> {
        (self.plain && self.doubt.is_none()).then_some(self.headers)
    }
}

/// Walks the frame's headers.
#[inline(always)]
pub fn look(frame: &Frame) -> Look {
    let (ethertype, offset) = match ethernet(frame) {
        Ok(found) => found,
        Err(look) => return look,
    };
    match ethertype {
        ETH_P_IP => ipv4(frame, offset),
        ETH_P_IPV6 => ipv6(frame, offset),
        _ => Look::Pass,
    }
}

/// Ethernet and every VLAN tag after it: the ethertype of the payload and
/// the offset of the network header.
#[inline(always)]
fn ethernet(frame: &Frame) -> Result<(u16, usize), Look> {
    let eth = frame
        .header::<EthHdr>(0, frame.packet_len())
        .map_err(out_of_sight)?;
    let mut ethertype = u16::from_be_bytes(eth.ethertype);
    let mut offset = size_of::<EthHdr>();
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            return Ok((ethertype, offset));
        }
        (ethertype, offset) = vlan(frame, offset)?;
    }
    if is_vlan(ethertype) {
        return Err(Look::Hidden(Counter::RefusedVlanDepth));
    }
    Ok((ethertype, offset))
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// One VLAN tag: the encapsulated ethertype and the next offset.
#[inline(always)]
fn vlan(frame: &Frame, offset: usize) -> Result<(u16, usize), Look> {
    let tag = frame
        .header::<VlanTag>(offset, frame.packet_len())
        .map_err(out_of_sight)?;
    Ok((
        u16::from_be_bytes(tag.ethertype),
        offset + size_of::<VlanTag>(),
    ))
}

/// A header cut short before any address is known.
#[inline(always)]
fn out_of_sight(cut: Cut) -> Look {
    match cut {
        Cut::Packet => Look::Counted(Counter::UnparsedTruncated),
        Cut::Linear => Look::Hidden(Counter::RefusedNonlinear),
    }
}

/// Where an IP packet of `declared` bytes from `offset` ends; a zero
/// length (a GSO packet in TC, or an IPv6 jumbogram) runs to the frame's
/// end. `None` when the frame is shorter than declared: the kernel drops it.
#[inline(always)]
fn packet_end(frame: &Frame, offset: usize, declared: usize) -> Option<usize> {
    let end = if declared == 0 {
        frame.packet_len()
    } else {
        offset + declared
    };
    (end <= frame.packet_len()).then_some(end)
}

/// The end of a fragment that is not the last: only whole 8-byte units of
/// its payload from `payload` on count.
#[inline(always)]
fn whole_units_end(payload: usize, end: usize) -> usize {
    payload + ((end - payload) & !7)
}

/// The IPv4 header, options included.
#[inline(always)]
fn ipv4(frame: &Frame, offset: usize) -> Look {
    let ip = match frame.header::<Ipv4Hdr>(offset, frame.packet_len()) {
        Ok(ip) => ip,
        Err(cut) => return out_of_sight(cut),
    };
    let header_len = ((ip.version_ihl & 0x0f) as usize) * 4;
    let declared = u16::from_be_bytes(ip.total_len) as usize;
    if ip.version_ihl >> 4 != 4
        || header_len < size_of::<Ipv4Hdr>()
        || (declared != 0 && declared < header_len)
    {
        return Look::Counted(Counter::UnparsedMalformed);
    }
    let Some(end) = packet_end(frame, offset, declared) else {
        return Look::Counted(Counter::UnparsedTruncated);
    };
    let transport = offset + header_len;
    if transport > end {
        return Look::Counted(Counter::UnparsedTruncated);
    }
    let flags_offset = u16::from_be_bytes(ip.flags_frag_off);
    if flags_offset & 0x1fff != 0 {
        return Look::Counted(Counter::PassedFragment);
    }
    if ip.protocol != IPPROTO_TCP {
        return Look::Pass;
    }
    let more_fragments = flags_offset & 0x2000 != 0;
    let plain = header_len == size_of::<Ipv4Hdr>();
    let ip = Ip {
        network_offset: offset,
        ipv6: false,
        end: if more_fragments {
            whole_units_end(transport, end)
        } else {
            end
        },
        fragment: more_fragments,
        // Only options can carry a source route.
        dst_final: plain,
        plain,
    };
    tcp(frame, transport, &ip)
}

/// The IPv6 header and its extension-header chain.
#[inline(always)]
fn ipv6(frame: &Frame, offset: usize) -> Look {
    let hdr = match frame.header::<Ipv6Hdr>(offset, frame.packet_len()) {
        Ok(hdr) => hdr,
        Err(cut) => return out_of_sight(cut),
    };
    if hdr.version_class_flow[0] >> 4 != 6 {
        return Look::Counted(Counter::UnparsedMalformed);
    }
    let first = offset + size_of::<Ipv6Hdr>();
    let Some(end) = packet_end(frame, first, u16::from_be_bytes(hdr.payload_len) as usize) else {
        return Look::Counted(Counter::UnparsedTruncated);
    };
    let mut ip = Ip {
        network_offset: offset,
        ipv6: true,
        end,
        fragment: false,
        dst_final: true,
        plain: true,
    };
    let (mut next, mut at) = (hdr.next_header, first);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_TCP => return tcp(frame, at, &ip),
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT => {}
            _ => return Look::Pass,
        }
        (next, at) = match ipv6_ext(frame, next, at, &mut ip) {
            Ok(found) => found,
            Err(look) => return look,
        };
    }
    match next {
        IPPROTO_TCP => tcp(frame, at, &ip),
        IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT => {
            ip.doubt(Counter::RefusedExtDepth, Port::HIDDEN, at)
        }
        _ => Look::Pass,
    }
}

/// One extension header of type `kind` at `at`: (next header, next
/// offset). Hop-by-hop and destination options need nothing more; a
/// routing header with segments left may have the kernel forward the
/// packet to the next address, and deliver it locally if that is one of
/// ours; a fragment header is [`ipv6_fragment`].
#[inline(always)]
fn ipv6_ext(frame: &Frame, kind: u8, at: usize, ip: &mut Ip) -> Result<(u8, usize), Look> {
    let ext = frame
        .header::<Ipv6ExtHdr>(at, ip.end)
        .map_err(|cut| ip.cut(cut, Port::HIDDEN, at))?;
    match kind {
        IPPROTO_ROUTING if ext.segments_left() != 0 => ip.dst_final = false,
        IPPROTO_FRAGMENT => ipv6_fragment(ext, at, ip)?,
        _ => {}
    }
    ip.plain = false;
    Ok((ext.next_header, at + (ext.len_8_octets as usize + 1) * 8))
}

/// A fragment header: a later fragment passes (see the module doc); the
/// first fragment of a datagram narrows the packet to the bytes the
/// kernel keeps of it; an atomic fragment (RFC 6946) is an ordinary packet.
#[inline(always)]
fn ipv6_fragment(frag: &Ipv6ExtHdr, at: usize, ip: &mut Ip) -> Result<(), Look> {
    // Fragments within a fragment: whether the inner first fragment ends
    // where this one shows depends on bytes still to come. A reserved byte
    // that is not zero would move the walk off the header's 8 bytes.
    if ip.fragment || frag.len_8_octets != 0 {
        return Err(ip.doubt(Counter::RefusedFragment, Port::HIDDEN, at));
    }
    let offset_flags = frag.fragment_offset_flags();
    if offset_flags >> 3 != 0 {
        return Err(Look::Counted(Counter::PassedFragment));
    }
    if offset_flags & 1 != 0 {
        let payload = at + size_of::<Ipv6ExtHdr>();
        ip.fragment = true;
        ip.end = whole_units_end(payload, ip.end);
    }
    Ok(())
}

/// The TCP header: a SYN (SYN set, ACK clear) becomes a segment to judge.
#[inline(always)]
fn tcp(frame: &Frame, at: usize, ip: &Ip) -> Look {
    let tcp = match frame.header::<TcpHdr>(at, ip.end) {
        Ok(tcp) => tcp,
        Err(cut) => {
            // A tiny first fragment may still show the ports: a SYN to an
            // ungated port passes whatever its flags.
            let port = match frame.header::<TcpPorts>(at, ip.end) {
                Ok(ports) => Port::shown(u16::from_be_bytes(ports.dst)),
                Err(_) => Port::HIDDEN,
            };
            return ip.cut(cut, port, at);
        }
    };
    if tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) != TCP_FLAG_SYN {
        return Look::Pass;
    }
    if (tcp.offset_reserved >> 4) < 5 {
        return Look::Counted(Counter::UnparsedMalformed);
    }
    ip.segment(Port::shown(u16::from_be_bytes(tcp.dst_port)), None, at)
}

impl Ip {
    /// A segment of this packet whose transport header is at `at`.
    #[inline(always)]
    fn segment(&self, port: Port, doubt: Option<Counter>, at: usize) -> Look {
        Look::Segment(Segment {
            port,
            dst_final: self.dst_final,
            doubt,
            headers: PlainHeaders {
                network_offset: self.network_offset,
                transport_offset: at,
                ipv6: self.ipv6,
            },
            plain: self.plain,
        })
    }

    /// A segment that could be a SYN, doubtful for `reason`.
    #[inline(always)]
    fn doubt(&self, reason: Counter, port: Port, at: usize) -> Look {
        self.segment(port, Some(reason), at)
    }

    /// What a header at `at` cut short within this packet means.
    #[inline(always)]
    fn cut(&self, cut: Cut, port: Port, at: usize) -> Look {
        match cut {
            Cut::Linear => self.doubt(Counter::RefusedNonlinear, port, at),
            // The rest of the headers may come in later fragments.
            Cut::Packet if self.fragment => self.doubt(Counter::RefusedFragment, port, at),
            // The kernel drops a packet whose headers run past its end.
            Cut::Packet => Look::Counted(Counter::UnparsedTruncated),
        }
    }
}
