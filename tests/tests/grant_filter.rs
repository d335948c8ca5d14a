//! The grant filter in front of the grant map: the program trusts its "not
//! granted", and no interleaving of grants with the agent's rebuilds may
//! make it deny a grant that is in the map.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use aya::maps::{Array, HashMap, MapData};
use smtpgate::gate::{
    addr, clock,
    filter::GrantFilter,
    maps::{open_pinned, Grants},
};
use smtpgate_common::{grant_filter, AddrKey, Grant, GRANTS_MAP, GRANT_FILTER_MAP};
use smtpgate_tests::{
    frames::Packet,
    testrun::{LoadedGate, XDP_DROP, XDP_PASS},
};

const SERVER: &str = "192.0.2.1";

fn syn_from(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(_) => Packet::syn(&ip.to_string(), SERVER, 25),
        IpAddr::V6(_) => Packet::syn(&ip.to_string(), "2001:db8::1", 25),
    }
    .build()
}

/// A grant written into the map behind the filter's back is denied until a
/// rebuild (the agent's sweep) finds it: the program does ask the filter.
#[test]
fn the_program_trusts_the_filter_until_a_rebuild_finds_the_grant() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    let ip: IpAddr = "198.51.100.77".parse()?;
    let mut raw: HashMap<MapData, AddrKey, Grant> =
        open_pinned(&gate.pins().map(GRANTS_MAP))?.try_into()?;
    let grant = Grant {
        expiry_ns: clock::expiry_after(Duration::from_secs(60)),
        ..Grant::default()
    };
    raw.insert(addr::key(ip), grant, 0)?;
    let denied = gate.run_xdp(&syn_from(ip))?;
    ensure!(
        denied.action == XDP_DROP,
        "a grant unknown to the filter passed (action {})",
        denied.action
    );
    gate.grants.sweep()?;
    let passed = gate.run_xdp(&syn_from(ip))?;
    ensure!(
        passed.action == XDP_PASS,
        "the rebuilt filter still denies the grant (action {})",
        passed.action
    );
    Ok(())
}

/// A rebuild given up half way (an agent killed, a scan that failed) must
/// leave the half the gate reads as it was, and grants made meanwhile must
/// pass; the next rebuild takes the abandoned one over and ends it.
#[test]
fn an_abandoned_rebuild_leaves_the_filter_in_use_whole() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    let before: IpAddr = "198.51.100.78".parse()?;
    let during: IpAddr = "198.51.100.79".parse()?;
    gate.grants.grant(before, Duration::from_secs(60))?;
    let filter = GrantFilter::new(open_pinned(&gate.pins().map(GRANT_FILTER_MAP))?)?;
    // Started, never finished.
    let _abandoned = filter.rebuild();
    gate.grants.grant(during, Duration::from_secs(60))?;
    let words: Array<MapData, u64> = open_pinned(&gate.pins().map(GRANT_FILTER_MAP))?.try_into()?;
    let generation = || words.get(&grant_filter::GENERATION, 0);
    let both_pass = |gate: &LoadedGate, when: &str| -> Result<()> {
        for ip in [before, during] {
            let action = gate.run_xdp(&syn_from(ip))?.action;
            ensure!(
                action == XDP_PASS,
                "{when} the takeover, the grant of {ip} was denied (action {action})"
            );
        }
        Ok(())
    };
    ensure!(
        generation()? % 2 == 1,
        "the abandoned rebuild did not leave its generation odd"
    );
    both_pass(&gate, "before")?;
    gate.grants.sweep()?;
    ensure!(
        generation()? % 2 == 0,
        "the next rebuild did not end the abandoned one"
    );
    both_pass(&gate, "after")
}

/// Three writers grant fresh addresses (each through its own handle on the
/// pinned maps, as `smtpgate allow` does) while a fourth rebuilds the filter
/// over and over, as the agent's sweep does, until it has rebuilt it
/// [`REBUILDS`] times. Each grant must pass the moment it is made; then its
/// writer revokes it, which keeps the map small and the rebuilds quick.
#[test]
fn grants_racing_rebuilds_are_never_denied() -> Result<()> {
    const WRITERS: u16 = 3;
    const MAX_GRANTS_EACH: u16 = 30_000;
    const REBUILDS: usize = 600;
    const DEADLINE: Duration = Duration::from_secs(60);
    let gate = LoadedGate::new(0, &[25])?;
    let pins = gate.pins();
    let rebuilds = AtomicUsize::new(0);
    let start = Instant::now();
    let racing = || rebuilds.load(Ordering::Relaxed) < REBUILDS && start.elapsed() < DEADLINE;
    let (granted, denied) = thread::scope(|scope| -> Result<(usize, Vec<IpAddr>)> {
        let rebuilder = scope.spawn(|| -> Result<()> {
            let grants = Grants::open_pinned(&pins)?;
            while racing() {
                grants.scan()?;
                rebuilds.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (pins, gate, racing) = (&pins, &gate, &racing);
                scope.spawn(move || -> Result<(usize, Vec<IpAddr>)> {
                    let mut grants = Grants::open_pinned(pins)?;
                    let (mut granted, mut denied) = (0, Vec::new());
                    for host in (1..=MAX_GRANTS_EACH).take_while(|_| racing()) {
                        let ip: IpAddr = format!("2001:db8:{writer}::{host:x}").parse()?;
                        grants.grant(ip, Duration::from_secs(600))?;
                        granted += 1;
                        if gate.run_xdp(&syn_from(ip))?.action != XDP_PASS {
                            denied.push(ip);
                        }
                        grants.revoke(ip)?;
                    }
                    Ok((granted, denied))
                })
            })
            .collect();
        let (mut granted, mut denied) = (0, Vec::new());
        for writer in writers {
            let (g, d) = writer.join().expect("writer thread")?;
            granted += g;
            denied.extend(d);
        }
        rebuilder.join().expect("rebuilder thread")?;
        Ok((granted, denied))
    })?;
    let rebuilds = rebuilds.into_inner();
    ensure!(
        denied.is_empty(),
        "{} of {granted} fresh grants denied during {rebuilds} rebuilds: {denied:?}",
        denied.len()
    );
    ensure!(
        rebuilds >= REBUILDS,
        "only {rebuilds} rebuilds overlapped the grants: the race was not exercised"
    );
    Ok(())
}
