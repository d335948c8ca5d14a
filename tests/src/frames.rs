//! Builds Ethernet frames byte by byte, with the header combinations an
//! ISP's wire carries: VLAN tags, IPv4 options and fragments, IPv6
//! extension headers. Checksums are left zero: the gate never checks them.

use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// One frame's description; `build` lays it out.
#[derive(Clone, Debug)]
pub struct Packet {
    /// TPIDs of the VLAN tags, outermost first.
    pub vlan_tags: Vec<u16>,
    /// Ethertype after the tags; derived from `src` when None.
    pub ethertype: Option<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Bytes of IPv4 options (a multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// Fragment offset in 8-byte units (IPv4 header, or an IPv6 fragment header).
    pub fragment_offset: u16,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<u8>,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub tcp_flags: u8,
    /// Bytes of TCP options (a multiple of 4).
    pub tcp_options: usize,
}

impl Packet {
    /// A connection-opening SYN from `src` to `dst:dport`.
    pub fn syn(src: &str, dst: &str, dport: u16) -> Packet {
        Packet {
            vlan_tags: Vec::new(),
            ethertype: None,
            src: src.parse().expect("address"),
            dst: dst.parse().expect("address"),
            ipv4_options: 0,
            fragment_offset: 0,
            ipv6_ext: Vec::new(),
            protocol: TCP,
            sport: 40000,
            dport,
            seq: 0x1234_5678,
            tcp_flags: SYN,
            tcp_options: 20,
        }
    }

    pub fn with(mut self, f: impl FnOnce(&mut Packet)) -> Packet {
        f(&mut self);
        self
    }

    /// The frame, and the offsets where each header starts (Ethernet, each
    /// VLAN tag, IP, each extension header, transport) plus the frame length.
    pub fn build_with_boundaries(&self) -> (Vec<u8>, Vec<usize>) {
        let mut frame = Vec::new();
        let mut boundaries = vec![0];
        frame.extend_from_slice(&SERVER_MAC);
        frame.extend_from_slice(&CLIENT_MAC);
        let inner = self.ethertype.unwrap_or(if self.src.is_ipv4() {
            ETH_P_IP
        } else {
            ETH_P_IPV6
        });
        let mut types: Vec<u16> = self.vlan_tags.clone();
        types.push(inner);
        frame.extend_from_slice(&types[0].to_be_bytes());
        for (i, _) in self.vlan_tags.iter().enumerate() {
            boundaries.push(frame.len());
            frame.extend_from_slice(&(100 + i as u16).to_be_bytes()); // VLAN id
            frame.extend_from_slice(&types[i + 1].to_be_bytes());
        }
        boundaries.push(frame.len());
        let transport = self.transport();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let header_len = 20 + self.ipv4_options;
                frame.push(0x40 | (header_len / 4) as u8);
                frame.push(0);
                frame.extend_from_slice(&((header_len + transport.len()) as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 1]);
                frame.extend_from_slice(&self.fragment_offset.to_be_bytes());
                frame.extend_from_slice(&[64, self.protocol, 0, 0]);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
                // NOP options, then end-of-list.
                frame.extend(std::iter::repeat_n(1u8, self.ipv4_options));
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let ext_len: usize = self.ipv6_ext.len() * 8;
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&((ext_len + transport.len()) as u16).to_be_bytes());
                frame.push(*self.ipv6_ext.first().unwrap_or(&self.protocol));
                frame.push(64);
                frame.extend_from_slice(&s.octets());
                frame.extend_from_slice(&d.octets());
                for (i, &kind) in self.ipv6_ext.iter().enumerate() {
                    boundaries.push(frame.len());
                    let next = *self.ipv6_ext.get(i + 1).unwrap_or(&self.protocol);
                    if kind == FRAGMENT {
                        frame.extend_from_slice(&[next, 0]);
                        frame.extend_from_slice(&(self.fragment_offset << 3).to_be_bytes());
                        frame.extend_from_slice(&[0, 0, 0, 1]);
                    } else {
                        // Eight bytes: next header, length 0 (= 8 bytes), PadN.
                        frame.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
            }
            _ => panic!("source and destination must be of one family"),
        }
        boundaries.push(frame.len());
        frame.extend_from_slice(&transport);
        boundaries.push(frame.len());
        (frame, boundaries)
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_boundaries().0
    }

