//! A case's structure: every header and every fragment of one attempt to
//! open a TCP connection, rendered to frames with fresh identifiers in each
//! phase. Every checksum is valid, because the kernel checks them on veth.
//!
//! Fragments are described in the coordinates of the datagram the kernel
//! would reassemble (the TCP segment, behind the IPv6 headers that follow
//! the fragment header). Bytes the kernel never uses (the tail it cuts off
//! a non-last IPv4 fragment, Ethernet padding after the IP length, a
//! fragment it discards as overlapping or duplicate) can be taken from a
//! decoy: the same segment with harmless flags, so that a gate reading them
//! sees an ordinary ACK where the kernel assembles a SYN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frames::{
    self, ACK, CLIENT_MAC, DEST_OPTS, ETH_P_IP, ETH_P_IPV6, FRAGMENT, HOP_BY_HOP, ROUTING,
    SERVER_MAC, SYN, TCP,
};

/// The options of a Linux SYN: MSS, SACK permitted, timestamps (left zero
/// here), NOP, window scale.
pub const LINUX_SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// One VLAN tag: its TPID and its tag control information (PCP, DEI, VID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

impl Tag {
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }
}

/// The TCP segment, without its sequence number (an identifier, set per
/// phase) and checksum (computed).
#[derive(Clone, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub ack: u32,
    pub flags: u8,
    /// The low nibble of byte 12: three reserved bits and NS.
    pub reserved: u8,
    /// Data offset in 32-bit words; `None`: the true one.
    pub data_offset: Option<u8>,
    pub window: u16,
    pub urgent: u16,
    /// Option bytes, a multiple of four long.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
    /// Flags of the decoy segment (its window compensates, so its
    /// checksum is the real one's).
    pub decoy_flags: u8,
}

#[derive(Clone, Debug)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ttl: u8,
    pub dont_fragment: bool,
    /// The reserved ("evil") bit.
    pub reserved_flag: bool,
    /// Options of the fragment at offset 0 (a multiple of four, at most 40 bytes).
    pub options: Vec<u8>,
    /// Options of every other fragment.
    pub later_options: Vec<u8>,
    pub protocol: u8,
}

/// An IPv6 extension header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options; the body follows the two-byte head (8n+6 bytes).
    HopByHop(Vec<u8>),
    DestOpts(Vec<u8>),
    /// A routing header; `data` follows the four-byte head (8n+4 bytes).
    Routing {
        kind: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// A fragment header of its own (offset in 8-byte units): atomic when
    /// the offset is 0 and `more` is clear.
    Fragment {
        offset: u16,
        more: bool,
    },
    /// The fragment header the case is fragmented at; what follows it is
    /// the fragmentable part.
    Split,
}

impl Ext {
    /// A destination-options header `len` bytes long (a multiple of 8)
    /// that the kernel skips: padding, or one option of a skippable type.
    pub fn dest_opts(len: usize) -> Ext {
        assert!(
            len >= 8 && len.is_multiple_of(8) && len <= 2048,
            "a destination-options header is 8n bytes long"
        );
        let mut body = Vec::with_capacity(len - 2);
        if len - 2 <= 7 {
            pad_options(&mut body, len - 2);
        } else {
            // Options of at most 255 data bytes each: at most eight of them
            // in the longest header, the kernel's default limit.
            while len - 2 - body.len() >= 2 {
                let data = (len - 2 - body.len() - 2).min(255);
                body.extend_from_slice(&[SKIPPABLE_OPTION, data as u8]);
                body.resize(body.len() + data, 0);
            }
            let rest = len - 2 - body.len();
            pad_options(&mut body, rest);
        }
        Ext::DestOpts(body)
    }

    /// A type 0 routing header with no segments left, which the kernel skips.
    pub fn spent_routing() -> Ext {
        Ext::Routing {
            kind: 0,
            segments_left: 0,
            data: vec![0; 4],
        }
    }

