//! Table-driven tests of the kernel program on crafted frames, run through
//! BPF_PROG_TEST_RUN: one row per case, with the frame, the verdict the gate
//! must reach, and the counter that must move.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use smtpgate::gate::attach::Variant;
use smtpgate_common::{FLAG_DEST_FILTER, FLAG_MONITOR, FLAG_RESET};
use smtpgate_tests::{
    frames::{
        self, Packet, ACK, DEST_OPTS, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, FRAGMENT, HOP_BY_HOP,
        ROUTING, RST, SYN, UDP,
    },
    testrun::{LoadedGate, Outcome, TC_ACT_OK, TC_ACT_SHOT, TICK, XDP_DROP, XDP_PASS, XDP_TX},
};

const SERVER: &str = "192.0.2.1";
const GRANTED: &str = "192.0.2.2";
const STRANGER: &str = "198.51.100.1";
const EXPIRED: &str = "198.51.100.9";
const ALLOWLISTED: &str = "203.0.113.5";
const SERVER6: &str = "2001:db8::1";
const GRANTED6: &str = "2001:db8::2";
const STRANGER6: &str = "2001:db8:bad::1";
const ALLOWLISTED6: &str = "2001:db8:ffff::7";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Reset,
}

struct Row {
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    /// The counter that must move by exactly one (besides `frames` and
    /// the gated count), if any.
    counter: Option<&'static str>,
    /// Judged as doubtful (`gated_doubtful`) rather than as a certain SYN
    /// (`gated_syns`), where the counter is a verdict.
    doubtful: bool,
}

fn row(name: &'static str, packet: Packet, verdict: Verdict, counter: Option<&'static str>) -> Row {
    frame_row(name, packet.build(), verdict, counter)
}

fn frame_row(
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    counter: Option<&'static str>,
) -> Row {
    let doubtful = counter.is_some_and(|c| c.starts_with("refused_unparsed_"));
    Row {
        name,
        frame,
        verdict,
        counter,
        doubtful,
    }
}

/// A row for a frame the gate cannot read in full but lets through on a
/// grant or the allowlist (`counter`), counted as doubtful.
fn doubtful_row(
    name: &'static str,
    frame: Vec<u8>,
    verdict: Verdict,
    counter: &'static str,
) -> Row {
    Row {
        name,
        frame,
        verdict,
        counter: Some(counter),
        doubtful: true,
    }
}

/// Counters that judge a frame; a row that names none must move none of them.
const JUDGING: &[&str] = &[
    "gated_syns",
    "gated_doubtful",
    "allowed_grant",
    "allowed_allowlist",
    "dropped_no_grant",
    "dropped_expired",
    "refused_unparsed_vlan_depth",
    "refused_unparsed_ext_depth",
    "refused_unparsed_fragment",
    "refused_unparsed_nonlinear",
    "monitor_would_drop",
    "passed_fragment",
    "unparsed_truncated",
    "unparsed_malformed",
];

/// Verdicts on a SYN or doubtful frame, each counted after the gated count.
const VERDICTS: &[&str] = &[
    "allowed_grant",
    "allowed_allowlist",
    "dropped_no_grant",
    "dropped_expired",
    "refused_unparsed_vlan_depth",
    "refused_unparsed_ext_depth",
    "refused_unparsed_fragment",
    "refused_unparsed_nonlinear",
    "monitor_would_drop",
];

fn gate(flags: u32) -> Result<LoadedGate> {
    grants_and_allowlist(LoadedGate::new(flags, &[25, 587])?)
}

fn grants_and_allowlist(mut gate: LoadedGate) -> Result<LoadedGate> {
    gate.grant(GRANTED, Duration::from_secs(600))?;
    gate.grant(GRANTED6, Duration::from_secs(600))?;
    gate.grant(EXPIRED, Duration::from_nanos(1))?;
    gate.allow_prefix("203.0.113.0/24")?;
    gate.allow_prefix("2001:db8:ffff::/48")?;
    std::thread::sleep(2 * TICK);
    Ok(gate)
}

