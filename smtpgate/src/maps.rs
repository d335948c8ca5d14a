//! Typed access to the gate's maps, whether freshly loaded by `run` or
//! opened from their pins by the one-shot commands (`allow`, `list`, ...).

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use smtpgate_common::{AddrKey, Counter, CounterBlock, GateConfig};

use crate::{addr, clock};

/// Opens a pinned map, whatever its type.
pub fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}

/// The grant map: source address -> expiry on the monotonic clock.
pub struct Grants {
    map: HashMap<MapData, AddrKey, u64>,
    capacity: u32,
}

/// One live grant.
pub struct Grant {
    pub ip: IpAddr,
    pub remaining: Duration,
}

/// What a sweep found.
pub struct Sweep {
    pub removed: usize,
    pub live: usize,
}

impl Grants {
    pub fn new(map: Map) -> Result<Self> {
        let capacity = match &map {
            Map::LruHashMap(data) | Map::HashMap(data) => data.info()?.max_entries(),
            _ => 0,
        };
        let map: HashMap<MapData, AddrKey, u64> =
            map.try_into().context("the grant map has an unexpected type or layout")?;
        Ok(Self { map, capacity })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Grants `ip` until `ttl` from now. An existing longer grant is kept:
    /// a grant is only ever extended, never shortened. Returns the expiry.
    pub fn grant(&mut self, ip: IpAddr, ttl: Duration) -> Result<u64> {
        let key = addr::key(ip);
        let wanted = clock::expiry_after(ttl);
        let expiry = match self.map.get(&key, 0) {
            Ok(current) => current.max(wanted),
            Err(_) => wanted,
        };
        self.map
            .insert(key, expiry, 0)
            .with_context(|| format!("writing the grant for {ip}"))?;
        Ok(expiry)
    }

    /// Removes the grant of `ip`; false if it had none.
    pub fn revoke(&mut self, ip: IpAddr) -> Result<bool> {
        let key = addr::key(ip);
        if self.map.get(&key, 0).is_err() {
            return Ok(false);
        }
        self.map.remove(&key).with_context(|| format!("removing the grant for {ip}"))?;
        Ok(true)
    }

    /// Every grant that has not expired, soonest expiry last.
    pub fn live(&self) -> Result<Vec<Grant>> {
        let now = clock::monotonic_ns();
        let mut grants = Vec::new();
        for entry in self.map.iter() {
            let (key, expiry) = entry.context("reading the grant map")?;
            if expiry > now {
                grants.push(Grant {
                    ip: addr::from_key(key),
                    remaining: Duration::from_nanos(expiry - now),
                });
            }
        }
        grants.sort_by(|a, b| b.remaining.cmp(&a.remaining).then(a.ip.cmp(&b.ip)));
        Ok(grants)
    }

    /// Counts live grants and collects the keys of expired ones.
    fn scan(&self) -> (usize, Vec<AddrKey>) {
        let now = clock::monotonic_ns();
        let mut expired = Vec::new();
        let mut live = 0;
        for entry in self.map.iter() {
            // An entry evicted or removed while we iterate is simply skipped.
            let Ok((key, expiry)) = entry else { continue };
            if expiry > now {
                live += 1;
            } else {
                expired.push(key);
            }
        }
        (live, expired)
    }

    pub fn count_live(&self) -> usize {
        self.scan().0
    }

    /// Deletes expired grants so that the LRU map's capacity goes to live
    /// ones, and counts what is left.
    pub fn sweep(&mut self) -> Sweep {
        let (live, expired) = self.scan();
        let removed = expired.iter().filter(|key| self.map.remove(key).is_ok()).count();
        Sweep { removed, live }
    }
}

/// The per-CPU counters, summed over CPUs.
pub struct Counters {
    map: PerCpuArray<MapData, CounterBlock>,
}

impl Counters {
    pub fn new(map: Map) -> Result<Self> {
        let map = map.try_into().context("the counters map has an unexpected type")?;
        Ok(Self { map })
    }

    pub fn totals(&self) -> Result<Vec<(Counter, u64)>> {
        let per_cpu = self.map.get(&0, 0).context("reading the counters")?;
        Ok(Counter::ALL.iter().map(|&counter| (counter, per_cpu.iter().map(|block| block.get(counter)).sum())).collect())
    }
}

/// The single-slot configuration map.
pub struct Config {
    map: Array<MapData, GateConfig>,
}

impl Config {
    pub fn new(map: Map) -> Result<Self> {
        let map = map.try_into().context("the config map has an unexpected type")?;
        Ok(Self { map })
    }

    pub fn write(&mut self, config: &GateConfig) -> Result<()> {
        self.map.set(0, config, 0).context("writing the gate configuration")
    }
}

/// The gated destination addresses (used when `--dest` is given).
pub struct GatedDests {
    map: HashMap<MapData, AddrKey, u8>,
}

impl GatedDests {
    pub fn new(map: Map) -> Result<Self> {
        let map = map.try_into().context("the gated destinations map has an unexpected type")?;
        Ok(Self { map })
    }

    /// Makes the set exactly `wanted`: new entries first, then stale ones
    /// go, so a destination gated before and after is never briefly open.
    pub fn sync(&mut self, wanted: &[IpAddr]) -> Result<()> {
        let wanted: Vec<AddrKey> = wanted.iter().map(|&ip| addr::key(ip)).collect();
        for key in &wanted {
            self.map.insert(key, 1, 0).context("writing the gated destinations")?;
        }
        let stale: Vec<AddrKey> = self.map.keys().filter_map(Result::ok).filter(|k| !wanted.contains(k)).collect();
        for key in stale {
            self.map.remove(&key).context("updating the gated destinations")?;
        }
        Ok(())
    }
}