    fn code(&self) -> u8 {
        match self {
            Ext::HopByHop(_) => HOP_BY_HOP,
            Ext::DestOpts(_) => DEST_OPTS,
            Ext::Routing { .. } => ROUTING,
            Ext::Fragment { .. } | Ext::Split => FRAGMENT,
        }
    }

    /// The header's bytes, given the next header and the identification
    /// for fragment headers. A split point renders as an atomic fragment
    /// header here; `Shape::frames` writes each fragment's own.
    fn encode(&self, next: u8, id: u32) -> Vec<u8> {
        let options = |body: &[u8]| {
            let mut h = vec![next, ((body.len() + 2) / 8).saturating_sub(1) as u8];
            h.extend_from_slice(body);
            h
        };
        match self {
            Ext::HopByHop(body) | Ext::DestOpts(body) => options(body),
            Ext::Routing {
                kind,
                segments_left,
                data,
            } => {
                let mut h = vec![
                    next,
                    ((data.len() + 4) / 8).saturating_sub(1) as u8,
                    *kind,
                    *segments_left,
                ];
                h.extend_from_slice(data);
                h
            }
            Ext::Fragment { offset, more } => fragment_header(next, *offset, *more, id),
            Ext::Split => fragment_header(next, 0, false, id),
        }
    }
}

/// An option type whose top bits tell a receiver that does not know it to
/// skip it (RFC 4727's experimental type 0x1e).
pub const SKIPPABLE_OPTION: u8 = 0x1e;

/// Pad1 or PadN, filling `len` bytes of an options header.
pub fn pad_options(body: &mut Vec<u8>, len: usize) {
    match len {
        0 => {}
        1 => body.push(0),
        _ => {
            body.extend_from_slice(&[1, (len - 2) as u8]);
            body.extend(std::iter::repeat_n(0, len - 2));
        }
    }
}

fn fragment_header(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

#[derive(Clone, Debug)]
pub struct V6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// Traffic class and flow label (the low 28 bits of the first word).
    pub class_flow: u32,
    pub hop_limit: u8,
    /// The extension headers in order, with at most one [`Ext::Split`].
    pub chain: Vec<Ext>,
    /// Whether fragments after the first repeat the headers before the
    /// split (the kernel keeps the first fragment's).
    pub later_keep_unfragmentable: bool,
    pub protocol: u8,
}

#[derive(Clone, Debug)]
pub enum Net {
    V4(V4),
    V6(V6),
}

/// Bytes after the IP packet inside the frame (Ethernet padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pad {
    None,
    Bytes(Vec<u8>),
    /// This many bytes of the decoy datagram, continuing where the
    /// fragment's data ends.
    Decoy(usize),
}

/// One frame's share of the datagram.
#[derive(Clone, Debug)]
pub struct Fragment {
    /// Where its data starts, in bytes (a multiple of 8).
    pub offset: usize,
    /// How many bytes of data the IP packet carries.
    pub len: usize,
    /// More fragments follow.
    pub more: bool,
    /// Data at or beyond this datagram offset comes from the decoy.
    pub decoy_from: usize,
    /// Added to the IP length field (negative: it claims less than it carries).
    pub length_skew: i16,
    pub pad: Pad,
}

impl Fragment {
    /// The whole datagram, unfragmented.
    pub fn whole(len: usize) -> Self {
        Self::real(0, len, false)
    }

