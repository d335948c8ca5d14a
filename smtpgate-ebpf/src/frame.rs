//! Bounds-checked access to the packet, one small function per header.
//!
//! Each parser takes the offset where its header starts and returns what the
//! gate needs plus the offset of the next header, in the style of xdp-tools'
//! parsing helpers. Every read is preceded by an explicit check against the
//! end of the packet, so the verifier can prove each access safe.

use core::mem::size_of;

use smtpgate_common::{v4_key, AddrKey, Counter};

/// Why a frame was passed without being judged.
pub type Unparsed = Counter;

/// The packet bytes between `data` and `data_end`.
#[derive(Clone, Copy)]
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// A reference to a `T` at `offset`, or `UnparsedTruncated` if the frame
    /// ends before it.
    #[inline(always)]
    fn header<T>(&self, offset: usize) -> Result<&T, Unparsed> {
        if self.start + offset + size_of::<T>() > self.end {
            return Err(Counter::UnparsedTruncated);
        }
        // SAFETY: the range was checked against the end of the packet, and
        // every header type is made of byte arrays (alignment 1).
        Ok(unsafe { &*((self.start + offset) as *const T) })
    }

    /// Like [`Frame::header`], for rewriting the packet in place.
    #[inline(always)]
    pub fn header_mut<T>(&self, offset: usize) -> Result<&mut T, Unparsed> {
        if self.start + offset + size_of::<T>() > self.end {
            return Err(Counter::UnparsedTruncated);
        }
        // SAFETY: as in `header`; the program owns the packet while it runs.
        Ok(unsafe { &mut *((self.start + offset) as *mut T) })
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
struct VlanTag {
    tci: [u8; 2],
    ethertype: [u8; 2],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub flags_frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first two bytes of every IPv6 extension header except the fragment
/// header share this shape.
// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
struct Ipv6ExtHdr {
    next_header: u8,
    len_8_octets: u8,
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
struct Ipv6FragHdr {
    next_header: u8,
    reserved: u8,
    offset_flags: [u8; 2],
    id: [u8; 4],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct TcpHdr {
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub offset_reserved: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub checksum: [u8; 2],
    pub urgent: [u8; 2],
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// How many VLAN tags are peeled: one 802.1Q, or an 802.1ad outer plus an
/// 802.1Q inner tag (QinQ).
const MAX_VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers are walked before giving up (and passing).
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Ethernet header plus up to [`MAX_VLAN_TAGS`] VLAN tags.
/// Returns the inner ethertype and the offset of the network header.
#[inline(always)]
pub fn ethernet(frame: &Frame) -> Result<(u16, usize), Unparsed> {
    let eth = frame.header::<EthHdr>(0)?;
    let mut ethertype = u16::from_be_bytes(eth.ethertype);
    let mut offset = size_of::<EthHdr>();
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        (ethertype, offset) = vlan(frame, offset)?;
    }
    if is_vlan(ethertype) {
        return Err(Counter::UnparsedVlanDepth);
    }
    Ok((ethertype, offset))
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// One VLAN tag: returns the encapsulated ethertype and the next offset.
#[inline(always)]
fn vlan(frame: &Frame, offset: usize) -> Result<(u16, usize), Unparsed> {
    let tag = frame.header::<VlanTag>(offset)?;
    Ok((u16::from_be_bytes(tag.ethertype), offset + size_of::<VlanTag>()))
}

/// Where a transport header sits and whom it is between.
pub struct Transport {
    pub protocol: u8,
    /// Where the network header starts, and which one it is.
    pub network_offset: usize,
    pub ipv6: bool,
    pub offset: usize,
    pub src: AddrKey,
    pub dst: AddrKey,
    /// The network header has no IPv4 options or IPv6 extension headers,
    /// so a reply can reuse it in place.
    pub plain: bool,
}

/// What the network layer tells the gate.
pub enum Network {
    /// The transport header follows at `Transport::offset`.
    Transport(Transport),
    /// A later fragment: no transport header to judge.
    LaterFragment,
}

/// IPv4 header, options included.
#[inline(always)]
pub fn ipv4(frame: &Frame, offset: usize) -> Result<Network, Unparsed> {
    let ip = frame.header::<Ipv4Hdr>(offset)?;
    let header_len = ((ip.version_ihl & 0x0f) as usize) * 4;
    if ip.version_ihl >> 4 != 4 || header_len < size_of::<Ipv4Hdr>() {
        return Err(Counter::UnparsedMalformed);
    }
    // Fragment offset is the low 13 bits; only the first fragment (offset 0)
    // carries the TCP header.
    if u16::from_be_bytes(ip.flags_frag_off) & 0x1fff != 0 {
        return Ok(Network::LaterFragment);
    }
    Ok(Network::Transport(Transport {
        protocol: ip.protocol,
        network_offset: offset,
        ipv6: false,
        offset: offset + header_len,
        src: v4_key(ip.src),
        dst: v4_key(ip.dst),
        plain: header_len == size_of::<Ipv4Hdr>(),
    }))
}

/// IPv6 header and its extension-header chain, walked to a bounded depth.
#[inline(always)]
pub fn ipv6(frame: &Frame, offset: usize) -> Result<Network, Unparsed> {
    let ip = frame.header::<Ipv6Hdr>(offset)?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Counter::UnparsedMalformed);
    }
    let (src, dst) = (ip.src, ip.dst);
    let mut next = ip.next_header;
    let network_offset = offset;
    let first_after = offset + size_of::<Ipv6Hdr>();
    let mut offset = first_after;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                (next, offset) = ipv6_ext(frame, offset)?;
            }
            IPPROTO_FRAGMENT => match ipv6_fragment(frame, offset)? {
                Some(after) => (next, offset) = after,
                None => return Ok(Network::LaterFragment),
            },
            protocol => {
                let plain = offset == first_after;
                return Ok(Network::Transport(Transport { protocol, network_offset, ipv6: true, offset, src, dst, plain }));
            }
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Err(Counter::UnparsedExtDepth)
        }
        protocol => Ok(Network::Transport(Transport { protocol, network_offset, ipv6: true, offset, src, dst, plain: false })),
    }
}