fn syn(src: &str, dst: &str) -> Packet {
    Packet::syn(src, dst, 25)
}

/// `count` VLAN tags of the given TPIDs, cycled.
fn tags(count: usize, tpids: &[u16]) -> Vec<u16> {
    tpids.iter().copied().cycle().take(count).collect()
}

/// `count` IPv6 extension headers of `kind`.
fn exts(count: usize, kind: u8) -> Vec<u8> {
    vec![kind; count]
}

/// Offset of the IPv4 header in an untagged frame.
const IP: usize = 14;

/// An IPv4 SYN whose first fragment (MF set) declares `tcp_bytes` bytes
/// of TCP header: cut there, or with the rest of the header left behind
/// the declared end as Ethernet padding.
fn tiny_first_fragment(src: &str, dport: u16, tcp_bytes: usize, padded: bool) -> Vec<u8> {
    let mut frame = Packet::syn(src, SERVER, dport)
        .with(|p| {
            p.tcp_options = 0;
            p.fragment_offset = MORE_FRAGMENTS;
        })
        .build();
    frame[IP + 2..IP + 4].copy_from_slice(&((20 + tcp_bytes) as u16).to_be_bytes());
    if !padded {
        frame.truncate(IP + 20 + tcp_bytes);
    }
    frame
}

/// The IPv4 MF flag, in `Packet::fragment_offset`'s field.
const MORE_FRAGMENTS: u16 = 0x2000;

