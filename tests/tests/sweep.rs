//! The sweep of expired grants: it reads the whole map in batches, while
//! logins go on granting, and removes only grants that are still expired.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use smtpgate::gate::{addr, maps::open_pinned};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP};
use smtpgate_tests::{
    frames::Packet,
    testrun::{LoadedGate, TICK, XDP_PASS},
    Lab,
};

/// `count` distinct addresses of `family`, from 198.51.100.0/24 upwards (or
/// 2001:db8:5::/48), numbered from `first`.
fn hosts(v6: bool, first: u32, count: u32) -> impl Iterator<Item = IpAddr> {
    (first..first + count).map(move |n| match v6 {
        false => IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(198, 51, 100, 0)) + n,
        )),
        true => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            5,
            0,
            0,
            0,
            (n >> 16) as u16,
            n as u16,
        )),
    })
}

/// Far more grants than one batch holds, of both families, some expired:
/// the scan must see each exactly once and tell them apart.
#[test]
fn a_scan_sees_every_grant_once_and_the_sweep_removes_the_expired() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    let live: BTreeSet<IpAddr> = hosts(false, 0, 12_000)
        .chain(hosts(true, 0, 8_000))
        .collect();
    let expired: BTreeSet<IpAddr> = hosts(false, 20_000, 3_000)
        .chain(hosts(true, 20_000, 2_000))
        .collect();
    for &ip in &live {
        gate.grants.grant(ip, Duration::from_secs(600))?;
    }
    for &ip in &expired {
        gate.grants.grant(ip, Duration::from_nanos(1))?;
    }
    thread::sleep(2 * TICK);

    let listed: Vec<IpAddr> = gate.grants.live()?.iter().map(|g| g.ip).collect();
    ensure!(
        listed.len() == live.len(),
        "list shows {} grants, {} are live",
        listed.len(),
        live.len()
    );
    ensure!(
        listed.iter().copied().collect::<BTreeSet<_>>() == live,
        "list shows other grants than the live ones"
    );

    let scan = gate.grants.scan()?;
    let found: BTreeSet<IpAddr> = scan
        .expired
        .iter()
        .map(|&key| addr::from_key(key))
        .collect();
    ensure!(
        scan.live == live.len(),
        "the scan counted {} live grants of {}",
        scan.live,
        live.len()
    );
    ensure!(
        scan.expired.len() == expired.len() && found == expired,
        "the scan found {} expired grants, not the {} made",
        scan.expired.len(),
        expired.len()
    );

    let sweep = gate.grants.sweep()?;
    ensure!(
        (sweep.live, sweep.removed) == (live.len(), expired.len()),
        "the sweep counted {} live and removed {}",
        sweep.live,
        sweep.removed
    );
    let left = gate.grants.scan()?;
    ensure!(
        left.live == live.len() && left.expired.is_empty(),
        "after the sweep: {} live, {} expired",
        left.live,
        left.expired.len()
    );
    Ok(())
}

/// The agent scans without the grant lock, so a customer may log in again
/// between the scan that found the old grant expired and its removal: the
/// new grant must survive.
#[test]
fn a_grant_renewed_after_the_scan_is_not_removed() -> Result<()> {
    let mut gate = LoadedGate::new(0, &[25])?;
    let customer: IpAddr = "192.0.2.2".parse()?;
    let stale: IpAddr = "192.0.2.3".parse()?;
    gate.grants.grant(customer, Duration::from_nanos(1))?;
    gate.grants.grant(stale, Duration::from_nanos(1))?;
    thread::sleep(2 * TICK);
    let scan = gate.grants.scan()?;
    ensure!(
        scan.expired.len() == 2,
        "the scan found {} expired grants, not 2",
        scan.expired.len()
    );

    gate.grants.grant(customer, Duration::from_secs(60))?;
    let removed = gate.grants.remove_expired(&scan.expired);
    ensure!(
        removed == 1,
        "{removed} grants removed; only the one not renewed should go"
    );
    let listed: Vec<IpAddr> = gate.grants.live()?.iter().map(|g| g.ip).collect();
    ensure!(
        listed == [customer],
        "live grants after the removal: {listed:?}"
    );
    let syn = Packet::syn("192.0.2.2", "192.0.2.1", 25).build();
    let action = gate.run_xdp(&syn)?.action;
    ensure!(
        action == XDP_PASS,
        "the renewed grant's SYN got action {action}"
    );
    Ok(())
}

/// The running agent sweeps in the background: expired grants leave the
/// pinned map, live ones stay.
#[test]
fn the_agent_removes_expired_grants_from_the_map() -> Result<()> {
    let lab = Lab::gated(&["--sweep-interval", "1s"])?;
    let short: Vec<String> = hosts(false, 1, 3).map(|ip| ip.to_string()).collect();
    for ip in &short {
        lab.smtpgate_ok(&["allow", ip, "--ttl", "1s"])?;
    }
    lab.smtpgate_ok(&["allow", "203.0.113.7", "--ttl", "10m"])?;
    let map: HashMap<MapData, AddrKey, Grant> =
        open_pinned(&smtpgate::gate::pins::PinDir::new(lab.bpffs.pin_dir()).map(GRANTS_MAP))?
            .try_into()?;
    let in_map = || -> BTreeSet<IpAddr> {
        map.keys()
            .filter_map(Result::ok)
            .map(addr::from_key)
            .collect()
    };
    ensure!(
        in_map().len() == 4,
        "the map holds {:?} after four grants",
        in_map()
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while in_map().len() > 1 {
        ensure!(
            Instant::now() < deadline,
            "expired grants still in the map after 5 s: {:?}",
            in_map()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<IpAddr> = in_map().into_iter().collect();
    ensure!(
        left == ["203.0.113.7".parse::<IpAddr>().context("address")?],
        "the sweep left {left:?}"
    );
    Ok(())
}
