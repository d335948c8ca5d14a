//! Issue 9's invariant, checked against the kernel's own stack: no frame (or
//! set of fragments) that the Linux stack takes as a connection-opening TCP
//! segment reaches a gated port without a grant, on either hook.
//!
//! Every row here is sent to a real listener twice over: with no gate,
//! where it must be answered with a SYN-ACK (else it is no way in and the
//! row is wrong), and through the gate on XDP and on TC, where it must not.
//! A bounded fuzz run does the same for thousands of generated cases. The
//! kernel-fact tests prove, with no gate, what the gate's design assumes.

use std::{net::IpAddr, time::Duration};

use anyhow::{anyhow, ensure, Result};
use smtpgate_tests::{
    frames::{ETH_P_8021AD, ETH_P_8021Q},
    fuzz::{
        campaign::{self, Settings},
        lab::{stranger_v4, stranger_v6, FuzzLab, Hook, GRANTED_V4, GRANTED_V6},
        oracle::{self, Answer},
        shape::{Ext, Fragment, Ids, Pad, Shape, Tag},
        Case,
    },
    raw::RawSocket,
    SERVER_V4, SERVER_V6,
};

/// Cases in the bounded run of the normal suite.
const BOUNDED_CASES: u64 = 3000;

fn server(v6: bool) -> IpAddr {
    (if v6 { SERVER_V6 } else { SERVER_V4 })
        .parse()
        .expect("a literal address")
}

/// A plain SYN to port 25 from a stranger (no grant); `n` tells rows apart.
fn stranger_syn(v6: bool, n: u16) -> Shape {
    let src = if v6 {
        stranger_v6(0x5000 + u64::from(n)).into()
    } else {
        stranger_v4(1 + (n % 250) as u8).into()
    };
    Shape::syn(src, server(v6), 30000 + n, 25)
}

/// A plain SYN to port 587 from the address the fuzz lab grants.
fn granted_syn(v6: bool, n: u16) -> Shape {
    let src = if v6 {
        GRANTED_V6.into()
    } else {
        GRANTED_V4.into()
    };
    Shape::syn(src, server(v6), 31000 + n, 587)
}

fn priority_tags(tpids: &[u16]) -> Vec<Tag> {
    tpids.iter().map(|&tpid| Tag { tpid, tci: 0 }).collect()
}

/// Fixed identifiers for row `n`: the top nibble of the sequence number is
/// 0, which no fuzz phase uses, so pasted fuzz rows never collide with these.
fn row_ids(n: usize) -> Ids {
    Ids {
        seq: 0x0500_0000 | n as u32,
        ip_id: 0xf000 | n as u16,
        frag_id: 0x0500_0000 | n as u32,
    }
}

fn cases(shapes: &[(&str, Shape)]) -> Vec<(String, Case)> {
    shapes
        .iter()
        .enumerate()
        .map(|(n, (name, shape))| (name.to_string(), Case::new(shape, row_ids(n))))
        .collect()
}

/// What each row got, in a fresh lab with no gate (`None`) or the gate on `hook`.
fn answers(rows: &[(String, Case)], gate: Option<Hook>) -> Result<Vec<Answer>> {
    let lab = FuzzLab::new(gate)?;
    let cases: Vec<Case> = rows.iter().map(|(_, c)| c.clone()).collect();
    Ok(oracle::answers(&lab.lab, &cases)?.per_case)
}