/// A frame whose IPv4 total length is `total`, whatever it holds.
fn with_ipv4_total_length(packet: Packet, total: u16) -> Vec<u8> {
    let mut frame = packet.build();
    frame[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
    frame
}

/// An IPv6 frame with its extension headers rewritten by `edit`, given
/// each header's bytes in order.
fn edit_ipv6_exts(packet: Packet, edit: impl Fn(usize, &mut [u8])) -> Vec<u8> {
    let (mut frame, boundaries) = packet.build_with_boundaries();
    let first = 1 + packet.vlan_tags.len() + 1;
    for (i, pair) in boundaries[first..first + packet.ipv6_ext.len() + 1]
        .windows(2)
        .enumerate()
    {
        edit(i, &mut frame[pair[0]..pair[1]]);
    }
    frame
}

/// Every header combination the parser must handle, judged in enforce mode.
fn header_rows() -> Vec<Row> {
    use Verdict::*;
    let q = ETH_P_8021Q;
    let ad = ETH_P_8021AD;
    let mut rows = vec![
        row(
            "ipv4 stranger",
            syn(STRANGER, SERVER),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv4 granted",
            syn(GRANTED, SERVER),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "ipv4 expired grant",
            syn(EXPIRED, SERVER),
            Drop,
            Some("dropped_expired"),
        ),
        row(
            "ipv4 allowlisted",
            syn(ALLOWLISTED, SERVER),
            Pass,
            Some("allowed_allowlist"),
        ),
        row(
            "second gated port",
            Packet::syn(STRANGER, SERVER, 587),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ungated port",
            Packet::syn(STRANGER, SERVER, 2525),
            Pass,
            None,
        ),
        row(
            "ack segment",
            syn(STRANGER, SERVER).with(|p| p.tcp_flags = ACK),
            Pass,
            None,
        ),
        row(
            "syn-ack",
            syn(STRANGER, SERVER).with(|p| p.tcp_flags = SYN | ACK),
            Pass,
            None,
        ),
        row(
            "syn-rst is judged as a syn",
            syn(STRANGER, SERVER).with(|p| p.tcp_flags = SYN | RST),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "udp to port 25",
            syn(STRANGER, SERVER).with(|p| p.protocol = UDP),
            Pass,
            None,
        ),
        row(
            "arp",
            syn(STRANGER, SERVER).with(|p| p.ethertype = Some(ETH_P_ARP)),
            Pass,
            None,
        ),
        row(
            "802.1q stranger",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![q]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "802.1q granted",
            syn(GRANTED, SERVER).with(|p| p.vlan_tags = vec![q]),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "qinq stranger",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ad, q]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "qinq granted",
            syn(GRANTED, SERVER).with(|p| p.vlan_tags = vec![ad, q]),
            Pass,
            Some("allowed_grant"),
        ),
        // Issue 9: Linux strips any number of priority tags.
        row(
            "three 802.1q tags",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = tags(3, &[q])),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "six 802.1q tags",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = tags(6, &[q])),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "802.1ad + 802.1q + 802.1q",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ad, q, q]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "eight tags, the most peeled",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = tags(8, &[ad, q])),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "eight tags, granted",
            syn(GRANTED, SERVER).with(|p| p.vlan_tags = tags(8, &[q])),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "eight tags, then udp",
            syn(STRANGER, SERVER).with(|p| {
                p.vlan_tags = tags(8, &[q]);
                p.protocol = UDP
            }),
            Pass,
            None,
        ),
        row(
            "nine tags: refused unseen",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = tags(9, &[q])),
            Drop,
            Some("refused_unparsed_vlan_depth"),
        ),
        row(
            "nine tags: refused even from a grant",
            syn(GRANTED, SERVER).with(|p| p.vlan_tags = tags(9, &[q])),
            Drop,
            Some("refused_unparsed_vlan_depth"),
        ),
        row(
            "a tpid linux does not peel",
            syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![0x9100]),
            Pass,
            None,
        ),
        row(
            "ipv4 options 20 bytes",
            syn(STRANGER, SERVER).with(|p| p.ipv4_options = 20),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv4 options 40 bytes granted",
            syn(GRANTED, SERVER).with(|p| p.ipv4_options = 40),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "ipv4 first fragment with the whole tcp header",
            syn(STRANGER, SERVER).with(|p| p.fragment_offset = MORE_FRAGMENTS),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv4 first fragment, ack",
            syn(STRANGER, SERVER).with(|p| {
                p.fragment_offset = MORE_FRAGMENTS;
                p.tcp_flags = ACK
            }),
            Pass,
            None,
        ),
        row(
            "ipv4 later fragment",
            syn(STRANGER, SERVER).with(|p| p.fragment_offset = 185),
            Pass,
            Some("passed_fragment"),
        ),
        row(
            "ipv4 fragment at offset 8",
            syn(STRANGER, SERVER).with(|p| p.fragment_offset = MORE_FRAGMENTS | 1),
            Pass,
            Some("passed_fragment"),
        ),
        row(
            "tcp without options",
            syn(STRANGER, SERVER).with(|p| p.tcp_options = 0),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 stranger",
            syn(STRANGER6, SERVER6),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 granted",
            syn(GRANTED6, SERVER6),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "ipv6 allowlisted",
            syn(ALLOWLISTED6, SERVER6),
            Pass,
            Some("allowed_allowlist"),
        ),
        row(
            "ipv6 qinq stranger",
            syn(STRANGER6, SERVER6).with(|p| p.vlan_tags = vec![ad, q]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 hop-by-hop + dest opts",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, DEST_OPTS]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 routing + atomic fragment",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![ROUTING, FRAGMENT]),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 granted behind ext headers",
            syn(GRANTED6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, ROUTING, DEST_OPTS]),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "ipv6 later fragment",
            syn(STRANGER6, SERVER6).with(|p| {
                p.ipv6_ext = vec![FRAGMENT];
                p.fragment_offset = 185
            }),
            Pass,
            Some("passed_fragment"),
        ),
        // Issue 9: the kernel walks any number of extension headers.
        row(
            "ipv6 seven dest opts",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts(7, DEST_OPTS)),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 eight ext headers, the most walked",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts(8, DEST_OPTS)),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 eight ext headers, then udp",
            syn(STRANGER6, SERVER6).with(|p| {
                p.ipv6_ext = exts(8, DEST_OPTS);
                p.protocol = UDP
            }),
            Pass,
            None,
        ),
        row(
            "ipv6 nine ext headers",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts(9, DEST_OPTS)),
            Drop,
            Some("refused_unparsed_ext_depth"),
        ),
        row(
            "ipv6 twenty dest opts",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts(20, DEST_OPTS)),
            Drop,
            Some("refused_unparsed_ext_depth"),
        ),
        row(
            "ipv6 twenty dest opts, then udp",
            syn(STRANGER6, SERVER6).with(|p| {
                p.ipv6_ext = exts(20, DEST_OPTS);
                p.protocol = UDP
            }),
            Drop,
            Some("refused_unparsed_ext_depth"),
        ),
        doubtful_row(
            "ipv6 twenty dest opts, granted",
            syn(GRANTED6, SERVER6)
                .with(|p| p.ipv6_ext = exts(20, DEST_OPTS))
                .build(),
            Pass,
            "allowed_grant",
        ),
        doubtful_row(
            "ipv6 twenty dest opts, allowlisted",
            syn(ALLOWLISTED6, SERVER6)
                .with(|p| p.ipv6_ext = exts(20, DEST_OPTS))
                .build(),
            Pass,
            "allowed_allowlist",
        ),
        row(
            "ipv6 udp",
            syn(STRANGER6, SERVER6).with(|p| p.protocol = UDP),
            Pass,
            None,
        ),
    ];
    // Issue 9: eight routing headers with segments left 0.
    let routing = syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts(8, ROUTING));
    rows.push(frame_row(
        "ipv6 eight routing headers",
        edit_ipv6_exts(routing.clone(), |_, h| h[3] = 0),
        Drop,
        Some("dropped_no_grant"),
    ));
    let routing = routing.with(|p| p.ipv6_ext = exts(12, ROUTING));
    rows.push(frame_row(
        "ipv6 twelve routing headers",
        edit_ipv6_exts(routing, |_, h| h[3] = 0),
        Drop,
        Some("refused_unparsed_ext_depth"),
    ));
    // Issue 9: RFC 1858 tiny fragments. The kernel keeps only whole 8-byte
    // units of a fragment that is not the last, so what lies beyond them,
    // and beyond the declared length, is not what it reassembles.
    for (name, tcp_bytes, padded) in [
        ("first fragment of 8 tcp bytes", 8, false),
        (
            "first fragment of 8 tcp bytes, the rest as padding",
            8,
            true,
        ),
        ("first fragment of 16 tcp bytes", 16, false),
        ("first fragment of 15 tcp bytes (8 kept)", 15, false),
        ("first fragment of 19 tcp bytes, padded (16 kept)", 19, true),
        ("first fragment of 4 tcp bytes", 4, false),
    ] {
        rows.push(frame_row(
            name,
            tiny_first_fragment(STRANGER, 25, tcp_bytes, padded),
            Drop,
            Some("refused_unparsed_fragment"),
        ));
    }
    rows.push(frame_row(
        "first fragment of 8 tcp bytes to an ungated port",
        tiny_first_fragment(STRANGER, 2525, 8, false),
        Pass,
        None,
    ));
    rows.push(doubtful_row(
        "first fragment of 8 tcp bytes, granted",
        tiny_first_fragment(GRANTED, 25, 8, false),
        Pass,
        "allowed_grant",
    ));
    // Lengths: the kernel trims a packet to its declared length, and drops
    // one shorter than declared.
    let short_total =
        with_ipv4_total_length(syn(STRANGER, SERVER).with(|p| p.tcp_options = 0), 20 + 8);
    rows.push(frame_row(
        "tcp header behind the ipv4 total length",
        short_total,
        Pass,
        Some("unparsed_truncated"),
    ));
    let zero_total = with_ipv4_total_length(syn(STRANGER, SERVER), 0);
    rows.push(frame_row(
        "ipv4 total length zero: judged on the frame",
        zero_total,
        Drop,
        Some("dropped_no_grant"),
    ));
    let long_total = with_ipv4_total_length(syn(STRANGER, SERVER), 1500);
    rows.push(frame_row(
        "ipv4 total length beyond the frame",
        long_total,
        Pass,
        Some("unparsed_truncated"),
    ));
    // IPv6 fragments: the first fragment is judged on what it holds.
    let chain_continues = syn(STRANGER6, SERVER6).with(|p| {
        p.ipv6_ext = vec![FRAGMENT, DEST_OPTS];
        p.fragment_offset = 0;
    });
    let cut_chain = edit_ipv6_exts(chain_continues, |i, h| match i {
        0 => h[3] = 1,  // MF
        1 => h[1] = 40, // an options header running past the fragment
        _ => {}
    });
    rows.push(frame_row(
        "ipv6 first fragment whose chain continues later",
        cut_chain,
        Drop,
        Some("refused_unparsed_fragment"),
    ));
    // The fragment header's byte 3 holds its M flag, byte 1 is reserved.
    for (name, exts, byte, value, verdict, counter) in [
        (
            "ipv6 fragment within a fragment",
            vec![FRAGMENT, FRAGMENT],
            3,
            1,
            Drop,
            "refused_unparsed_fragment",
        ),
        (
            "ipv6 fragment header with its reserved byte set",
            vec![FRAGMENT],
            1,
            1,
            Drop,
            "refused_unparsed_fragment",
        ),
        (
            "ipv6 first fragment with the whole tcp header",
            vec![FRAGMENT],
            3,
            1,
            Drop,
            "dropped_no_grant",
        ),
    ] {
        let packet = syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = exts);
        let frame = edit_ipv6_exts(packet, |i, h| {
            if i == 0 {
                h[byte] = value;
            }
        });
        rows.push(frame_row(name, frame, verdict, Some(counter)));
    }
    let mut short_payload = syn(STRANGER6, SERVER6).with(|p| p.tcp_options = 0).build();
    short_payload[IP + 4..IP + 6].copy_from_slice(&8u16.to_be_bytes());
    rows.push(frame_row(
        "tcp header behind the ipv6 payload length",
        short_payload,
        Pass,
        Some("unparsed_truncated"),
    ));
    // Malformed fields.
    let mut bad_ihl = syn(STRANGER, SERVER).build();
    bad_ihl[IP] = 0x44;
    rows.push(frame_row(
        "ipv4 ihl below 5",
        bad_ihl,
        Pass,
        Some("unparsed_malformed"),
    ));
    let mut bad_version = syn(STRANGER, SERVER).build();
    bad_version[IP] = 0x65;
    rows.push(frame_row(
        "ipv4 ethertype with version 6",
        bad_version,
        Pass,
        Some("unparsed_malformed"),
    ));
    let mut bad_doff = syn(STRANGER, SERVER).with(|p| p.tcp_options = 0).build();
    bad_doff[IP + 20 + 12] = 0x40;
    rows.push(frame_row(
        "tcp data offset below 5",
        bad_doff,
        Pass,
        Some("unparsed_malformed"),
    ));
    rows
}

