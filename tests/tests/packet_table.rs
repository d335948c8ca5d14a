//! Table-driven tests of the kernel program on crafted frames, run through
//! BPF_PROG_TEST_RUN: one row per case, with the frame, the verdict the gate
//! must reach, and the counter that must move.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use smtpgate::attach::GateClock;
use smtpgate_common::{FLAG_DEST_FILTER, FLAG_MONITOR, FLAG_RESET};
use smtpgate_tests::{
    frames::{self, Packet, ACK, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, FRAGMENT, HOP_BY_HOP, ROUTING, DEST_OPTS, RST, SYN, UDP},
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
    /// The counter that must move by exactly one (besides `frames`), if any.
    counter: Option<&'static str>,
}

fn row(name: &'static str, packet: Packet, verdict: Verdict, counter: Option<&'static str>) -> Row {
    Row { name, frame: packet.build(), verdict, counter }
}

/// Counters that judge a frame; a row that names none must move none of them.
const JUDGING: &[&str] = &[
    "gated_syns",
    "allowed_grant",
    "allowed_allowlist",
    "dropped_no_grant",
    "dropped_expired",
    "monitor_would_drop",
    "passed_fragment",
    "unparsed_truncated",
    "unparsed_malformed",
    "unparsed_ext_depth",
    "unparsed_vlan_depth",
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

/// Every header combination the parser must handle, judged in enforce mode.
fn header_rows() -> Vec<Row> {
    use Verdict::*;
    let mut rows = vec![
        row("ipv4 stranger", syn(STRANGER, SERVER), Drop, Some("dropped_no_grant")),
        row("ipv4 granted", syn(GRANTED, SERVER), Pass, Some("allowed_grant")),
        row("ipv4 expired grant", syn(EXPIRED, SERVER), Drop, Some("dropped_expired")),
        row("ipv4 allowlisted", syn(ALLOWLISTED, SERVER), Pass, Some("allowed_allowlist")),
        row("second gated port", Packet::syn(STRANGER, SERVER, 587), Drop, Some("dropped_no_grant")),
        row("ungated port", Packet::syn(STRANGER, SERVER, 2525), Pass, None),
        row("ack segment", syn(STRANGER, SERVER).with(|p| p.tcp_flags = ACK), Pass, None),
        row("syn-ack", syn(STRANGER, SERVER).with(|p| p.tcp_flags = SYN | ACK), Pass, None),
        row("udp to port 25", syn(STRANGER, SERVER).with(|p| p.protocol = UDP), Pass, None),
        row("arp", syn(STRANGER, SERVER).with(|p| p.ethertype = Some(ETH_P_ARP)), Pass, None),
        row("802.1q stranger", syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021Q]), Drop, Some("dropped_no_grant")),
        row("802.1q granted", syn(GRANTED, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021Q]), Pass, Some("allowed_grant")),
        row("qinq stranger", syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q]), Drop, Some("dropped_no_grant")),
        row("qinq granted", syn(GRANTED, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q]), Pass, Some("allowed_grant")),
        row("three vlan tags", syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q]), Pass, Some("unparsed_vlan_depth")),
        row("ipv4 options 20 bytes", syn(STRANGER, SERVER).with(|p| p.ipv4_options = 20), Drop, Some("dropped_no_grant")),
        row("ipv4 options 40 bytes granted", syn(GRANTED, SERVER).with(|p| p.ipv4_options = 40), Pass, Some("allowed_grant")),
        row("ipv4 first fragment", syn(STRANGER, SERVER).with(|p| p.fragment_offset = 0x2000), Drop, Some("dropped_no_grant")),
        row("ipv4 later fragment", syn(STRANGER, SERVER).with(|p| p.fragment_offset = 185), Pass, Some("passed_fragment")),
        row("tcp without options", syn(STRANGER, SERVER).with(|p| p.tcp_options = 0), Drop, Some("dropped_no_grant")),
        row("ipv6 stranger", syn(STRANGER6, SERVER6), Drop, Some("dropped_no_grant")),
        row("ipv6 granted", syn(GRANTED6, SERVER6), Pass, Some("allowed_grant")),
        row("ipv6 allowlisted", syn(ALLOWLISTED6, SERVER6), Pass, Some("allowed_allowlist")),
        row("ipv6 qinq stranger", syn(STRANGER6, SERVER6).with(|p| p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q]), Drop, Some("dropped_no_grant")),
        row("ipv6 hop-by-hop + dest opts", syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, DEST_OPTS]), Drop, Some("dropped_no_grant")),
        row("ipv6 routing + first fragment", syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![ROUTING, FRAGMENT]), Drop, Some("dropped_no_grant")),
        row("ipv6 granted behind ext headers", syn(GRANTED6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, ROUTING, DEST_OPTS]), Pass, Some("allowed_grant")),
        row("ipv6 later fragment", syn(STRANGER6, SERVER6).with(|p| { p.ipv6_ext = vec![FRAGMENT]; p.fragment_offset = 185 }), Pass, Some("passed_fragment")),
        row("ipv6 six ext headers", syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, DEST_OPTS, ROUTING, DEST_OPTS, ROUTING, DEST_OPTS]), Drop, Some("dropped_no_grant")),
        row("ipv6 seven ext headers", syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![HOP_BY_HOP, DEST_OPTS, ROUTING, DEST_OPTS, ROUTING, DEST_OPTS, DEST_OPTS]), Pass, Some("unparsed_ext_depth")),
        row("ipv6 udp", syn(STRANGER6, SERVER6).with(|p| p.protocol = UDP), Pass, None),
    ];
    // Malformed fields.
    let mut bad_ihl = syn(STRANGER, SERVER).build();
    bad_ihl[14] = 0x44;
    rows.push(Row { name: "ipv4 ihl below 5", frame: bad_ihl, verdict: Pass, counter: Some("unparsed_malformed") });
    let mut bad_version = syn(STRANGER, SERVER).build();
    bad_version[14] = 0x65;
    rows.push(Row { name: "ipv4 ethertype with version 6", frame: bad_version, verdict: Pass, counter: Some("unparsed_malformed") });
    let mut bad_doff = syn(STRANGER, SERVER).with(|p| p.tcp_options = 0).build();
    bad_doff[14 + 20 + 12] = 0x40;
    rows.push(Row { name: "tcp data offset below 5", frame: bad_doff, verdict: Pass, counter: Some("unparsed_malformed") });
    rows
}

