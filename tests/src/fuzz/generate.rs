//! The structure-aware generator: random but well-formed enough that a good
//! share of its cases reach a listener when no gate is in the way, and odd
//! enough to cover what a parser forgets: deep VLAN stacks, every IHL and
//! IPv4 option, fragments of every size in every order (tiny, truncated,
//! duplicate, overlapping, missing), long IPv6 chains of every kind with a
//! fragment header anywhere, Ethernet padding after a short IP length, and
//! every TCP flag combination.
//!
//! Every choice is drawn from the case's own [`Rng`], so a seed and a case
//! number rebuild the same shape.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    lab,
    rng::Rng,
    shape::{
        pad_options, Ext, Fragment, Net, Pad, Shape, Tag, Tcp, LINUX_SYN_OPTIONS, SKIPPABLE_OPTION,
        V4, V6,
    },
};
use crate::frames::{
    ACK, CWR, ECE, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FIN, PSH, RST, SYN,
    TCP, UDP, URG,
};

/// Most IPv6 extension-header bytes one case carries: with the largest
/// segment and a VLAN stack every frame still fits a 1500-byte MTU.
const CHAIN_BUDGET: usize = 900;
/// Longest TCP payload (SYNs may carry data).
const MAX_PAYLOAD: usize = 256;

/// Case `index` of the run seeded with `seed`.
pub fn case(seed: u64, index: u64) -> Shape {
    shape(&mut Rng::for_case(seed, index))
}

pub fn shape(rng: &mut Rng) -> Shape {
    let tags = tags(rng);
    let v6 = rng.chance(50);
    let ethertype = rng
        .chance(2)
        .then(|| rng.pick(&[ETH_P_ARP, if v6 { ETH_P_IP } else { ETH_P_IPV6 }, 0x9100]));
    let tcp = tcp(rng);
    let fragmented = rng.chance(if v6 { 40 } else { 45 });
    let net = if v6 {
        Net::V6(ipv6(rng, fragmented))
    } else {
        Net::V4(ipv4(rng))
    };
    let mut shape = Shape {
        tags,
        ethertype,
        net,
        tcp,
        fragments: Vec::new(),
    };
    let len = shape.datagram_len();
    // Where the fixed TCP header ends in the datagram (behind any IPv6
    // headers that follow the fragment header).
    let header_end = len - shape.segment_len() + 20;
    shape.fragments = if fragmented {
        fragments(rng, len, header_end, v6)
    } else {
        vec![Fragment::whole(len)]
    };
    for fragment in &mut shape.fragments {
        dress(rng, fragment);
    }
    shape
}

/// Priority tags (VLAN 0, any priority and drop-eligible bits): a kernel
/// without VLAN interfaces strips them, up to 8 deep. Now and then one tag
/// has a real VLAN ID (the kernel drops the frame) or a TPID the kernel
/// does not take for VLAN.
fn tags(rng: &mut Rng) -> Vec<Tag> {
    let depth = rng.spread(&[(35, (0, 0)), (15, (1, 1)), (15, (2, 2)), (35, (3, 12))]);
    let mut tags: Vec<Tag> = (0..depth)
        .map(|_| Tag {
            tpid: rng.weighted(&[(65, ETH_P_8021Q), (35, ETH_P_8021AD)]),
            tci: rng.u16() & 0xf000,
        })
        .collect();
    if depth > 0 && rng.chance(12) {
        let odd = rng.range(0, depth - 1);
        if rng.chance(50) {
            tags[odd].tci |= rng.range(1, 4095) as u16;
        } else {
            tags[odd].tpid = rng.pick(&[0x9100, 0x9200]);
        }
    }
    tags
}

fn tcp(rng: &mut Rng) -> Tcp {
    // Now and then any port at all.
    let dport = rng.weighted(&[
        (45, Some(25)),
        (32, Some(587)),
        (20, Some(lab::UNGATED_PORT)),
        (3, None),
    ]);
    let flags = match rng.below(100) {
        0..76 => SYN,
        76..86 => {
            SYN | [PSH, URG, ECE, CWR, FIN, RST]
                .iter()
                .filter(|_| rng.chance(40))
                .fold(0, |a, f| a | f)
        }
        _ => rng.byte(),
    };
    Tcp {
        sport: rng.range(1024, 65535) as u16,
        dport: dport.unwrap_or_else(|| rng.u16()),
        ack: rng.u32(),
        flags,
        reserved: if rng.chance(95) { 0 } else { rng.byte() & 0x0f },
        data_offset: rng.chance(2).then(|| rng.range(0, 15) as u8),
        window: rng.u16(),
        urgent: if rng.chance(90) { 0 } else { rng.u16() },
        options: tcp_options(rng),
        payload: if rng.chance(70) {
            Vec::new()
        } else {
            random_bytes(rng, 1, MAX_PAYLOAD)
        },
        decoy_flags: rng.pick(&[ACK, 0, RST | ACK, PSH | ACK, FIN | ACK, RST]),
    }
}

