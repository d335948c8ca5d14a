//! The delay from a login line appended to the mail log to its grant being
//! in the kernel's map, through the real agent (`smtpgate run --log FILE`)
//! in a namespace of its own, and the agent's memory afterwards: once with
//! an empty map, once with a million grants that the agent sweeps every
//! second meanwhile. With the full map, also how long reading all of it
//! takes, as each sweep and `smtpgate list` do.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use smtpgate::gate::{maps::Grants, pins::PinDir};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP};
use smtpgate_tests::Lab;

use super::log;
use crate::stats::{median, percentile};

/// A login whose grant has not shown up by then counts as lost.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between logins, so that each one finds the agent idle, as sparse
/// real logins do, rather than measuring a backlog.
pub const GAP: Duration = Duration::from_millis(2);
/// How often the agent sweeps while grants are preloaded: often, so that
/// many logins land during a sweep.
pub const SWEEP_EVERY: &str = "1s";
/// How long preloaded grants last: past the end of the measurement.
const PRELOAD_TTL: Duration = Duration::from_secs(3600);
/// Reads of the whole map timed for each way of reading it.
const READ_ROUNDS: usize = 3;

#[derive(Serialize)]
pub struct GrantDelay {
    /// Grants in the map before the first login.
    pub preloaded: u32,
    pub logins: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The agent's resident memory after the logins, and its peak.
    pub agent_rss_kib: u64,
    pub agent_peak_rss_kib: u64,
    /// With preloaded grants: reading all of them.
    pub read_all: Option<ReadAll>,
}

/// Milliseconds to read every grant in the map, median of [`READ_ROUNDS`]:
/// in batches, as the agent does, and one entry at a time (two system calls
/// each), the way aya's map iterator reads, as the baseline.
#[derive(Serialize)]
pub struct ReadAll {
    pub batched_ms: f64,
    pub per_entry_ms: f64,
}

/// Measures `logins` logins after `preload` grants of other addresses.
pub fn measure(logins: usize, preload: u32) -> Result<GrantDelay> {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("mail.log");
    fs::write(&log_path, b"")?;
    let mut lab = Lab::new()?;
    lab.start_agent(&[
        "--log",
        path_str(&log_path)?,
        "--state-dir",
        path_str(dir.path())?,
        "--sweep-interval",
        SWEEP_EVERY,
        // Each IPv6 login its own grant, as each IPv4 one is: with the
        // default /64 they would all share one.
        "--ipv6-grant-prefix",
        "128",
    ])?;
    let pins = PinDir::new(lab.bpffs.pin_dir());
    let grants: HashMap<MapData, AddrKey, Grant> =
        smtpgate::gate::maps::open_pinned(&pins.map(GRANTS_MAP))?.try_into()?;
    let read_all = (preload > 0)
        .then(|| preload_grants(&pins, preload, &grants))
        .transpose()?;
    let mut log = OpenOptions::new().append(true).open(&log_path)?;
    let mut delays = Vec::with_capacity(logins);
    for n in 0..logins {
        let ip = login_address(n);
        let key = smtpgate::gate::addr::key(ip);
        let line = log::login(&log::syslog_stamp(), n as u32, ip);
        let start = Instant::now();
        log.write_all(line.as_bytes())?;
        // Poll without sleeping: a sleep would round every delay up to the
        // timer's granularity.
        while grants.get(&key, 0).is_err() {
            ensure!(
                start.elapsed() < TIMEOUT,
                "the login of {ip} was not granted within {TIMEOUT:?}"
            );
        }
        delays.push(start.elapsed().as_secs_f64() * 1e6);
        thread::sleep(GAP);
    }
    let (agent_rss_kib, agent_peak_rss_kib) = agent_memory(&lab.bpffs.pin_dir())?;
    Ok(GrantDelay {
        preloaded: preload,
        logins,
        p50_us: percentile(&delays, 50.0),
        p99_us: percentile(&delays, 99.0),
        max_us: percentile(&delays, 100.0),
        agent_rss_kib,
        agent_peak_rss_kib,
        read_all,
    })
}

/// Grants `count` addresses no login uses, through the pins as `smtpgate
/// allow` does, and times reading them all back.
fn preload_grants(
    pins: &PinDir,
    count: u32,
    map: &HashMap<MapData, AddrKey, Grant>,
) -> Result<ReadAll> {
    let mut grants = Grants::open_pinned(pins)?;
    for n in 0..count {
        grants.grant(preloaded_address(n), PRELOAD_TTL)?;
    }
    let time = |read: &dyn Fn() -> Result<usize>| -> Result<f64> {
        let mut times = Vec::with_capacity(READ_ROUNDS);
        for _ in 0..READ_ROUNDS {
            let start = Instant::now();
            let seen = read()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            ensure!(
                seen >= count as usize,
                "read {seen} grants of the {count} preloaded"
            );
        }
        Ok(median(&times))
    };
    Ok(ReadAll {
        batched_ms: time(&|| grants.count_live())?,
        per_entry_ms: time(&|| Ok(map.iter().filter_map(Result::ok).count()))?,
    })
}

/// Addresses for preloaded grants, apart from [`login_address`]'s.
fn preloaded_address(n: u32) -> IpAddr {
    Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, (n >> 16) as u16, n as u16).into()
}

/// Distinct documentation addresses: the two spare IPv4 /24s, then IPv6.
fn login_address(n: usize) -> IpAddr {
    match n {
        0..=255 => Ipv4Addr::new(198, 51, 100, n as u8).into(),
        256..=511 => Ipv4Addr::new(203, 0, 113, (n - 256) as u8).into(),
        _ => Ipv6Addr::new(0x2001, 0xdb8, 4, 0, 0, 0, (n >> 16) as u16, n as u16).into(),
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("temporary paths are UTF-8")
}

/// Resident memory (now, peak) of the agent using `pin_dir`, in KiB. The
/// lab does not hand out its child, so the agent is found by the one
/// argument no other process has: this lab's pin directory.
fn agent_memory(pin_dir: &Path) -> Result<(u64, u64)> {
    let pin_dir = pin_dir.to_string_lossy();
    for entry in fs::read_dir("/proc")? {
        let proc_dir = entry?.path();
        let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
        if !args.any(|arg| arg == pin_dir) {
            continue;
        }
        let status = fs::read_to_string(proc_dir.join("status"))?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .ok()
        };
        if let (Some(rss), Some(peak)) = (field("VmRSS:"), field("VmHWM:")) {
            return Ok((rss, peak));
        }
    }
    bail!("the agent's process was not found")
}