/// A frame cut short at every header boundary and in the middle of every
/// header passes and counts as truncated.
fn truncation_rows() -> Vec<Row> {
    let packets = [
        (
            "qinq ipv4 with options",
            syn(STRANGER, SERVER).with(|p| {
                p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q];
                p.ipv4_options = 8
            }),
        ),
        (
            "qinq ipv6 with ext headers",
            syn(STRANGER6, SERVER6).with(|p| {
                p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q];
                p.ipv6_ext = vec![HOP_BY_HOP, FRAGMENT]
            }),
        ),
    ];
    let mut rows = Vec::new();
    for (name, packet) in packets {
        let (frame, boundaries) = packet.build_with_boundaries();
        let last = *boundaries.last().unwrap();
        let tcp_start = boundaries[boundaries.len() - 2];
        let mut cuts: Vec<usize> = Vec::new();
        for pair in boundaries.windows(2) {
            cuts.push(pair[0]);
            cuts.push((pair[0] + pair[1]) / 2);
        }
        // BPF_PROG_TEST_RUN needs at least an Ethernet header; the frame
        // must end before the fixed 20-byte TCP header does.
        for cut in cuts
            .into_iter()
            .filter(|&c| c >= 14 && c < tcp_start + 20 && c < last)
        {
            let name = Box::leak(format!("{name} cut at {cut}").into_boxed_str());
            rows.push(frame_row(
                name,
                frame[..cut].to_vec(),
                Verdict::Pass,
                Some("unparsed_truncated"),
            ));
        }
    }
    rows
}