    pub fn real(offset: usize, len: usize, more: bool) -> Self {
        Self {
            offset,
            len,
            more,
            decoy_from: usize::MAX,
            length_skew: 0,
            pad: Pad::None,
        }
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// A whole case: the layer-2 framing, the network layer, the segment, and
/// the fragments in the order they are sent.
#[derive(Clone, Debug)]
pub struct Shape {
    pub tags: Vec<Tag>,
    /// The ethertype after the tags; `None`: the network layer's own.
    pub ethertype: Option<u16>,
    pub net: Net,
    pub tcp: Tcp,
    pub fragments: Vec<Fragment>,
}

/// What tells one phase's rendering of a case from every other: the TCP
/// sequence number, the IPv4 identification and the IPv6 fragment
/// identification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    pub seq: u32,
    pub ip_id: u16,
    pub frag_id: u32,
}

impl Shape {
    /// An unfragmented SYN with the options Linux sends (40 bytes of TCP).
    pub fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Shape {
        let net = match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Net::V4(V4 {
                src,
                dst,
                tos: 0,
                ttl: 64,
                dont_fragment: false,
                reserved_flag: false,
                options: Vec::new(),
                later_options: Vec::new(),
                protocol: TCP,
            }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Net::V6(V6 {
                src,
                dst,
                class_flow: 0,
                hop_limit: 64,
                chain: Vec::new(),
                later_keep_unfragmentable: true,
                protocol: TCP,
            }),
            _ => panic!("source and destination must be of one family"),
        };
        let tcp = Tcp {
            sport,
            dport,
            ack: 0,
            flags: SYN,
            reserved: 0,
            data_offset: None,
            window: 64240,
            urgent: 0,
            options: LINUX_SYN_OPTIONS.to_vec(),
            payload: Vec::new(),
            decoy_flags: ACK,
        };
        Shape {
            tags: Vec::new(),
            ethertype: None,
            net,
            tcp,
            fragments: Vec::new(),
        }
        .whole()
    }

    pub fn with(mut self, f: impl FnOnce(&mut Shape)) -> Shape {
        f(&mut self);
        self
    }

    pub fn tags(self, tags: Vec<Tag>) -> Shape {
        self.with(|s| s.tags = tags)
    }

    /// IPv4 options, in every fragment (an IPv4 shape only).
    pub fn ipv4_options(self, options: &[u8]) -> Shape {
        self.with(|s| match &mut s.net {
            Net::V4(v4) => (v4.options, v4.later_options) = (options.to_vec(), options.to_vec()),
            Net::V6(_) => panic!("an IPv6 shape has no IPv4 options"),
        })
    }

    /// The IPv6 extension headers (an IPv6 shape only); unfragmented
    /// until [`Shape::fragments`] says otherwise.
    pub fn chain(self, chain: Vec<Ext>) -> Shape {
        self.with(|s| match &mut s.net {
            Net::V6(v6) => v6.chain = chain,
            Net::V4(_) => panic!("an IPv4 shape has no extension headers"),
        })
        .whole()
    }

    pub fn fragments(self, fragments: Vec<Fragment>) -> Shape {
        self.with(|s| s.fragments = fragments)
    }

    /// One frame carrying the whole datagram.
    pub fn whole(self) -> Shape {
        let len = self.datagram_len();
        self.fragments(vec![Fragment::whole(len)])
    }

    pub fn datagram_len(&self) -> usize {
        self.datagram(Ids {
            seq: 0,
            ip_id: 0,
            frag_id: 0,
        })
        .0
        .len()
    }

    pub fn src(&self) -> IpAddr {
        match &self.net {
            Net::V4(v4) => v4.src.into(),
            Net::V6(v6) => v6.src.into(),
        }
    }

    pub fn dst(&self) -> IpAddr {
        match &self.net {
            Net::V4(v4) => v4.dst.into(),
            Net::V6(v6) => v6.dst.into(),
        }
    }

    /// The TCP segment's length, header and payload.
    pub fn segment_len(&self) -> usize {
        20 + self.tcp.options.len() + self.tcp.payload.len()
    }

    /// The datagram the kernel reassembles and its decoy twin.
    pub fn datagram(&self, ids: Ids) -> (Vec<u8>, Vec<u8>) {
        let (segment, decoy) = self.segments(ids.seq);
        match &self.net {
            Net::V4(_) => (segment, decoy),
            Net::V6(v6) => {
                let after = match v6.chain.iter().position(|e| *e == Ext::Split) {
                    Some(split) => &v6.chain[split + 1..],
                    None => &[][..],
                };
                let head = encode_chain(after, v6.protocol, ids.frag_id);
                ([head.clone(), segment].concat(), [head, decoy].concat())
            }
        }
    }

