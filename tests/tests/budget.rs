//! The SYN budget of a grant and IPv6 prefix grants, through the loaded
//! program (BPF_PROG_TEST_RUN) on the kernel's own clock.

use std::{net::IpAddr, thread, time::Duration};

use anyhow::{ensure, Result};
use smtpgate::gate::{
    maps::Terms,
    owners::{Owner, Source},
};
use smtpgate_common::SynBudget;
use smtpgate_tests::{
    frames::Packet,
    testrun::{LoadedGate, Outcome, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS},
};

const GRANTED: &str = "198.51.100.20";
const TTL: Duration = Duration::from_secs(600);
/// A budget slow enough that no scheduling delay of the test refills it
/// during a burst: one SYN a second, three at once.
const ONE_A_SECOND: SynBudget = SynBudget::new(1, 1_000_000_000, 3);

/// Grants `ip` for [`TTL`] within [`ONE_A_SECOND`], as `smtpgate allow` would.
fn grant_with_budget(gate: &mut LoadedGate, ip: IpAddr) -> Result<()> {
    let terms = Terms {
        ttl: TTL,
        budget: ONE_A_SECOND,
    };
    gate.grants
        .grant_for(ip, terms, &Owner::now(ip, None, "-", Source::Cli))
        .map(drop)
}

fn syn_from(ip: &str) -> Vec<u8> {
    let server = if ip.contains(':') {
        "2001:db8::1"
    } else {
        "192.0.2.1"
    };
    Packet::syn(ip, server, 25).build()
}

/// Whether each hook passed the frame, (XDP, TC).
fn passes(gate: &LoadedGate, frame: &[u8]) -> Result<(bool, bool)> {
    let verdict = |outcome: Outcome, pass, drop| -> Result<bool> {
        ensure!(
            outcome.action == pass || outcome.action == drop,
            "unexpected action {}",
            outcome.action
        );
        Ok(outcome.action == pass)
    };
    Ok((
        verdict(gate.run_xdp(frame)?, XDP_PASS, XDP_DROP)?,
        verdict(gate.run_tc(frame)?, TC_ACT_OK, TC_ACT_SHOT)?,
    ))
}

/// SYNs from `ip` on XDP until one is dropped; how many passed. Bounded.
fn passed_until_dropped(gate: &LoadedGate, ip: &str) -> Result<u32> {
    let frame = syn_from(ip);
    for passed in 0..100 {
        if gate.run_xdp(&frame)?.action == XDP_DROP {
            return Ok(passed);
        }
    }
    anyhow::bail!("100 SYNs from {ip} passed: the budget never ran out")
}

#[test]
fn a_granted_source_gets_its_burst_and_then_is_dropped_over_budget() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    grant_with_budget(&mut gate, GRANTED.parse()?)?;
    ensure!(
        passed_until_dropped(&gate, GRANTED)? == 3,
        "the burst of three did not hold"
    );
    let counters = gate.counters()?;
    ensure!(
        counters["dropped_over_budget"] == 1,
        "over-budget drops counted: {}",
        counters["dropped_over_budget"]
    );
    ensure!(
        counters["allowed_grant"] == 3,
        "allowed SYNs counted: {}",
        counters["allowed_grant"]
    );
    // Both hooks share the grant's one bucket.
    ensure!(
        passes(&gate, &syn_from(GRANTED))? == (false, false),
        "a SYN over budget passed a hook"
    );
    Ok(())
}

#[test]
fn the_budget_refills_over_time_but_never_beyond_the_burst() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    grant_with_budget(&mut gate, GRANTED.parse()?)?;
    ensure!(
        passed_until_dropped(&gate, GRANTED)? == 3,
        "the burst of three did not hold"
    );
    thread::sleep(Duration::from_millis(1100));
    let refilled = passed_until_dropped(&gate, GRANTED)?;
    // One second refills one SYN; a slow test run may have waited longer.
    ensure!(
        (1..=3).contains(&refilled),
        "{refilled} SYNs passed after a second's refill"
    );
    Ok(())
}

#[test]
fn a_budget_leaves_other_grants_and_ungated_ports_alone() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    grant_with_budget(&mut gate, GRANTED.parse()?)?;
    gate.grant("198.51.100.21", TTL)?;
    ensure!(
        passed_until_dropped(&gate, GRANTED)? == 3,
        "the burst of three did not hold"
    );
    for _ in 0..20 {
        ensure!(
            passes(&gate, &syn_from("198.51.100.21"))? == (true, true),
            "a grant without a budget ran out"
        );
    }
    let to_other_port = Packet::syn(GRANTED, "192.0.2.1", 80).build();
    ensure!(
        passes(&gate, &to_other_port)? == (true, true),
        "an ungated port was held to the budget"
    );
    Ok(())
}