/// A frame cut short at every header boundary and in the middle of every
/// header passes and counts as truncated.
fn truncation_rows() -> Vec<Row> {
    let packets = [
        ("qinq ipv4 with options", syn(STRANGER, SERVER).with(|p| { p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q]; p.ipv4_options = 8 })),
        ("qinq ipv6 with ext headers", syn(STRANGER6, SERVER6).with(|p| { p.vlan_tags = vec![ETH_P_8021AD, ETH_P_8021Q]; p.ipv6_ext = vec![HOP_BY_HOP, FRAGMENT] })),
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
        for cut in cuts.into_iter().filter(|&c| c >= 14 && c < tcp_start + 20 && c < last) {
            rows.push(Row {
                name: Box::leak(format!("{name} cut at {cut}").into_boxed_str()),
                frame: frame[..cut].to_vec(),
                verdict: Verdict::Pass,
                counter: Some("unparsed_truncated"),
            });
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
            failures.push(format!("{}: action {} (expected {:?})", row.name, outcome.action, row.verdict));
        }
        if moved("frames") != 1 {
            failures.push(format!("{}: frames moved by {}", row.name, moved("frames")));
        }
        for &name in JUDGING {
            let expected = match row.counter {
                Some(c) if c == name => 1,
                // A refused or allowed SYN was first counted as gated.
                Some(c) if name == "gated_syns" && GATED_OUTCOMES.contains(&c) => 1,
                _ => 0,
            };
            if moved(name) != expected {
                failures.push(format!("{}: {name} moved by {} (expected {expected})", row.name, moved(name)));
            }
        }
        outcomes.push(outcome);
    }
    ensure!(failures.is_empty(), "{} of {} rows wrong:\n{}", failures.len(), rows.len(), failures.join("\n"));
    Ok(outcomes)
}

const GATED_OUTCOMES: &[&str] =
    &["allowed_grant", "allowed_allowlist", "dropped_no_grant", "dropped_expired", "monitor_would_drop"];

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
        row("stranger", syn(STRANGER, SERVER), Pass, Some("monitor_would_drop")),
        row("expired", syn(EXPIRED, SERVER), Pass, Some("monitor_would_drop")),
        row("ipv6 stranger", syn(STRANGER6, SERVER6), Pass, Some("monitor_would_drop")),
        row("granted", syn(GRANTED, SERVER), Pass, Some("allowed_grant")),
        row("allowlisted", syn(ALLOWLISTED, SERVER), Pass, Some("allowed_allowlist")),
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
        row("listed relay address", syn(STRANGER, SERVER), Drop, Some("dropped_no_grant")),
        row("listed ipv6 relay address", syn(STRANGER6, SERVER6), Drop, Some("dropped_no_grant")),
        row("unlisted mx address", syn(STRANGER, "192.0.2.25"), Pass, None),
        row("unlisted ipv6 mx address", syn(STRANGER6, "2001:db8::25"), Pass, None),
    ];
    check(&gate, Hook::Xdp, &rows)?;
    check(&gate, Hook::Tc, &rows).map(drop)
}