    /// The frames of this case, in sending order.
    pub fn frames(&self, ids: Ids) -> Vec<Vec<u8>> {
        let (datagram, decoy) = self.datagram(ids);
        self.fragments
            .iter()
            .map(|f| self.frame(f, &datagram, &decoy, ids))
            .collect()
    }

    /// The real segment and the decoy with the same checksum.
    fn segments(&self, seq: u32) -> (Vec<u8>, Vec<u8>) {
        let t = &self.tcp;
        let header_len = 20 + t.options.len();
        let data_offset = t.data_offset.unwrap_or((header_len / 4) as u8);
        let mut s = Vec::with_capacity(header_len + t.payload.len());
        s.extend_from_slice(&t.sport.to_be_bytes());
        s.extend_from_slice(&t.dport.to_be_bytes());
        s.extend_from_slice(&seq.to_be_bytes());
        s.extend_from_slice(&t.ack.to_be_bytes());
        s.push(data_offset << 4 | (t.reserved & 0x0f));
        s.push(t.flags);
        s.extend_from_slice(&t.window.to_be_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&t.urgent.to_be_bytes());
        s.extend_from_slice(&t.options);
        s.extend_from_slice(&t.payload);
        let (src, dst) = match &self.net {
            Net::V4(v4) => (v4.src.octets().to_vec(), v4.dst.octets().to_vec()),
            Net::V6(v6) => (v6.src.octets().to_vec(), v6.dst.octets().to_vec()),
        };
        let pseudo = frames::ones_sum(&[src, dst].concat(), u32::from(TCP) + s.len() as u32);
        let sum = !frames::fold(frames::ones_sum(&s, pseudo));
        s[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut decoy = s.clone();
        decoy[13] = t.decoy_flags;
        // One's-complement arithmetic: what the flags word gains, the
        // window word gives up, so the decoy's checksum stays valid.
        let gain = (u32::from(t.decoy_flags) + 0xffff - u32::from(t.flags)) % 0xffff;
        let window = (u32::from(t.window) + 0xffff - gain) % 0xffff;
        decoy[14..16].copy_from_slice(&(window as u16).to_be_bytes());
        (s, decoy)
    }

    fn frame(&self, f: &Fragment, datagram: &[u8], decoy: &[u8], ids: Ids) -> Vec<u8> {
        let byte = |i: usize| {
            if i >= f.decoy_from {
                decoy.get(i)
            } else {
                datagram.get(i)
            }
            .copied()
            .unwrap_or(0)
        };
        let data: Vec<u8> = (f.offset..f.end()).map(byte).collect();
        let (ethertype, mut packet) = match &self.net {
            Net::V4(v4) => (ETH_P_IP, ipv4_packet(v4, f, &data, ids.ip_id)),
            Net::V6(v6) => (ETH_P_IPV6, ipv6_packet(v6, f, &data, ids.frag_id)),
        };
        match &f.pad {
            Pad::None => {}
            Pad::Bytes(bytes) => packet.extend_from_slice(bytes),
            Pad::Decoy(n) => {
                packet.extend((f.end()..f.end() + n).map(|i| decoy.get(i).copied().unwrap_or(0)))
            }
        }
        let mut frame = Vec::with_capacity(14 + 4 * self.tags.len() + packet.len());
        frame.extend_from_slice(&SERVER_MAC);
        frame.extend_from_slice(&CLIENT_MAC);
        for tag in &self.tags {
            frame.extend_from_slice(&tag.tpid.to_be_bytes());
            frame.extend_from_slice(&tag.tci.to_be_bytes());
        }
        frame.extend_from_slice(&self.ethertype.unwrap_or(ethertype).to_be_bytes());
        frame.extend_from_slice(&packet);
        frame
    }

    /// One line saying what the case is, for failure reports.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tags.is_empty() {
            let tags: Vec<String> = self
                .tags
                .iter()
                .map(|t| format!("{:04x}/{}", t.tpid, t.vid()))
                .collect();
            parts.push(format!("tags {}", tags.join(",")));
        }
        if let Some(ethertype) = self.ethertype {
            parts.push(format!("ethertype {ethertype:#06x}"));
        }
        match &self.net {
            Net::V4(v4) => {
                parts.push(format!("{} > {}", v4.src, v4.dst));
                if !v4.options.is_empty() {
                    parts.push(format!("ip options {}", hex(&v4.options)));
                }
                if v4.protocol != TCP {
                    parts.push(format!("protocol {}", v4.protocol));
                }
            }
            Net::V6(v6) => {
                parts.push(format!("{} > {}", v6.src, v6.dst));
                if !v6.chain.is_empty() {
                    let chain: Vec<String> = v6.chain.iter().map(describe_ext).collect();
                    parts.push(format!("chain {}", chain.join(",")));
                }
                if v6.protocol != TCP {
                    parts.push(format!("next header {}", v6.protocol));
                }
            }
        }
        let t = &self.tcp;
        parts.push(format!(
            "flags {:#04x} (decoy {:#04x}) {} > {}",
            t.flags, t.decoy_flags, t.sport, t.dport
        ));
        if !t.options.is_empty() || !t.payload.is_empty() {
            parts.push(format!(
                "tcp options {} payload {}",
                t.options.len(),
                t.payload.len()
            ));
        }
        if self.fragments.len() > 1 || self.fragments.iter().any(|f| f.more || f.offset != 0) {
            let frags: Vec<String> = self.fragments.iter().map(describe_fragment).collect();
            parts.push(format!("fragments {}", frags.join(" ")));
        } else if let Some(f) = self
            .fragments
            .first()
            .filter(|f| f.pad != Pad::None || f.length_skew != 0)
        {
            parts.push(describe_fragment(f));
        }
        parts.join("; ")
    }
}