#[test]
fn extending_a_grant_keeps_what_its_budget_has_used() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    let ip: IpAddr = GRANTED.parse()?;
    grant_with_budget(&mut gate, ip)?;
    ensure!(
        passed_until_dropped(&gate, GRANTED)? == 3,
        "the burst of three did not hold"
    );
    // A login again, as a flooding customer would make: no fresh burst.
    grant_with_budget(&mut gate, ip)?;
    ensure!(
        passed_until_dropped(&gate, GRANTED)? == 0,
        "a repeated login refilled the budget"
    );
    Ok(())
}

#[test]
fn a_revoked_grant_with_a_budget_left_is_dropped_as_ungranted() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    grant_with_budget(&mut gate, GRANTED.parse()?)?;
    ensure!(
        passes(&gate, &syn_from(GRANTED))? == (true, true),
        "the grant did not pass"
    );
    gate.grants.revoke(GRANTED.parse()?)?;
    ensure!(
        passes(&gate, &syn_from(GRANTED))? == (false, false),
        "a revoked grant passed"
    );
    let counters = gate.counters()?;
    ensure!(
        counters["dropped_no_grant"] == 2,
        "no-grant drops: {}",
        counters["dropped_no_grant"]
    );
    ensure!(
        counters["dropped_over_budget"] == 0,
        "a revoked grant counted as over budget"
    );
    Ok(())
}

#[test]
fn an_ipv6_login_grants_its_prefix_and_nothing_beyond() -> Result<()> {
    let mut gate = LoadedGate::with_v6_grant_prefix(0, &[25], 64)?;
    gate.grant("2001:db8:1:2::10", TTL)?;
    for (source, want) in [
        ("2001:db8:1:2::10", true),
        ("2001:db8:1:2:a:b:c:d", true),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", true),
        ("2001:db8:1:3::10", false),
        ("2001:db8:1::10", false),
        // IPv4 sources are not masked.
        ("198.51.100.10", false),
    ] {
        let got = passes(&gate, &syn_from(source))?;
        ensure!(
            got == (want, want),
            "SYN from {source}: passed {got:?}, wanted {want}"
        );
    }
    let listed = gate.grants.live()?;
    ensure!(
        listed.len() == 1 && listed[0].ip.to_string() == "2001:db8:1:2::" && listed[0].prefix == 64,
        "the grant is listed as {:?}",
        listed
            .iter()
            .map(|g| format!("{}/{}", g.ip, g.prefix))
            .collect::<Vec<_>>()
    );
    // Revoking any address of the prefix revokes the prefix.
    ensure!(
        gate.grants.revoke("2001:db8:1:2::99".parse()?)?,
        "revoking inside the prefix found no grant"
    );
    ensure!(
        passes(&gate, &syn_from("2001:db8:1:2::10"))? == (false, false),
        "the prefix passed after its revoke"
    );
    Ok(())
}

#[test]
fn with_full_length_ipv6_grants_a_neighbour_stays_out() -> Result<()> {
    let mut gate = LoadedGate::with_v6_grant_prefix(0, &[25], 128)?;
    gate.grant("2001:db8:1:2::10", TTL)?;
    ensure!(
        passes(&gate, &syn_from("2001:db8:1:2::10"))? == (true, true),
        "the granted address was dropped"
    );
    ensure!(
        passes(&gate, &syn_from("2001:db8:1:2::11"))? == (false, false),
        "its neighbour passed"
    );
    Ok(())
}

/// The allowlist is asked with the source's exact address, not its grant
/// prefix: an allowlisted /128 inside a foreign /64 still passes.
#[test]
fn the_allowlist_sees_the_exact_ipv6_source() -> Result<()> {
    let mut gate = LoadedGate::with_v6_grant_prefix(0, &[25], 64)?;
    gate.allow_prefix("2001:db8:9:9::5/128")?;
    ensure!(
        passes(&gate, &syn_from("2001:db8:9:9::5"))? == (true, true),
        "the allowlisted address was dropped"
    );
    ensure!(
        passes(&gate, &syn_from("2001:db8:9:9::6"))? == (false, false),
        "its neighbour passed"
    );
    Ok(())
}
