//! A cold relay replaying a stream full of grants: the stream is filled
//! first, with pipelined XADDs of entries exactly as the agent publishes
//! them, then a relay that never read it starts, and the time until its
//! kernel map holds every grant is taken. Then what a relay following the
//! stream costs the broker: entries added one by one with the relay
//! reading, and again with no reader.

use std::{
    fs,
    ops::Range,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;
use smtpgate::{
    agent::stream::entry::{Entry, Event},
    gate::{maps::Grants, pins::PinDir},
};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP};
use smtpgate_tests::{
    cluster::{
        auth_file, Redis, Relay, RelaySpec, Router, POP_USER, REDIS_HOST, REDIS_PORT, RELAY_USER,
        STREAM,
    },
    Scratch,
};

use crate::cputime::process_cpu_ns;

/// The host that fills the stream, and the relay, on the sites' network.
const LOADER: &str = "192.0.2.40";
const RELAY: &str = "192.0.2.31";
/// The grants' lifetime, and the relay's longest TTL: the relay reads one
/// TTL (and a minute) back, which covers every entry.
const TTL: Duration = Duration::from_secs(600);
/// Grant slots in the relay's map: every grant, with room to spare (an LRU
/// map may evict before it is quite full).
const MAX_GRANTS: u32 = 262_144;
/// XADDs per pipelined round trip.
const BATCH: usize = 1000;
/// How long the broker may take to answer one batch.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the replay may take at most.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the map is looked at during the replay.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// Entries added one by one, twice, after the replay, and the pause after
/// each: longer than the relay takes to apply one and block again.
pub const SINGLES: usize = 1000;
pub const SINGLE_GAP: Duration = Duration::from_millis(2);

#[derive(Serialize)]
pub struct Replay {
    /// Grants in the stream.
    pub entries: usize,
    /// Adding them: seconds, and how much the broker's resident memory grew
    /// per entry.
    pub load_s: f64,
    pub broker_bytes_per_entry: f64,
    /// From starting the relay's agent to the last grant in its map.
    pub cold_replay_s: f64,
    /// The first look at the map, once the agent said it reads the stream:
    /// seconds after the start, and entries applied by then.
    pub first_look_s: f64,
    pub first_look_applied: usize,
    /// Entries applied per second from the first look to the last grant.
    pub events_per_s: f64,
    /// The relay agent's CPU time from the first look to the last grant,
    /// per entry applied meanwhile (none if all were applied before).
    pub relay_cpu_us_per_entry: Option<f64>,
    /// The broker's CPU time while the relay read, per entry.
    pub broker_cpu_us_per_entry: f64,
    /// The broker's CPU time per entry added alone ([`SINGLES`] of them,
    /// [`SINGLE_GAP`] apart), with the relay following the stream (each
    /// entry wakes its blocked read), then with no reader.
    pub broker_cpu_us_per_single_followed: f64,
    pub broker_cpu_us_per_single_alone: f64,
}

pub fn measure(entries: usize) -> Result<Replay> {
    ensure!(
        entries > 0 && entries + 2 * SINGLES < MAX_GRANTS as usize,
        "{entries} grants do not fit the relay's map"
    );
    // Dropped in reverse order: the relay, the broker, the loader's
    // namespace, the files, the router.
    let router = Router::new()?;
    let files = Scratch::labelled("replay")?;
    let (loader, _) = router.site_host("ld", LOADER)?;
    let redis = Redis::start(&router)?;
    let broker = redis.pid().context("the broker is not running")?;

    let mut conn = loader.run(connect)??;
    let rss_before = resident_bytes(broker)?;
    let load_start = Instant::now();
    let loaded = fill(&mut conn, 0..entries)?;
    let load_s = load_start.elapsed().as_secs_f64();
    ensure!(
        loaded == entries,
        "the broker took {loaded} of {entries} entries"
    );
    let rss_after = resident_bytes(broker)?;

    let auth = auth_file(&files, "relay.auth", RELAY_USER)?;
    let ttl = format!("{}s", TTL.as_secs());
    let max_grants = MAX_GRANTS.to_string();
    // Nothing is delivered: Postfix's maildirs may be any empty directory.
    let mut relay = Relay::prepare(
        &router,
        RelaySpec::new("r1", RELAY),
        (&redis.endpoint(), auth),
        files.dir(),
        &["--ttl", &ttl, "--max-grants", &max_grants],
    )?;
    let keys: Vec<AddrKey> = (0..entries + SINGLES)
        .map(|n| smtpgate::gate::addr::key(super::address(n).into()))
        .collect();

    let broker_cpu_before = process_cpu_ns(broker)?;
    let start = Instant::now();
    relay.start_agent()?;
    let pins = PinDir::new(relay.pin_dir());
    let map: HashMap<MapData, AddrKey, Grant> =
        smtpgate::gate::maps::open_pinned(&pins.map(GRANTS_MAP))?.try_into()?;
    let agent = relay.agent()?.pid().context("the relay's agent is gone")?;
    let first_look_s = start.elapsed().as_secs_f64();
    let first_look_applied = applied(&map, &keys[..entries]);
    let agent_cpu_before = process_cpu_ns(agent)?;
    let mut done = first_look_applied;
    while done < entries {
        ensure!(
            start.elapsed() < REPLAY_TIMEOUT,
            "the relay applied {done} of {entries} entries within {REPLAY_TIMEOUT:?}"
        );
        thread::sleep(LOOK_EVERY);
        done = applied(&map, &keys[..entries]);
    }
    let cold_replay_s = start.elapsed().as_secs_f64();
    let broker_cpu = process_cpu_ns(broker)? - broker_cpu_before;
    let agent_cpu = process_cpu_ns(agent)? - agent_cpu_before;

    let live = Grants::open_pinned(&pins)?.count_live()?;
    ensure!(
        live >= entries,
        "the relay's map holds {live} live grants of the {entries} replayed"
    );

    // What one following relay costs the broker per entry: entries added
    // one by one, paced so that each wakes the relay's blocked read on its
    // own, with the relay following, then with no reader at all.
    let followed = singles(&mut conn, broker, entries)?;
    let end = Instant::now() + REPLAY_TIMEOUT;
    while applied(&map, &keys) < keys.len() {
        ensure!(
            Instant::now() < end,
            "the relay did not apply entries added one by one within {REPLAY_TIMEOUT:?}"
        );
        thread::sleep(LOOK_EVERY);
    }
    relay.kill_agent()?;
    let alone = singles(&mut conn, broker, entries + SINGLES)?;

    let window = entries - first_look_applied;
    Ok(Replay {
        entries,
        load_s,
        broker_bytes_per_entry: rss_after.saturating_sub(rss_before) as f64 / entries as f64,
        cold_replay_s,
        first_look_s,
        first_look_applied,
        // With the whole replay done before the first look, the whole run.
        events_per_s: if first_look_applied < entries {
            (entries - first_look_applied) as f64 / (cold_replay_s - first_look_s)
        } else {
            entries as f64 / cold_replay_s
        },
        relay_cpu_us_per_entry: (window > 0).then(|| agent_cpu as f64 / 1e3 / window as f64),
        broker_cpu_us_per_entry: broker_cpu as f64 / 1e3 / entries as f64,
        broker_cpu_us_per_single_followed: followed,
        broker_cpu_us_per_single_alone: alone,
    })
}