fn describe_ext(ext: &Ext) -> String {
    match ext {
        Ext::HopByHop(body) => format!("hbh{}", body.len() + 2),
        Ext::DestOpts(body) => format!("dst{}", body.len() + 2),
        Ext::Routing {
            kind,
            segments_left,
            data,
        } => format!("rt{kind}/{segments_left}/{}", data.len() + 4),
        Ext::Fragment { offset, more } => format!("frag{offset}{}", if *more { "+" } else { "" }),
        Ext::Split => "FRAG".into(),
    }
}

fn describe_fragment(f: &Fragment) -> String {
    let mut text = format!(
        "[{}..{}{}",
        f.offset,
        f.end(),
        if f.more { " MF" } else { "" }
    );
    if f.decoy_from < f.end() {
        text.push_str(&format!(" decoy from {}", f.decoy_from));
    }
    if f.length_skew != 0 {
        text.push_str(&format!(" length {:+}", f.length_skew));
    }
    match &f.pad {
        Pad::None => {}
        Pad::Bytes(b) => text.push_str(&format!(" pad {}", b.len())),
        Pad::Decoy(n) => text.push_str(&format!(" decoy pad {n}")),
    }
    text.push(']');
    text
}

/// Extension headers in order, the last pointing at `last_next`.
fn encode_chain(chain: &[Ext], last_next: u8, id: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (i, ext) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(last_next, Ext::code);
        bytes.extend(ext.encode(next, id));
    }
    bytes
}