/// Every way in that was ever found: each must be one with no gate, and
/// closed with the gate on either hook.
fn ways_in() -> Result<Vec<(String, Case)>> {
    let v4 = |n| stranger_syn(false, n);
    let v6 = |n| stranger_syn(true, n);
    // A 40-byte segment: the fragments are [0, cut) with more to come, then [cut, 40).
    let split = |shape: Shape, cut: usize, reversed: bool| {
        let mut fragments = vec![
            Fragment::real(0, cut, true),
            Fragment::real(cut, 40 - cut, false),
        ];
        if reversed {
            fragments.reverse();
        }
        shape.fragments(fragments)
    };
    let mut rows = cases(&[
        // Linux strips priority tags, up to 8 of them (see
        // kernel_peels_at_most_eight_priority_tags).
        ("IPv4 behind 3 priority-tagged 802.1Q tags", v4(1).tags(priority_tags(&[ETH_P_8021Q; 3]))),
        ("IPv4 behind 6 priority-tagged 802.1Q tags", v4(2).tags(priority_tags(&[ETH_P_8021Q; 6]))),
        ("IPv4 behind 802.1ad + 802.1Q + 802.1Q priority tags", v4(3).tags(priority_tags(&[ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q]))),
        ("IPv6 behind 7 destination-options headers", v6(4).chain(vec![Ext::dest_opts(8); 7])),
        ("IPv6 behind 20 destination-options headers", v6(5).chain(vec![Ext::dest_opts(8); 20])),
        ("IPv6 behind 8 routing headers with no segments left", v6(6).chain(vec![Ext::spent_routing(); 8])),
        // RFC 1858's tiny fragments: the first holds too little TCP header
        // to show the flags, or all of it but the flags come later.
        ("IPv4 first fragment with 8 bytes of TCP, in order", split(v4(7), 8, false)),
        ("IPv4 first fragment with 8 bytes of TCP, last first", split(v4(8), 8, true)),
        ("IPv4 first fragment with 16 bytes of TCP, in order", split(v4(9), 16, false)),
        ("IPv4 first fragment with 16 bytes of TCP, last first", split(v4(10), 16, true)),
        // The kernel keeps only the first 8 of the 15 bytes (a non-last
        // fragment is cut to a multiple of 8); bytes 8..15 say ACK, and the
        // SYN comes in the fragment at offset 8.
        (
            "IPv4 first fragment with 15 bytes of TCP (an ACK past byte 8), then the rest from offset 8",
            v4(11).fragments(vec![
                Fragment { decoy_from: 8, ..Fragment::real(0, 15, true) },
                Fragment::real(8, 32, false),
            ]),
        ),
        // The IP length covers 8 bytes of TCP; the Ethernet padding after
        // it continues with the header of an ACK.
        (
            "IPv4 first fragment whose IP length ends after 8 bytes of TCP, padded with an ACK's header",
            v4(12).fragments(vec![Fragment { pad: Pad::Decoy(24), ..Fragment::real(0, 8, true) }, Fragment::real(8, 32, false)]),
        ),
        // See kernel_takes_an_ipv6_chain_that_continues_in_a_later_fragment.
        (
            "IPv6 first fragment ending inside destination options that another header follows",
            v6(13).chain(vec![Ext::Split, Ext::dest_opts(16), Ext::dest_opts(8)]).fragments(vec![
                Fragment::real(0, 8, true),
                Fragment::real(8, 56, false),
            ]),
        ),
        (
            "IPv6 first fragment whose chain ends between two extension headers",
            v6(14).chain(vec![Ext::Split, Ext::dest_opts(8), Ext::dest_opts(8)]).fragments(vec![
                Fragment::real(0, 8, true),
                Fragment::real(8, 48, false),
            ]),
        ),
    ]);
    rows.extend(found_by_the_fuzzer()?);
    Ok(rows)
}