fn tcp_options(rng: &mut Rng) -> Vec<u8> {
    let mut options = match rng.below(100) {
        0..25 => Vec::new(),
        25..60 => vec![2, 4, 0x05, 0xb4],
        60..80 => {
            let mut o = LINUX_SYN_OPTIONS.to_vec();
            o[8..12].copy_from_slice(&rng.u32().to_be_bytes());
            o
        }
        80..92 => {
            let mut o = Vec::new();
            while o.len() < 30 && rng.chance(70) {
                let len = rng.range(2, 10);
                o.push(rng.range(2, 254) as u8);
                o.push(len as u8);
                o.extend(rng.bytes(len - 2));
            }
            o
        }
        _ => random_words(rng),
    };
    while options.len() % 4 != 0 {
        options.push(1);
    }
    options.truncate(40);
    options
}

fn source_v4(rng: &mut Rng) -> Ipv4Addr {
    if rng.chance(8) {
        lab::GRANTED_V4
    } else {
        lab::stranger_v4(rng.range(1, 254) as u8)
    }
}

fn source_v6(rng: &mut Rng) -> Ipv6Addr {
    if rng.chance(8) {
        lab::GRANTED_V6
    } else {
        lab::stranger_v6(rng.next_u64() | 1)
    }
}

/// The listening address mostly, sometimes the server's second address,
/// rarely an address no host has.
fn destination(rng: &mut Rng, v6: bool) -> IpAddr {
    let choice = rng.weighted(&[(82, 0), (15, 1), (3, 2)]);
    lab::destinations(v6)[choice]
}

fn ipv4(rng: &mut Rng) -> V4 {
    let options = ipv4_options(rng);
    let IpAddr::V4(dst) = destination(rng, false) else {
        unreachable!("an IPv4 destination")
    };
    V4 {
        src: source_v4(rng),
        dst,
        tos: if rng.chance(90) { 0 } else { rng.byte() },
        ttl: rng.range(1, 255) as u8,
        dont_fragment: rng.chance(30),
        reserved_flag: rng.chance(3),
        later_options: if rng.chance(70) {
            Vec::new()
        } else {
            options.clone()
        },
        options,
        protocol: if rng.chance(97) {
            TCP
        } else {
            rng.pick(&[UDP, 1, 255])
        },
    }
}

fn ipv4_options(rng: &mut Rng) -> Vec<u8> {
    let mut options = match rng.below(100) {
        0..55 => return Vec::new(),
        55..78 => {
            let mut o = vec![1; 4 * rng.range(1, 10)];
            if rng.chance(50) {
                let eol = rng.range(0, o.len() - 1);
                o[eol] = 0;
            }
            o
        }
        78..95 => match rng.below(3) {
            // Record route, timestamp, router alert: well-formed, empty.
            0 => {
                let slots = rng.range(1, 9);
                let mut o = vec![7, (3 + 4 * slots) as u8, 4];
                o.extend(vec![0; 4 * slots]);
                o
            }
            1 => {
                let slots = rng.range(1, 9);
                let mut o = vec![68, (4 + 4 * slots) as u8, 5, 0];
                o.extend(vec![0; 4 * slots]);
                o
            }
            _ => vec![148, 4, 0, 0],
        },
        _ => random_words(rng),
    };
    while options.len() % 4 != 0 {
        options.push(0);
    }
    options.truncate(40);
    options
}

fn ipv6(rng: &mut Rng, fragmented: bool) -> V6 {
    let IpAddr::V6(dst) = destination(rng, true) else {
        unreachable!("an IPv6 destination")
    };
    let depth = rng.spread(&[(40, (0, 0)), (25, (1, 2)), (15, (3, 6)), (20, (7, 25))]);
    let mut budget = CHAIN_BUDGET;
    let mut chain: Vec<Ext> = (0..depth).map(|i| ext(rng, i == 0, &mut budget)).collect();
    if fragmented {
        let at = rng.range(0, chain.len());
        chain.insert(at, Ext::Split);
    }
    V6 {
        src: source_v6(rng),
        dst,
        class_flow: if rng.chance(80) { 0 } else { rng.u32() },
        hop_limit: rng.range(1, 255) as u8,
        chain,
        later_keep_unfragmentable: rng.chance(70),
        protocol: if rng.chance(97) {
            TCP
        } else {
            rng.pick(&[UDP, 59, 58])
        },
    }
}

#[derive(Clone, Copy)]
enum ExtKind {
    HopByHop,
    DestOpts,
    Routing,
    FragmentHeader,
}