fn ipv4_packet(v4: &V4, f: &Fragment, data: &[u8], id: u16) -> Vec<u8> {
    let options = if f.offset == 0 {
        &v4.options
    } else {
        &v4.later_options
    };
    let header_len = 20 + options.len();
    let total = (header_len + data.len()) as i32 + i32::from(f.length_skew);
    let flags = u16::from(v4.reserved_flag) << 15
        | u16::from(v4.dont_fragment) << 14
        | u16::from(f.more) << 13;
    let mut p = Vec::with_capacity(header_len + data.len());
    p.push(0x40 | (header_len / 4) as u8);
    p.push(v4.tos);
    p.extend_from_slice(&(total.clamp(0, 0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&(flags | (f.offset / 8) as u16).to_be_bytes());
    p.extend_from_slice(&[v4.ttl, v4.protocol, 0, 0]);
    p.extend_from_slice(&v4.src.octets());
    p.extend_from_slice(&v4.dst.octets());
    p.extend_from_slice(options);
    let sum = !frames::fold(frames::ones_sum(&p, 0));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(data);
    p
}

fn ipv6_packet(v6: &V6, f: &Fragment, data: &[u8], id: u32) -> Vec<u8> {
    let split = v6.chain.iter().position(|e| *e == Ext::Split);
    let mut headers = Vec::new();
    let first_next = match split {
        None => {
            headers = encode_chain(&v6.chain, v6.protocol, id);
            v6.chain.first().map_or(v6.protocol, Ext::code)
        }
        Some(at) => {
            let before = if f.offset == 0 || v6.later_keep_unfragmentable {
                &v6.chain[..at]
            } else {
                &[][..]
            };
            headers.extend(encode_chain(before, FRAGMENT, id));
            let next = v6.chain.get(at + 1).map_or(v6.protocol, Ext::code);
            headers.extend(fragment_header(next, (f.offset / 8) as u16, f.more, id));
            before.first().map_or(FRAGMENT, Ext::code)
        }
    };
    let payload_len = (headers.len() + data.len()) as i32 + i32::from(f.length_skew);
    let mut p = Vec::with_capacity(40 + headers.len() + data.len());
    p.extend_from_slice(&(0x6000_0000 | (v6.class_flow & 0x0fff_ffff)).to_be_bytes());
    p.extend_from_slice(&(payload_len.clamp(0, 0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&[first_next, v6.hop_limit]);
    p.extend_from_slice(&v6.src.octets());
    p.extend_from_slice(&v6.dst.octets());
    p.extend_from_slice(&headers);
    p.extend_from_slice(data);
    p
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{checksums_valid, FIN, RST};

    const IDS: Ids = Ids {
        seq: 0x1234_5678,
        ip_id: 7,
        frag_id: 9,
    };

    /// The segment and its decoy both carry a valid checksum, whatever the
    /// flags and window (the decoy's window absorbs the flags' change).
    #[test]
    fn segment_and_decoy_checksums_are_valid() {
        let pairs = [
            ("198.51.100.1", "192.0.2.1"),
            ("2001:db8:100::1", "2001:db8::1"),
        ];
        for (src, dst) in pairs {
            for (flags, decoy, window) in [
                (SYN, ACK, 0),
                (SYN, RST, 1),
                (SYN, FIN | ACK, 0xffff),
                (0xff, 0, 0x1234),
                (0, 0xff, 7),
            ] {
                let shape =
                    Shape::syn(src.parse().unwrap(), dst.parse().unwrap(), 1234, 25).with(|s| {
                        (s.tcp.flags, s.tcp.decoy_flags, s.tcp.window) = (flags, decoy, window);
                    });
                let len = shape.datagram_len();
                let real = &shape.frames(IDS)[0];
                let decoyed = shape
                    .fragments(vec![Fragment {
                        decoy_from: 0,
                        ..Fragment::whole(len)
                    }])
                    .frames(IDS);
                let l4 = if src.contains(':') { 54 } else { 34 };
                assert!(
                    checksums_valid(real),
                    "{src} flags {flags:#x} window {window}"
                );
                assert!(
                    checksums_valid(&decoyed[0]),
                    "{src} decoy {decoy:#x} window {window}"
                );
                assert_eq!((real[l4 + 13], decoyed[0][l4 + 13]), (flags, decoy));
            }
        }
    }
}