/// Failures the fuzzer printed against the gate of commit 65f74fd, pasted
/// as it prints them (seed, case number, hook, what the case is): a 14-byte
/// first fragment whose bytes past 8 (dropped by the kernel) say RST; an
/// 8-byte first fragment, sent last, padded with an RST's header; IPv6 first
/// fragments that end inside the header chain, behind a routing header or
/// inside a 248-byte destination-options header.
fn found_by_the_fuzzer() -> Result<Vec<(String, Case)>> {
    let rows: Vec<(&str, Case)> = vec![
        ("seed 0x5eed case 300 on xdp: tags 8100/0; 198.51.100.144 > 192.0.2.1; flags 0x02 (decoy 0x04) 6241 > 25; fragments [0..14 MF decoy from 8] [8..16 MF] [16..20 decoy pad 17]", Case::from_hex("198.51.100.144", 6241, 0x2000012c, &[
            "02000000000102000000000281003000080045000022012c2000850627e5c6336490c0000201186100192000012c7094b91e5004",
            "0200000000010200000000028100300008004500001c012c2001850627eac6336490c00002017094b91e50023478",
            "02000000000102000000000281003000080045000018012c0002850647edc6336490c00002012b4c00000000000000000000000000000000000000",
        ])?),
        ("seed 0x5eed case 143 on xdp: 198.51.100.149 > 192.0.2.1; ip options 0101010101010101010101010101010101000101010101010101010101010101; flags 0x02 (decoy 0x04) 49566 > 587; tcp options 4 payload 0; fragments [8..24] [0..8 MF decoy pad 21]", Case::from_hex("198.51.100.149", 49566, 0x2000008f, &[
            "02000000000102000000000208004d000044008f00016f06464bc6336495c00002010101010101010101010101010101010101000101010101010101010101010101030102636002bb4b06340000020405b4",
            "02000000000102000000000208004d00003c008f20006f062654c6336495c00002010101010101010101010101010101010101000101010101010101010101010101c19e024b2000008f030102636004bb4906340000020405b40000000000",
        ])?),
        ("seed 0xfeed case 6731 on xdp: 2001:db8:100:0:b7eb:5d5b:2904:260d > 2001:db8::1; chain rt253/0/40,FRAG,dst24,rt254/0/8; flags 0x02 (decoy 0x04) 15748 > 25; fragments [24..52] [8..24 MF] [0..8 MF]", Case::from_hex("2001:db8:100:0:b7eb:5d5b:2904:260d", 15748, 0x20001a4b, &[
            "02000000000102000000000286dd60000000004c2bcb20010db801000000b7eb5d5b2904260d20010db80000000000000000000000012c04fd00000000004878e875ada2b55584d2c49ee443b8c213152b16562eb551d5ccb1aeb48272673c00001820001a4b0600fe00b8c0240b3d84001920001a4bfe3c9e6c5002909b49ea0000",
            "02000000000102000000000286dd6000000000402bcb20010db801000000b7eb5d5b2904260d20010db80000000000000000000000012c04fd00000000004878e875ada2b55584d2c49ee443b8c213152b16562eb551d5ccb1aeb48272673c00000920001a4b31bbf489c962d35200ff8221b2ec4df7",
            "02000000000102000000000286dd6000000000382bcb20010db801000000b7eb5d5b2904260d20010db80000000000000000000000012c04fd00000000004878e875ada2b55584d2c49ee443b8c213152b16562eb551d5ccb1aeb48272673c00000120001a4b2b021e14946dd706",
        ])?),
        ("seed 0xfeed case 4203 on xdp: 2001:db8:100:0:27b6:dfe7:c003:cbb > 2001:db8::1; chain FRAG,dst248,rt253/0/24; flags 0x02 (decoy 0x00) 50011 > 587; tcp options 36 payload 0; fragments [320..328] [304..320 MF] [248..304 MF] [216..248 MF] [0..216 MF]", Case::from_hex("2001:db8:100:0:27b6:dfe7:c003:cbb", 50011, 0x2000106b, &[
            "02000000000102000000000286dd6000000000102c4320010db80100000027b6dfe7c0030cbb20010db80000000000000000000000013c0001402000106b42071eec1c49ac01",
            "02000000000102000000000286dd6000000000182c4320010db80100000027b6dfe7c0030cbb20010db80000000000000000000000013c0001312000106b5722bd0848b085828be5d50684e53ff2",
            "02000000000102000000000286dd6000000000402c4320010db80100000027b6dfe7c0030cbb20010db80000000000000000000000013c0000f92000106b0602fd0000000000ef3a426fed05284a49532eb489b4ca30c35b024b2000106bab541b17e00252bd7a250000be074e81c019806e07c2df5a",
            "02000000000102000000000286dd6000000000282c4320010db80100000027b6dfe7c0030cbb20010db80000000000000000000000013c0000d92000106b8ff2746455405ddeb9f5f66bee6fa67a09898481f94309d92f8a8b0f4acb77e3",
            "02000000000102000000000286dd6000000000e02c4320010db80100000027b6dfe7c0030cbb20010db80000000000000000000000013c0000012000106b2b1e3e1528837b75779b2ba9c92f1e5096f44ef2b309cda0f01edd16aab0a84a44f195f0ec9bf947c7936259fd6dfdadfd37bd683e384171398fd78ddd7b70b9a5d3fcc65aad4ae3a4c0ab1fafab65dab2ccb4680e0ae9e2890f993e89cc16013b3997d4a5b1206f01e4feb709664b5e3847c79133442f74a6c1e5c039c242fe56a14a24eaf31ce74f12e65d39ee0191fd756db8c801743d0ed6aceee0eaf26e8438480f9bddf3b46348db6664460a49ff67142e78f85ea99ae1dd9cc68943257cb2f41b7c4455c0815519233e6bb151238a3a979053dc44",
        ])?),
    ];
    Ok(rows
        .into_iter()
        .map(|(name, case)| (name.to_string(), case))
        .collect())
}