/// How many of `keys` the map holds. A relay applies entries in stream
/// order, so those it holds are the first ones: a binary search over the
/// keys finds where they end, in a few lookups.
fn applied(map: &HashMap<MapData, AddrKey, Grant>, keys: &[AddrKey]) -> usize {
    keys.partition_point(|key| map.get(key, 0).is_ok())
}

/// A connection to the broker as the POP hosts' user, made on a thread in
/// the loader's namespace (where the socket stays).
fn connect() -> Result<redis::Connection> {
    let (user, password) = POP_USER;
    let url = format!("redis://{user}:{password}@{REDIS_HOST}:{REDIS_PORT}/0");
    let client = redis::Client::open(url.as_str())?;
    let conn = client
        .get_connection_with_timeout(BROKER_TIMEOUT)
        .with_context(|| format!("connecting to the broker at {REDIS_HOST}"))?;
    conn.set_read_timeout(Some(BROKER_TIMEOUT))?;
    conn.set_write_timeout(Some(BROKER_TIMEOUT))?;
    Ok(conn)
}

/// Adds the grants numbered `range` to the stream in pipelined batches;
/// returns how many the broker took.
fn fill(conn: &mut redis::Connection, range: Range<usize>) -> Result<usize> {
    let mut taken = 0;
    for first in range.clone().step_by(BATCH) {
        let mut pipe = redis::pipe();
        for n in first..(first + BATCH).min(range.end) {
            pipe.cmd("XADD").arg(STREAM).arg("*");
            for (field, value) in grant(n).fields() {
                pipe.arg(field).arg(value);
            }
        }
        let ids: Vec<String> = pipe
            .query(conn)
            .with_context(|| format!("adding entries {first}.. to the stream"))?;
        taken += ids.len();
    }
    Ok(taken)
}

/// Adds [`SINGLES`] grants from number `first` one at a time,
/// [`SINGLE_GAP`] apart; returns the broker's CPU time per entry, in µs.
fn singles(conn: &mut redis::Connection, broker: u32, first: usize) -> Result<f64> {
    let before = process_cpu_ns(broker)?;
    for n in first..first + SINGLES {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(STREAM).arg("*");
        for (field, value) in grant(n).fields() {
            xadd.arg(field).arg(value);
        }
        let _: String = xadd
            .query(conn)
            .with_context(|| format!("adding entry {n} to the stream"))?;
        thread::sleep(SINGLE_GAP);
    }
    Ok((process_cpu_ns(broker)? - before) as f64 / 1e3 / SINGLES as f64)
}

/// The `n`-th grant, as a POP host publishes a POP3 login.
fn grant(n: usize) -> Entry {
    Entry {
        event: Event::Grant {
            ip: super::address(n).into(),
            prefix: 32,
            ttl: TTL,
            user: Some(format!("u{n}")),
            service: "pop3".into(),
        },
        origin: "bench-loader".into(),
        seq: n as u64 + 1,
    }
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no VmRSS in the broker's status")
}