fn ext(rng: &mut Rng, first: bool, budget: &mut usize) -> Ext {
    use ExtKind::*;
    // Hop-by-hop is valid only first; elsewhere the kernel refuses it.
    let kind = if first {
        rng.weighted(&[
            (25, HopByHop),
            (45, DestOpts),
            (25, Routing),
            (5, FragmentHeader),
        ])
    } else {
        rng.weighted(&[
            (2, HopByHop),
            (60, DestOpts),
            (30, Routing),
            (8, FragmentHeader),
        ])
    };
    let units = rng
        .spread(&[(65, (0, 0)), (25, (1, 3)), (10, (4, 30))])
        .min((*budget / 8).saturating_sub(1));
    *budget = budget.saturating_sub(8 * (units + 1));
    match kind {
        HopByHop => Ext::HopByHop(option_body(rng, 8 * units + 6, true)),
        DestOpts => Ext::DestOpts(option_body(rng, 8 * units + 6, false)),
        Routing => {
            // Types 0 and 253/254 (experimental) with no segments left are
            // skipped by the kernel; 2, 3 and 4 it handles or refuses; now
            // and then any type at all.
            let kind = rng
                .weighted(&[
                    (45, Some(0)),
                    (25, Some(253)),
                    (10, Some(254)),
                    (5, Some(4)),
                    (5, Some(2)),
                    (3, Some(3)),
                    (7, None),
                ])
                .unwrap_or_else(|| rng.byte());
            let segments_left = if rng.chance(95) {
                0
            } else {
                rng.range(1, 5) as u8
            };
            let mut data = rng.bytes(8 * units.min(4) + 4);
            if rng.chance(70) {
                data[..4].fill(0);
            }
            Ext::Routing {
                kind,
                segments_left,
                data,
            }
        }
        // Mostly atomic.
        FragmentHeader if rng.chance(95) => Ext::Fragment {
            offset: 0,
            more: false,
        },
        FragmentHeader => Ext::Fragment {
            offset: rng.range(1, 100) as u16,
            more: rng.chance(50),
        },
    }
}

/// Options filling `len` bytes. Mostly what the kernel accepts (RFC 8200
/// as Linux enforces it: at most 8 options, at most 7 bytes of padding in a
/// row, PadN of zeros; unknown types whose top bits say "skip"), sometimes
/// not.
fn option_body(rng: &mut Rng, len: usize, hop_by_hop: bool) -> Vec<u8> {
    if rng.chance(3) {
        return if rng.chance(50) {
            rng.bytes(len)
        } else {
            let any = rng.byte();
            let mut body = vec![rng.pick(&[0x5e, 0x9e, 0xde, any]), (len - 2) as u8];
            body.extend(rng.bytes(len - 2));
            body
        };
    }
    let mut body = Vec::with_capacity(len);
    let mut count = 0;
    while body.len() < len {
        let left = len - body.len();
        if left <= 7 {
            pad_options(&mut body, left);
            break;
        }
        let most = (left - 2).min(255);
        let data = if count == 7 || rng.chance(50) {
            most
        } else {
            rng.range(0, most)
        };
        if hop_by_hop && data >= 2 && rng.chance(20) {
            body.extend_from_slice(&[5, 2, 0, 0]); // router alert
        } else {
            // 0x1e and 0x3e: experimental types a receiver skips.
            body.extend_from_slice(&[rng.pick(&[SKIPPABLE_OPTION, 0x3e]), data as u8]);
            body.extend(rng.bytes(data));
        }
        count += 1;
    }
    body
}

fn random_bytes(rng: &mut Rng, min: usize, max: usize) -> Vec<u8> {
    let len = rng.range(min, max);
    rng.bytes(len)
}

/// 4 to 40 random bytes, whole 32-bit words.
fn random_words(rng: &mut Rng) -> Vec<u8> {
    let words = rng.range(1, 10);
    rng.bytes(4 * words)
}