#[test]
fn grants_change_verdicts_live() -> Result<()> {
    use Verdict::*;
    let mut gate = gate(0)?;
    check(&gate, Hook::Xdp, &[row("before grant", syn(STRANGER, SERVER), Drop, Some("dropped_no_grant"))])?;
    gate.grant(STRANGER, Duration::from_secs(60))?;
    check(&gate, Hook::Xdp, &[row("after grant", syn(STRANGER, SERVER), Pass, Some("allowed_grant"))])?;
    gate.grants.revoke(STRANGER.parse()?)?;
    check(&gate, Hook::Xdp, &[row("after revoke", syn(STRANGER, SERVER), Drop, Some("dropped_no_grant"))])?;
    gate.grant(STRANGER, Duration::from_millis(300))?;
    std::thread::sleep(Duration::from_millis(400));
    check(&gate, Hook::Xdp, &[row("after expiry", syn(STRANGER, SERVER), Drop, Some("dropped_expired"))]).map(drop)
}

/// This kernel (5.11 or later) takes the program on the coarse clock, and
/// kernels before 5.11 get it on the precise one: both must judge alike.
#[test]
fn both_clocks_judge_alike() -> Result<()> {
    let rows = header_rows();
    for clock in [GateClock::Coarse, GateClock::Precise] {
        let loaded = LoadedGate::on_clock(0, &[25, 587], clock).with_context(|| format!("loading on {clock:?}"))?;
        let gate = grants_and_allowlist(loaded)?;
        check(&gate, Hook::Xdp, &rows).with_context(|| format!("XDP on {clock:?}"))?;
        check(&gate, Hook::Tc, &rows).with_context(|| format!("TC on {clock:?}"))?;
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
    for clock in [GateClock::Coarse, GateClock::Precise] {
        let mut gate = LoadedGate::on_clock(0, &[25], clock)?;
        for round in 0..ROUNDS {
            let expiry = gate.grants.grant(STRANGER.parse()?, Duration::from_millis(2))?;
            let deadline = Instant::now() + Duration::from_secs(1);
            while !smtpgate::clock::remaining(expiry).is_zero() {
                ensure!(Instant::now() < deadline, "a 2 ms grant still had {:?} left after 1 s", smtpgate::clock::remaining(expiry));
            }
            let action = gate.run_xdp(&frame)?.action;
            ensure!(action == XDP_DROP, "{clock:?}, round {round}: the agent calls the grant expired, yet the program returned {action}");
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
        row("granted passes", syn(GRANTED, SERVER), Pass, Some("allowed_grant")),
        row("ipv4 options: dropped, not answered", syn(STRANGER, SERVER).with(|p| p.ipv4_options = 8), Drop, Some("dropped_no_grant")),
        row("ipv6 ext headers: dropped, not answered", syn(STRANGER6, SERVER6).with(|p| p.ipv6_ext = vec![DEST_OPTS]), Drop, Some("dropped_no_grant")),
    ];
    let resets_before = gate.counters()?["resets_sent"];
    let outcomes = check(&gate, Hook::Xdp, &rows)?;
    ensure!(gate.counters()?["resets_sent"] - resets_before == 2, "resets_sent did not count two replies");
    for (packet, outcome, ip_len) in [(&v4, &outcomes[0], 20), (&v6, &outcomes[1], 40)] {
        let reply = &outcome.frame;
        ensure!(reply.len() == 14 + ip_len + 20, "reply length {} (options and payload must be cut)", reply.len());
        ensure!(reply[0..6] == frames::CLIENT_MAC && reply[6..12] == frames::SERVER_MAC, "MACs not swapped");
        let (sport, dport, seq, ack, flags) = frames::tcp_fields(reply).context("reply has no TCP header")?;
        ensure!((sport, dport) == (packet.dport, packet.sport), "ports not swapped");
        ensure!(flags == RST | ACK, "flags {flags:#x}");
        ensure!(seq == 0 && ack == packet.seq.wrapping_add(1), "seq {seq} ack {ack}");
        ensure!(frames::checksums_valid(reply), "bad checksum in the RST");
    }
    // A tagged SYN is answered on its VLAN.
    let tagged = syn(STRANGER, SERVER).with(|p| p.vlan_tags = vec![ETH_P_8021Q]).build();
    let outcome = gate.run_xdp(&tagged)?;
    ensure!(outcome.action == XDP_TX && outcome.frame[12..16] == tagged[12..16], "VLAN tag not kept");
    Ok(())
}