#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc,
}

fn action_of(hook: Hook, verdict: Verdict) -> u32 {
    match (hook, verdict) {
        (Hook::Xdp, Verdict::Pass) => XDP_PASS,
        (Hook::Xdp, Verdict::Drop) => XDP_DROP,
        (Hook::Xdp, Verdict::Reset) => XDP_TX,
        (Hook::Tc, Verdict::Pass) => TC_ACT_OK,
        (Hook::Tc, Verdict::Drop | Verdict::Reset) => TC_ACT_SHOT,
    }
}

/// Runs every row and reports all mismatches at once.
fn check(gate: &LoadedGate, hook: Hook, rows: &[Row]) -> Result<Vec<Outcome>> {
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for row in rows {
        let before = gate.counters()?;
        let outcome = match hook {
            Hook::Xdp => gate.run_xdp(&row.frame),
            Hook::Tc => gate.run_tc(&row.frame),
        }
        .with_context(|| row.name)?;
        let after = gate.counters()?;
        let moved = |name: &str| after[name] - before[name];
        if outcome.action != action_of(hook, row.verdict) {
            failures.push(format!(
                "{}: action {} (expected {:?})",
                row.name, outcome.action, row.verdict
            ));
        }
        if moved("frames") != 1 {
            failures.push(format!("{}: frames moved by {}", row.name, moved("frames")));
        }
        let gated = if row.doubtful {
            "gated_doubtful"
        } else {
            "gated_syns"
        };
        for &name in JUDGING {
            let expected = match row.counter {
                Some(c) if c == name => 1,
                // A verdict follows the count of what was judged.
                Some(c) if name == gated && VERDICTS.contains(&c) => 1,
                _ => 0,
            };
            if moved(name) != expected {
                failures.push(format!(
                    "{}: {name} moved by {} (expected {expected})",
                    row.name,
                    moved(name)
                ));
            }
        }
        outcomes.push(outcome);
    }
    ensure!(
        failures.is_empty(),
        "{} of {} rows wrong:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    Ok(outcomes)
}

#[test]
fn xdp_header_combinations() -> Result<()> {
    check(&gate(0)?, Hook::Xdp, &header_rows()).map(drop)
}

#[test]
fn tc_header_combinations() -> Result<()> {
    check(&gate(0)?, Hook::Tc, &header_rows()).map(drop)
}

#[test]
fn xdp_truncation_at_every_boundary() -> Result<()> {
    let rows = truncation_rows();
    ensure!(rows.len() >= 12, "too few truncation rows: {}", rows.len());
    check(&gate(0)?, Hook::Xdp, &rows).map(drop)
}

#[test]
fn tc_truncation_at_every_boundary() -> Result<()> {
    check(&gate(0)?, Hook::Tc, &truncation_rows()).map(drop)
}

#[test]
fn monitor_mode_passes_and_counts() -> Result<()> {
    use Verdict::*;
    let rows = [
        row(
            "stranger",
            syn(STRANGER, SERVER),
            Pass,
            Some("monitor_would_drop"),
        ),
        row(
            "expired",
            syn(EXPIRED, SERVER),
            Pass,
            Some("monitor_would_drop"),
        ),
        row(
            "ipv6 stranger",
            syn(STRANGER6, SERVER6),
            Pass,
            Some("monitor_would_drop"),
        ),
        row("granted", syn(GRANTED, SERVER), Pass, Some("allowed_grant")),
        row(
            "allowlisted",
            syn(ALLOWLISTED, SERVER),
            Pass,
            Some("allowed_allowlist"),
        ),
        doubtful_row(
            "nine tags",
            syn(STRANGER, SERVER)
                .with(|p| p.vlan_tags = tags(9, &[ETH_P_8021Q]))
                .build(),
            Pass,
            "monitor_would_drop",
        ),
        doubtful_row(
            "tiny fragment",
            tiny_first_fragment(STRANGER, 25, 8, false),
            Pass,
            "monitor_would_drop",
        ),
    ];
    let gate = gate(FLAG_MONITOR)?;
    check(&gate, Hook::Xdp, &rows)?;
    check(&gate, Hook::Tc, &rows).map(drop)
}

#[test]
fn destination_filter_gates_only_listed_addresses() -> Result<()> {
    use Verdict::*;
    let mut gate = gate(FLAG_DEST_FILTER)?;
    gate.dests.sync(&[SERVER.parse()?, SERVER6.parse()?])?;
    let rows = [
        row(
            "listed relay address",
            syn(STRANGER, SERVER),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "listed ipv6 relay address",
            syn(STRANGER6, SERVER6),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "unlisted mx address",
            syn(STRANGER, "192.0.2.25"),
            Pass,
            None,
        ),
        row(
            "unlisted ipv6 mx address",
            syn(STRANGER6, "2001:db8::25"),
            Pass,
            None,
        ),
        // A source route could deliver these to the listed address.
        row(
            "unlisted address, ipv4 options",
            syn(STRANGER, "192.0.2.25").with(|p| p.ipv4_options = 8),
            Drop,
            Some("dropped_no_grant"),
        ),
        frame_row(
            "unlisted address, routing header with segments left",
            edit_ipv6_exts(
                syn(STRANGER6, "2001:db8::25").with(|p| p.ipv6_ext = vec![ROUTING]),
                |_, h| h[3] = 1,
            ),
            Drop,
            Some("dropped_no_grant"),
        ),
        frame_row(
            "unlisted address, routing header done",
            edit_ipv6_exts(
                syn(STRANGER6, "2001:db8::25").with(|p| p.ipv6_ext = vec![ROUTING]),
                |_, h| h[3] = 0,
            ),
            Pass,
            None,
        ),
    ];
    check(&gate, Hook::Xdp, &rows)?;
    check(&gate, Hook::Tc, &rows).map(drop)
}

#[test]
fn grants_change_verdicts_live() -> Result<()> {
    use Verdict::*;
    let mut gate = gate(0)?;
    check(
        &gate,
        Hook::Xdp,
        &[row(
            "before grant",
            syn(STRANGER, SERVER),
            Drop,
            Some("dropped_no_grant"),
        )],
    )?;
    gate.grant(STRANGER, Duration::from_secs(60))?;
    check(
        &gate,
        Hook::Xdp,
        &[row(
            "after grant",
            syn(STRANGER, SERVER),
            Pass,
            Some("allowed_grant"),
        )],
    )?;
    gate.grants.revoke(STRANGER.parse()?)?;
    check(
        &gate,
        Hook::Xdp,
        &[row(
            "after revoke",
            syn(STRANGER, SERVER),
            Drop,
            Some("dropped_no_grant"),
        )],
    )?;
    gate.grant(STRANGER, Duration::from_millis(300))?;
    std::thread::sleep(Duration::from_millis(400));
    check(
        &gate,
        Hook::Xdp,
        &[row(
            "after expiry",
            syn(STRANGER, SERVER),
            Drop,
            Some("dropped_expired"),
        )],
    )
    .map(drop)
}

/// This kernel takes every variant of the program (the coarse clock from
/// 5.11, `bpf_xdp_load_bytes` from 5.18), and older kernels get the older
/// ones: all must judge alike.
#[test]
fn every_variant_judges_alike() -> Result<()> {
    let rows = header_rows();
    for variant in Variant::ALL {
        let loaded = LoadedGate::variant(0, &[25, 587], variant)
            .with_context(|| format!("loading {variant:?}"))?;
        let gate = grants_and_allowlist(loaded)?;
        check(&gate, Hook::Xdp, &rows).with_context(|| format!("XDP, {variant:?}"))?;
        check(&gate, Hook::Tc, &rows).with_context(|| format!("TC, {variant:?}"))?;
    }
    Ok(())
}

/// Once the agent calls a grant expired (and `smtpgate list` drops it), the
/// program drops the source's SYNs at once, on either clock: an
/// administrator who sees no grant must be able to trust that none works.
#[test]
fn a_grant_the_agent_calls_expired_no_longer_passes() -> Result<()> {
    const ROUNDS: usize = 50;
    let frame = syn(STRANGER, SERVER).build();
    for variant in Variant::ALL {
        let mut gate = LoadedGate::variant(0, &[25], variant)?;
        for round in 0..ROUNDS {
            let expiry = gate
                .grants
                .grant(STRANGER.parse()?, Duration::from_millis(2))?;
            let deadline = Instant::now() + Duration::from_secs(1);
            while !smtpgate::gate::clock::remaining(expiry).is_zero() {
                ensure!(
                    Instant::now() < deadline,
                    "a 2 ms grant still had {:?} left after 1 s",
                    smtpgate::gate::clock::remaining(expiry)
                );
            }
            let action = gate.run_xdp(&frame)?.action;
            ensure!(action == XDP_DROP, "{variant:?}, round {round}: the agent calls the grant expired, yet the program returned {action}");
        }
    }
    Ok(())
}

#[test]
fn reset_mode_answers_with_a_valid_rst() -> Result<()> {
    use Verdict::*;
    let gate = gate(FLAG_RESET)?;
    let v4 = syn(STRANGER, SERVER);
    let v6 = syn(STRANGER6, SERVER6);
    let rows = [
        row("ipv4 stranger", v4.clone(), Reset, Some("dropped_no_grant")),
        row("ipv6 stranger", v6.clone(), Reset, Some("dropped_no_grant")),
        row(
            "granted passes",
            syn(GRANTED, SERVER),
            Pass,
            Some("allowed_grant"),
        ),
        row(
            "ipv4 options: dropped, not answered",
            syn(STRANGER, SERVER).with(|p| p.ipv4_options = 8),
            Drop,
            Some("dropped_no_grant"),
        ),
        row(
            "ipv6 ext headers: dropped, not answered",
            syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![DEST_OPTS]),
            Drop,
            Some("dropped_no_grant"),
        ),
        frame_row(
            "tiny fragment: dropped, not answered",
            tiny_first_fragment(STRANGER, 25, 8, false),
            Drop,
            Some("refused_unparsed_fragment"),
        ),
    ];
    let resets_before = gate.counters()?["resets_sent"];
    let outcomes = check(&gate, Hook::Xdp, &rows)?;
    ensure!(
        gate.counters()?["resets_sent"] - resets_before == 2,
        "resets_sent did not count two replies"
    );
    for (packet, outcome, ip_len) in [(&v4, &outcomes[0], 20), (&v6, &outcomes[1], 40)] {
        let reply = &outcome.frame;
        ensure!(
            reply.len() == 14 + ip_len + 20,
            "reply length {} (options and payload must be cut)",
            reply.len()
        );
        ensure!(
            reply[0..6] == frames::CLIENT_MAC && reply[6..12] == frames::SERVER_MAC,
            "MACs not swapped"
        );
        let (sport, dport, seq, ack, flags) =
            frames::tcp_fields(reply).context("reply has no TCP header")?;
        ensure!(
            (sport, dport) == (packet.dport, packet.sport),
            "ports not swapped"
        );
        ensure!(flags == RST | ACK, "flags {flags:#x}");
        ensure!(
            seq == 0 && ack == packet.seq.wrapping_add(1),
            "seq {seq} ack {ack}"
        );
        ensure!(frames::checksums_valid(reply), "bad checksum in the RST");
    }
    // A tagged SYN is answered on its VLAN.
    let tagged = syn(STRANGER, SERVER)
        .with(|p| p.vlan_tags = vec![ETH_P_8021Q])
        .build();
    let outcome = gate.run_xdp(&tagged)?;
    ensure!(
        outcome.action == XDP_TX && outcome.frame[12..16] == tagged[12..16],
        "VLAN tag not kept"
    );
    Ok(())
}