/// A hop-by-hop, routing or destination-options header: (next header, next offset).
#[inline(always)]
fn ipv6_ext(frame: &Frame, offset: usize) -> Result<(u8, usize), Unparsed> {
    let ext = frame.header::<Ipv6ExtHdr>(offset)?;
    Ok((ext.next_header, offset + (ext.len_8_octets as usize + 1) * 8))
}

/// A fragment header: the next header and offset for a first fragment, `None`
/// for a later one.
#[inline(always)]
fn ipv6_fragment(frame: &Frame, offset: usize) -> Result<Option<(u8, usize)>, Unparsed> {
    let frag = frame.header::<Ipv6FragHdr>(offset)?;
    // The fragment offset is the high 13 bits.
    if u16::from_be_bytes(frag.offset_flags) >> 3 != 0 {
        return Ok(None);
    }
    Ok(Some((frag.next_header, offset + size_of::<Ipv6FragHdr>())))
}

/// The destination port of a connection-opening TCP segment (SYN set, ACK
/// clear), or `None` for any other segment.
#[inline(always)]
pub fn tcp_syn_port(frame: &Frame, offset: usize) -> Result<Option<u16>, Unparsed> {
    let tcp = frame.header::<TcpHdr>(offset)?;
    if tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) != TCP_FLAG_SYN {
        return Ok(None);
    }
    if (tcp.offset_reserved >> 4) < 5 {
        return Err(Counter::UnparsedMalformed);
    }
    Ok(Some(u16::from_be_bytes(tcp.dst_port)))
}

/// Whether the network layer carries TCP.
#[inline(always)]
pub fn is_tcp(transport: &Transport) -> bool {
    transport.protocol == IPPROTO_TCP
}
