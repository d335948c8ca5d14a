//! Sweeping expired grants out of the grant map, so that its capacity (an
//! LRU map evicts the least recently used grant when full) goes to live
//! grants, and reporting how full it is; and freeing the slots of refused
//! SYNs too old to replay.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{
    agent::metrics::Metrics,
    gate::maps::{Grants, Sweep},
};

/// Share of the grant map's capacity above which each sweep warns.
const CAPACITY_WARNING: f64 = 0.9;
/// How often the slots of refused SYNs are freed at most, whatever the
/// window: each time reads all of them.
const FREE_AT_MOST_EVERY: Duration = Duration::from_millis(50);
/// Expired grants removed per hold of the grant lock, so that a login waits
/// at most a few milliseconds behind a sweep.
const REMOVALS_PER_LOCK: usize = 1024;

/// The sweep at start, before the program is attached or swapped in: it
/// also builds the grant filter from the grants already pinned, which the
/// program would otherwise deny.
pub fn at_start(grants: &mut Grants, metrics: &Metrics) -> Result<()> {
    report(&grants.sweep()?, grants.capacity(), metrics);
    Ok(())
}

/// Sweeps every `every`, on the blocking pool and through `scanner`, a
/// handle of its own on the pinned grants: neither the runtime nor a login
/// waits for a scan of the whole map. Only the removal of expired grants
/// takes the grant lock, a few at a time. Returns only if a sweep panics.
pub async fn forever(
    mut scanner: Grants,
    grants: Arc<Mutex<Grants>>,
    metrics: Metrics,
    every: Duration,
) -> anyhow::Error {
    // The agent swept at start.
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (grants, metrics) = (grants.clone(), metrics.clone());
        let swept = tokio::task::spawn_blocking(move || {
            once(&scanner, &grants, &metrics);
            scanner
        });
        scanner = match swept.await {
            Ok(scanner) => scanner,
            Err(e) => return anyhow::anyhow!("a grant sweep failed: {e}"),
        };
    }
}

/// One sweep: scans without the grant lock, removes under it.
fn once(scanner: &Grants, grants: &Mutex<Grants>, metrics: &Metrics) {
    let scan = match scanner.scan() {
        Ok(scan) => scan,
        Err(e) => return tracing::warn!("sweeping the grants: {e:#}"),
    };
    let removed = scan
        .expired
        .chunks(REMOVALS_PER_LOCK)
        .map(|chunk| grants.lock().expect("grant map lock").remove_expired(chunk))
        .sum();
    // Grants written during the scan are not in its count; the next sweep
    // counts them.
    grants
        .lock()
        .expect("grant map lock")
        .note_entries(scan.live as u64 + (scan.expired.len() - removed) as u64);
    report(
        &Sweep {
            removed,
            live: scan.live,
        },
        scanner.capacity(),
        metrics,
    );
}

/// Records what a sweep found, and warns when the map is nearly full.
fn report(sweep: &Sweep, capacity: u32, metrics: &Metrics) {
    metrics.record_sweep(sweep.live, sweep.removed);
    if sweep.removed > 0 {
        tracing::debug!(
            removed = sweep.removed,
            live = sweep.live,
            "removed expired grants"
        );
    }
    if sweep.live as f64 >= f64::from(capacity) * CAPACITY_WARNING {
        tracing::warn!(
            live = sweep.live,
            capacity,
            "the grant map is nearly full; the least recently used grants are being evicted (raise --max-grants)"
        );
    }
}

/// Frees the slots of refused SYNs older than the replay window, twice a
/// window (at most every [`FREE_AT_MOST_EVERY`]), so that each takes the
/// next refused SYN: the gate writes only free slots. Runs as long as the
/// agent does.
pub async fn refused_syns(grants: Arc<Mutex<Grants>>, metrics: Metrics, window: Duration) {
    let mut tick = tokio::time::interval((window / 2).max(FREE_AT_MOST_EVERY));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let freed = grants
            .lock()
            .expect("grant map lock")
            .replay()
            .map_or(0, |replay| replay.free_expired());
        metrics.recorded_syns_expired.inc_by(freed as u64);
    }
}