/// Splits a datagram of `len` bytes into fragments and mangles them: tiny
/// first fragments, non-last fragments not a multiple of 8 long (IPv4 keeps
/// only the multiple; the rest comes from the decoy), decoy first
/// fragments of 1 to 7 bytes, overlaps, duplicates, a missing fragment, and
/// any order of arrival. The fixed TCP header ends at `header_end`.
fn fragments(rng: &mut Rng, len: usize, header_end: usize, v6: bool) -> Vec<Fragment> {
    let last_cut = (len - 1) / 8;
    let whole_header = header_end.div_ceil(8).min(last_cut);
    let first = if v6 {
        // The kernel refuses an IPv6 first fragment without the whole
        // header chain and TCP header: mostly give it one.
        match rng.below(100) {
            0..15 => rng.range(1, (header_end - 20).div_ceil(8).clamp(1, last_cut)),
            15..25 => rng.range(1, 2.min(last_cut)),
            _ => rng.range(whole_header, last_cut),
        }
    } else {
        match rng.weighted(&[(35, 1), (20, 2), (10, 3), (35, 0)]) {
            0 => rng.range(1, last_cut),
            units => units.min(last_cut),
        }
    };
    let mut cuts = vec![first];
    let more_cuts = rng.range(0, 5.min(last_cut - first));
    for _ in 0..more_cuts {
        cuts.push(rng.range(first + 1, last_cut));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut bounds: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().map(|c| 8 * c))
        .collect();
    bounds.push(len);
    let mut pieces: Vec<Fragment> = bounds
        .windows(2)
        .map(|w| Fragment::real(w[0], w[1] - w[0], w[1] < len))
        .collect();
    for (i, piece) in pieces.iter_mut().enumerate().filter(|(_, p)| p.more) {
        // IPv4 cuts a non-last fragment to a multiple of 8; IPv6 refuses it.
        let percent = match (v6, i) {
            (true, _) => 3,
            (false, 0) => 35,
            (false, _) => 15,
        };
        if rng.chance(percent) {
            piece.decoy_from = piece.end();
            piece.len = (piece.len + rng.range(1, 7)).min(len - piece.offset);
        }
    }
    if pieces.len() > 1 && rng.chance(7) {
        let missing = rng.range(0, pieces.len() - 1);
        pieces.remove(missing);
    }
    let mut extra = Vec::new();
    if rng.chance(8) {
        extra.push(Fragment {
            decoy_from: 0,
            ..Fragment::real(0, rng.range(1, 7), true)
        });
    }
    if rng.chance(8) {
        let p = &pieces[rng.range(0, pieces.len() - 1)];
        let (start, end) = if rng.chance(50) {
            (p.offset.saturating_sub(8), p.end())
        } else {
            (p.offset, (p.end() + 8).min(len))
        };
        let decoy_from = if rng.chance(50) { start } else { usize::MAX };
        extra.push(Fragment {
            decoy_from,
            ..Fragment::real(start, end - start, end < len)
        });
    }
    if rng.chance(8) {
        let mut copy = pieces[rng.range(0, pieces.len() - 1)].clone();
        if rng.chance(50) {
            copy.decoy_from = copy.offset;
        }
        extra.push(copy);
    }
    if let Some(p) = pieces
        .iter()
        .find(|p| p.len >= 16)
        .filter(|_| rng.chance(5))
    {
        extra.push(Fragment {
            decoy_from: p.offset,
            ..Fragment::real(p.offset, 8, true)
        });
    }
    for fragment in extra {
        let at = rng.range(0, pieces.len());
        pieces.insert(at, fragment);
    }
    match rng.below(100) {
        0..45 => {}
        45..60 => pieces.reverse(),
        60..90 => rng.shuffle(&mut pieces),
        _ => {
            let last = pieces.len() - 1;
            pieces.swap(0, last);
        }
    }
    pieces
}

/// Ethernet padding after the IP packet, and now and then a length field
/// that does not match what the frame carries.
fn dress(rng: &mut Rng, fragment: &mut Fragment) {
    if rng.chance(20) {
        fragment.pad = match rng.below(10) {
            0..6 => Pad::Decoy(rng.range(1, 24)),
            6..8 => Pad::Bytes(vec![0; rng.range(1, 24)]),
            _ => Pad::Bytes(random_bytes(rng, 1, 24)),
        };
    }
    if rng.chance(2) {
        fragment.length_skew = [-8, -4, -1, 1, 4, 8][rng.range(0, 5)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::shape::Ids;

    const IDS: Ids = Ids {
        seq: 0x1000_0001,
        ip_id: 1,
        frag_id: 0x1000_0001,
    };

    #[test]
    fn same_seed_same_frames() {
        for index in 0..200 {
            assert_eq!(
                case(42, index).frames(IDS),
                case(42, index).frames(IDS),
                "case {index}"
            );
        }
        assert_ne!(case(42, 0).frames(IDS), case(43, 0).frames(IDS));
    }

    /// Every frame fits the veth's MTU: an oversized one would fail to send.
    #[test]
    fn every_frame_fits_the_mtu() {
        for index in 0..3000 {
            let shape = case(7, index);
            for frame in shape.frames(IDS) {
                assert!(
                    frame.len() <= 1514,
                    "case {index}: {} bytes: {}",
                    frame.len(),
                    shape.describe()
                );
            }
        }
    }

    /// Fragments stay inside the datagram and on 8-byte offsets.
    #[test]
    fn fragments_cover_the_datagram() {
        for index in 0..3000 {
            let shape = case(9, index);
            let len = shape.datagram(IDS).0.len();
            for f in &shape.fragments {
                assert!(
                    f.offset % 8 == 0 && f.end() <= len && f.len > 0,
                    "case {index}: {f:?} of {len}"
                );
            }
        }
    }
}