/// Fails unless the kernel answers every row with no gate and neither hook's
/// gate lets one be answered.
#[test]
fn every_known_way_in_is_closed_on_both_hooks() -> Result<()> {
    let rows = ways_in()?;
    let mut wrong = Vec::new();
    for (answer, (name, _)) in answers(&rows, None)?.iter().zip(&rows) {
        if !answer.syn_ack {
            wrong.push(format!(
                "no gate: {name}: not answered, so this row is no way in"
            ));
        }
    }
    for hook in Hook::BOTH {
        for (answer, (name, case)) in answers(&rows, Some(hook))?.iter().zip(&rows) {
            if answer.syn_ack {
                wrong.push(format!(
                    "{}: {name}: answered without a grant ({})",
                    hook.name(),
                    case.key
                ));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "{} failures over {} rows:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// The frames a customer's stack or network sends every day, from a granted
/// source: the gate must still let each of them be answered.
#[test]
fn ordinary_frames_from_a_granted_source_still_pass() -> Result<()> {
    let v4 = |n| granted_syn(false, n);
    let v6 = |n| granted_syn(true, n);
    let pair = |shape: Shape| {
        shape.fragments(vec![
            Fragment::real(0, 24, true),
            Fragment::real(24, 16, false),
        ])
    };
    let rows = cases(&[
        ("IPv4", v4(1)),
        ("IPv6", v6(2)),
        (
            "IPv4 behind a priority tag",
            v4(3).tags(priority_tags(&[ETH_P_8021Q])),
        ),
        (
            "IPv4 behind QinQ priority tags",
            v4(4).tags(priority_tags(&[ETH_P_8021AD, ETH_P_8021Q])),
        ),
        (
            "IPv6 behind a priority tag",
            v6(5).tags(priority_tags(&[ETH_P_8021Q])),
        ),
        (
            "IPv6 behind QinQ priority tags",
            v6(6).tags(priority_tags(&[ETH_P_8021AD, ETH_P_8021Q])),
        ),
        (
            "IPv4 with a router-alert option",
            v4(7).ipv4_options(&[148, 4, 0, 0]),
        ),
        (
            "IPv4 with 8 bytes of NOP options",
            v4(8).ipv4_options(&[1; 8]),
        ),
        (
            "IPv6 with hop-by-hop padding",
            v6(9).chain(vec![Ext::HopByHop(vec![1, 4, 0, 0, 0, 0])]),
        ),
        (
            "IPv6 with a hop-by-hop router alert",
            v6(10).chain(vec![Ext::HopByHop(vec![5, 2, 0, 0, 1, 0])]),
        ),
        (
            "IPv6 with one destination-options header",
            v6(11).chain(vec![Ext::dest_opts(8)]),
        ),
        (
            "IPv4 in two fragments, the first with the whole TCP header",
            pair(v4(12)),
        ),
        (
            "IPv6 in two fragments, the first with the whole TCP header",
            pair(v6(13).chain(vec![Ext::Split])),
        ),
    ]);
    let mut wrong = Vec::new();
    for gate in std::iter::once(None).chain(Hook::BOTH.map(Some)) {
        let name = gate.map_or("no gate", Hook::name);
        for (answer, (row, case)) in answers(&rows, gate)?.iter().zip(&rows) {
            if !answer.syn_ack {
                wrong.push(format!("{name}: {row}: not answered ({})", case.key));
            }
        }
    }
    ensure!(
        wrong.is_empty(),
        "legitimate frames dropped:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

/// Runs `rows` with no gate and checks each answer against what it expects.
fn assert_kernel(rows: &[(&str, Shape, Expect)]) -> Result<()> {
    let shapes: Vec<(&str, Shape)> = rows.iter().map(|(n, s, _)| (*n, s.clone())).collect();
    let cases = cases(&shapes);
    let mut wrong = Vec::new();
    for (answer, (name, _, expect)) in answers(&cases, None)?.iter().zip(rows) {
        let got = match (answer.syn_ack, answer.tcp) {
            (true, _) => Expect::SynAck,
            (false, true) => Expect::Reset,
            (false, false) => Expect::Nothing,
        };
        if got != *expect {
            wrong.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "the kernel did not do what the gate's design assumes:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

/// What the listener's kernel sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    SynAck,
    /// The RST a listener sends to an ACK: the datagram was reassembled
    /// from the decoy's bytes.
    Reset,
    /// Nothing at all: the datagram was discarded.
    Nothing,
}

/// A later fragment cannot rewrite bytes an earlier one holds: Linux
/// discards the whole datagram when fragments overlap (RFC 5722 for IPv6,
/// the same rule for IPv4), and drops a fragment that lies inside one it
/// already holds as a duplicate, keeping the bytes it had.
///
/// Found on this kernel, for IPv4 and IPv6 alike: a first fragment whose
/// flags say ACK and a fragment from offset 8 whose flags say SYN get no
/// answer at all, in either order (the decoy ACK, reassembled on its own,
/// is answered with a RST, so "nothing" means discarded). A SYN fragment
/// inside an earlier ACK fragment is dropped and the listener sees the
/// ACK. Without an overlap, IPv4 takes the flags from the fragment at
/// offset 8. (An IPv6 first fragment must hold the whole TCP header, see
/// the next test, so the IPv6 rows use 24-byte first fragments.)
#[test]
fn kernel_discards_overlapping_fragments() -> Result<()> {
    use Expect::*;
    let ack = |offset, len, more| Fragment {
        decoy_from: 0,
        ..Fragment::real(offset, len, more)
    };
    let syn = Fragment::real;
    let both: Vec<(&str, Vec<Fragment>, Expect)> = vec![
        (
            "ACK [0,24) then SYN [8,40)",
            vec![ack(0, 24, true), syn(8, 32, false)],
            Nothing,
        ),
        (
            "SYN [8,40) then ACK [0,24)",
            vec![syn(8, 32, false), ack(0, 24, true)],
            Nothing,
        ),
        (
            "ACK [0,24), SYN [8,16) inside it, then [24,40)",
            vec![ack(0, 24, true), syn(8, 8, true), syn(24, 16, false)],
            Reset,
        ),
        (
            "SYN [8,16), ACK [0,24) around it, then [24,40)",
            vec![syn(8, 8, true), ack(0, 24, true), syn(24, 16, false)],
            Nothing,
        ),
        (
            "control: ACK [0,24) then [24,40)",
            vec![ack(0, 24, true), syn(24, 16, false)],
            Reset,
        ),
        (
            "control: SYN [0,24) then [24,40)",
            vec![syn(0, 24, true), syn(24, 16, false)],
            SynAck,
        ),
    ];
    let ipv4_only: Vec<(&str, Vec<Fragment>, Expect)> = vec![
        (
            "ACK [0,16) then SYN [8,40)",
            vec![ack(0, 16, true), syn(8, 32, false)],
            Nothing,
        ),
        (
            "SYN [8,40) then ACK [0,16)",
            vec![syn(8, 32, false), ack(0, 16, true)],
            Nothing,
        ),
        (
            "control: [0,8) then SYN [8,40)",
            vec![ack(0, 8, true), syn(8, 32, false)],
            SynAck,
        ),
        (
            "control: SYN [8,40) then [0,8)",
            vec![syn(8, 32, false), ack(0, 8, true)],
            SynAck,
        ),
    ];
    let mut rows = Vec::new();
    for (n, (name, fragments, expect)) in both.iter().chain(&ipv4_only).enumerate() {
        rows.push((
            format!("IPv4: {name}"),
            stranger_syn(false, 20 + n as u16).fragments(fragments.clone()),
            *expect,
        ));
    }
    for (n, (name, fragments, expect)) in both.iter().enumerate() {
        let shape = stranger_syn(true, 20 + n as u16)
            .chain(vec![Ext::Split])
            .fragments(fragments.clone());
        rows.push((format!("IPv6: {name}"), shape, *expect));
    }
    let rows: Vec<(&str, Shape, Expect)> = rows
        .iter()
        .map(|(n, s, e)| (n.as_str(), s.clone(), *e))
        .collect();
    assert_kernel(&rows)
}

/// RFC 8200 wants a first fragment to hold the whole header chain and the
/// upper-layer header. Found on this kernel: it refuses a first fragment
/// whose chain it can walk to the TCP header when that header is not all
/// there (also when the fragment ends inside the last extension header: the
/// walk reads only each header's first two bytes and then misses TCP). But
/// when the first fragment ends where the walk needs the start of a further
/// extension header, the fragment is queued, and the reassembled SYN is
/// answered. So the gate cannot count on an IPv6 first fragment to show it
/// the TCP header.
#[test]
fn kernel_takes_an_ipv6_chain_that_continues_in_a_later_fragment() -> Result<()> {
    use Expect::*;
    let v6 = |n: u16| stranger_syn(true, 40 + n);
    let pieces = |cut: usize, total: usize| {
        vec![
            Fragment::real(0, cut, true),
            Fragment::real(cut, total - cut, false),
        ]
    };
    let dest_opts = |lens: &[usize]| {
        std::iter::once(Ext::Split)
            .chain(lens.iter().map(|&l| Ext::dest_opts(l)))
            .collect()
    };
    assert_kernel(&[
        (
            "cut between two extension headers",
            v6(1).chain(dest_opts(&[8, 8])).fragments(pieces(8, 56)),
            SynAck,
        ),
        (
            "cut inside one extension header, another behind it",
            v6(2).chain(dest_opts(&[16, 8])).fragments(pieces(8, 64)),
            SynAck,
        ),
        (
            "cut inside the last extension header",
            v6(3).chain(dest_opts(&[16])).fragments(pieces(8, 56)),
            Nothing,
        ),
        (
            "cut inside the TCP header",
            v6(4).chain(dest_opts(&[8])).fragments(pieces(16, 48)),
            Nothing,
        ),
        (
            "control: whole chain and TCP header first",
            v6(5).chain(dest_opts(&[8])).fragments(pieces(32, 48)),
            SynAck,
        ),
    ])
}

/// How deep the kernel peels priority tags. Found on this kernel: a SYN
/// behind 8 of them (802.1Q, 802.1ad or mixed) is answered, behind 9 it is
/// not, although the 9-tag frame reaches the server's veth (its AF_PACKET
/// tap sees it): the receive path gives up, as the kernel's VLAN_MAX_DEPTH
/// of 8 suggests. So a gate that proves a frame harmless need not look
/// deeper than 8 tags; deeper stacks can only be refused or ignored.
#[test]
fn kernel_peels_at_most_eight_priority_tags() -> Result<()> {
    let mixed = |n: usize| priority_tags(&[ETH_P_8021AD, ETH_P_8021Q].repeat(n.div_ceil(2))[..n]);
    let rows = cases(&[
        (
            "8 802.1Q tags",
            stranger_syn(false, 60).tags(priority_tags(&[ETH_P_8021Q; 8])),
        ),
        (
            "8 802.1ad and 802.1Q tags",
            stranger_syn(false, 61).tags(mixed(8)),
        ),
        (
            "IPv6 behind 8 802.1Q tags",
            stranger_syn(true, 62).tags(priority_tags(&[ETH_P_8021Q; 8])),
        ),
        (
            "9 802.1Q tags",
            stranger_syn(false, 63).tags(priority_tags(&[ETH_P_8021Q; 9])),
        ),
        (
            "9 802.1ad and 802.1Q tags",
            stranger_syn(false, 64).tags(mixed(9)),
        ),
        (
            "IPv6 behind 9 802.1Q tags",
            stranger_syn(true, 65).tags(priority_tags(&[ETH_P_8021Q; 9])),
        ),
    ]);
    let lab = FuzzLab::new(None)?;
    let iface = lab.lab.server_iface.clone();
    let tap = lab
        .lab
        .server
        .run(move || RawSocket::sniffer(&iface, 1 << 20))??;
    let sent: Vec<Case> = rows.iter().map(|(_, c)| c.clone()).collect();
    let answers = oracle::answers(&lab.lab, &sent)?.per_case;
    let mut wrong = Vec::new();
    for (i, ((name, case), answer)) in rows.iter().zip(&answers).enumerate() {
        // The tap sees frames in the order they were sent.
        let arrived = tap.saw(&case.key.seq.to_be_bytes(), Duration::from_millis(500))?;
        let expected = i < 3;
        if answer.syn_ack != expected || !arrived {
            wrong.push(format!(
                "{name}: answered {}, expected {expected}; reached the server's veth: {arrived}",
                answer.syn_ack
            ));
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// A bounded differential run: thousands of generated cases through no
/// gate and through the gate on both hooks. The seed is random unless
/// `SMTPGATE_FUZZ_SEED` names one; it is printed either way, and
/// `cargo xtask fuzz-frames --seed S --first I --cases 1` replays case I.
#[test]
fn fuzzed_frames_find_no_way_past_the_gate() -> Result<()> {
    let seed = match std::env::var("SMTPGATE_FUZZ_SEED") {
        Ok(text) => campaign::parse_seed(&text).map_err(|e| anyhow!("SMTPGATE_FUZZ_SEED: {e}"))?,
        Err(_) => campaign::random_seed(),
    };
    println!("frame fuzz seed {seed:#x} (SMTPGATE_FUZZ_SEED={seed:#x} replays it)");
    let settings = Settings {
        seed,
        first: 0,
        cases: BOUNDED_CASES,
        hooks: Hook::BOTH.to_vec(),
    };
    let outcome = campaign::run(&settings, |line| println!("{line}"), || false)?;
    print!("{outcome}");
    // About 38% are answered; far fewer means the lab or the generator broke.
    ensure!(
        outcome.kernel.answered * 5 >= BOUNDED_CASES,
        "the kernel answered only {} of {BOUNDED_CASES} cases: the lab or the generator is broken",
        outcome.kernel.answered
    );
    ensure!(
        outcome.gates.iter().all(|(_, t)| t.strays == 0),
        "SYN-ACKs matched no case: the oracle's keys are broken"
    );
    let failures: Vec<String> = outcome
        .failures
        .iter()
        .map(|f| {
            format!(
                "seed {seed:#x} case {} on {}: {}",
                f.index,
                f.hook.name(),
                f.shape.describe()
            )
        })
        .collect();
    ensure!(
        failures.is_empty(),
        "{} cases reached a gated port without a grant:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
