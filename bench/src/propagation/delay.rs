//! From a login line appended to the POP host's log to its grant in the
//! kernel maps of both relays: the POP host's agent reads and parses the
//! line and sends an XADD, the broker syncs it to its log and wakes each
//! relay's XREAD BLOCK, and each relay's agent writes the grant.

use std::{thread, time::Duration};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use smtpgate::gate::pins::PinDir;
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP};
use smtpgate_tests::cluster::{Farm, RelaySpec};

use crate::{cputime::process_cpu_ns, stats::percentile};

/// The relays: names (at most 3 bytes, for interface names) and addresses
/// on the sites' network.
const RELAYS: [RelaySpec; 2] = [
    RelaySpec::new("r1", "192.0.2.31"),
    RelaySpec::new("r2", "192.0.2.32"),
];
/// How long grants last: past the end of the measurement.
const TTL: &str = "10m";
/// Grant slots in each relay's map: every login's, with room to spare.
const MAX_GRANTS: u32 = 8192;
/// A login whose grant is not in both maps by then counts as lost.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between logins, so that each finds the farm idle, as sparse real
/// logins do, rather than measuring a backlog.
pub const GAP: Duration = Duration::from_millis(5);

#[derive(Serialize)]
pub struct Delay {
    pub relays: usize,
    pub logins: usize,
    /// From the line appended to the grant in both relays' maps.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// CPU time over the logins, per login: the broker's (an XADD synced
    /// to its log, and each relay's read woken and answered), and each
    /// relay agent's on average (a read and a grant).
    pub broker_cpu_us_per_login: f64,
    pub relay_cpu_us_per_login: f64,
}

pub fn measure(logins: usize) -> Result<Delay> {
    ensure!(
        logins < MAX_GRANTS as usize,
        "{logins} logins do not fit the relays' maps"
    );
    let mut farm = Farm::start_sized(TTL, &RELAYS, false, MAX_GRANTS)?;
    let maps = farm
        .relays
        .iter()
        .map(|relay| -> Result<HashMap<MapData, AddrKey, Grant>> {
            let pins = PinDir::new(relay.pin_dir());
            Ok(smtpgate::gate::maps::open_pinned(&pins.map(GRANTS_MAP))?.try_into()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let broker = farm.redis.pid().context("the broker is not running")?;
    let agents = farm
        .relays
        .iter_mut()
        .map(|relay| relay.agent()?.pid().context("a relay's agent is gone"))
        .collect::<Result<Vec<_>>>()?;
    let cpu = || -> Result<(u64, u64)> {
        let relays = agents
            .iter()
            .map(|pid| process_cpu_ns(*pid))
            .sum::<Result<u64>>()?;
        Ok((process_cpu_ns(broker)?, relays))
    };
    let cpu_before = cpu()?;
    let mut delays = Vec::with_capacity(logins);
    for n in 0..logins {
        let ip = super::address(n);
        let key = smtpgate::gate::addr::key(ip.into());
        let start = farm.pop.login_line(&ip.to_string(), &format!("u{n}"))?;
        let mut missing = maps.len();
        let mut seen = vec![false; maps.len()];
        // Poll without sleeping: a sleep would round every delay up to the
        // timer's granularity. A yield lets the farm's processes run first
        // when they share this core.
        while missing > 0 {
            for (map, seen) in maps.iter().zip(seen.iter_mut()) {
                if !*seen && map.get(&key, 0).is_ok() {
                    *seen = true;
                    missing -= 1;
                }
            }
            ensure!(
                start.elapsed() < TIMEOUT,
                "the login of {ip} reached {} of {} relays within {TIMEOUT:?}",
                maps.len() - missing,
                maps.len()
            );
            thread::yield_now();
        }
        delays.push(start.elapsed().as_secs_f64() * 1e6);
        thread::sleep(GAP);
    }
    let cpu_after = cpu()?;
    let per_login_us = |ns: u64| ns as f64 / 1e3 / logins as f64;
    // The farm goes on drop: agents, broker, namespaces, router.
    Ok(Delay {
        relays: maps.len(),
        logins,
        broker_cpu_us_per_login: per_login_us(cpu_after.0 - cpu_before.0),
        relay_cpu_us_per_login: per_login_us(cpu_after.1 - cpu_before.1) / agents.len() as f64,
        p50_us: percentile(&delays, 50.0),
        p99_us: percentile(&delays, 99.0),
        max_us: percentile(&delays, 100.0),
    })
}