    fn transport(&self) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        if self.protocol != TCP {
            t.extend_from_slice(&[0, 8, 0, 0]);
            return t;
        }
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&[0; 4]);
        t.push((((20 + self.tcp_options) / 4) as u8) << 4);
        t.push(self.tcp_flags);
        t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        // MSS option, then NOPs.
        if self.tcp_options >= 4 {
            t.extend_from_slice(&[2, 4, 0x05, 0xb4]);
            t.extend(std::iter::repeat_n(1u8, self.tcp_options - 4));
        }
        t
    }
}

/// The TCP header of an Ethernet frame holding an untagged, option-free
/// IPv4 or IPv6 packet: (source port, destination port, seq, ack, flags).
pub fn tcp_fields(frame: &[u8]) -> Option<(u16, u16, u32, u32, u8)> {
    let l3 = 14;
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l4 = match ethertype {
        ETH_P_IP => l3 + usize::from(frame.get(l3)? & 0x0f) * 4,
        ETH_P_IPV6 => l3 + 40,
        _ => return None,
    };
    let t = frame.get(l4..l4 + 20)?;
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
        u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        t[13],
    ))
}

/// The TCP options of a frame [`tcp_fields`] reads, as (kind, data)
/// pairs in their order; padding (NOP, end of list) left out.
pub fn tcp_options(frame: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let l4 = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ETH_P_IP => 14 + usize::from(frame.get(14)? & 0x0f) * 4,
        ETH_P_IPV6 => 14 + 40,
        _ => return None,
    };
    let header_len = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let mut options = frame.get(l4 + 20..l4 + header_len)?;
    let mut found = Vec::new();
    while let [kind, rest @ ..] = options {
        match kind {
            0 => break,
            1 => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                found.push((*kind, rest.get(1..len.checked_sub(1)?)?.to_vec()));
                options = options.get(len..)?;
            }
        }
    }
    Some(found)
}

/// The Internet checksum's 16-bit one's-complement sum of `bytes`, added to
/// `init`, not yet folded.
pub fn ones_sum(bytes: &[u8], init: u32) -> u32 {
    bytes.chunks(2).fold(init, |acc, c| {
        acc + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
    })
}

/// Folds a [`ones_sum`] into 16 bits; its complement is the checksum.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Fills in the checksums of an untagged, option-free IPv4 or IPv6 frame
/// as a sending stack would: IPv4's header checksum, and TCP's.
pub fn fill_checksums(frame: &mut [u8]) {
    const IP: usize = 14;
    let (pseudo, l4) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IPV6 => (IP + 8..IP + 40, IP + 40),
        _ => {
            frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
            let ip_sum = !fold(ones_sum(&frame[IP..IP + 20], 0));
            frame[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
            (IP + 12..IP + 20, IP + 20)
        }
    };
    let tcp_len = frame.len() - l4;
    frame[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let pseudo = ones_sum(&frame[pseudo], u32::from(TCP) + tcp_len as u32);
    let tcp_sum = !fold(ones_sum(&frame[l4..], pseudo));
    frame[l4 + 16..l4 + 18].copy_from_slice(&tcp_sum.to_be_bytes());
}

/// Whether the IPv4 header checksum and the TCP checksum of an untagged,
/// option-free reply are right (what a receiving stack would check).
pub fn checksums_valid(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let (pseudo, l4) = match ethertype {
        ETH_P_IP => {
            let ip = &frame[14..34];
            if fold(ones_sum(ip, 0)) != 0xffff {
                return false;
            }
            let tcp_len = u16::from_be_bytes([ip[2], ip[3]]) as usize - 20;
            (
                ones_sum(&ip[12..20], u32::from(TCP) + tcp_len as u32),
                &frame[34..34 + tcp_len],
            )
        }
        ETH_P_IPV6 => {
            let ip = &frame[14..54];
            let tcp_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            (
                ones_sum(&ip[8..40], u32::from(TCP) + tcp_len as u32),
                &frame[54..54 + tcp_len],
            )
        }
        _ => return false,
    };
    fold(ones_sum(l4, pseudo)) == 0xffff
}
