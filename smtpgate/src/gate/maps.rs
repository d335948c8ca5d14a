//! Typed access to the gate's maps, whether freshly loaded by `run` or
//! opened from their pins by the one-shot commands (`allow`, `list`, ...).

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray};
use smtpgate_common::{AddrKey, Counter, CounterBlock, GateConfig, GRANTS_MAP, GRANT_FILTER_MAP};

use crate::gate::{addr, batch, clock, filter::GrantFilter, pins::PinDir};

/// Opens a pinned map, whatever its type.
pub fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}

/// The grant map: source address -> expiry on the monotonic clock, with
/// the grant filter in front of it.
pub struct Grants {
    map: HashMap<MapData, AddrKey, u64>,
    /// Absent where a gate from before the filter is still pinned.
    filter: Option<GrantFilter>,
    capacity: u32,
}

/// One live grant.
pub struct Grant {
    pub ip: IpAddr,
    pub remaining: Duration,
}

/// What a scan of the grant map found.
pub struct Scan {
    pub live: usize,
    pub expired: Vec<AddrKey>,
}

/// What a sweep found and did.
pub struct Sweep {
    pub removed: usize,
    pub live: usize,
}

impl Grants {
    pub fn new(map: Map, filter: Option<Map>) -> Result<Self> {
        let capacity = match &map {
            Map::LruHashMap(data) | Map::HashMap(data) => data.info()?.max_entries(),
            _ => 0,
        };
        let map: HashMap<MapData, AddrKey, u64> = map
            .try_into()
            .context("the grant map has an unexpected type or layout")?;
        let filter = filter.map(GrantFilter::new).transpose()?;
        Ok(Self {
            map,
            filter,
            capacity,
        })
    }

    /// Opens the pinned grant map and its filter.
    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        let filter = pins.map(GRANT_FILTER_MAP);
        let filter = if filter.exists() {
            Some(open_pinned(&filter)?)
        } else {
            None
        };
        Self::new(open_pinned(&pins.map(GRANTS_MAP))?, filter)
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
        let map = &mut self.map;
        let mut insert = || {
            map.insert(key, expiry, 0)
                .with_context(|| format!("writing the grant for {ip}"))
        };
        match &self.filter {
            Some(filter) => filter.admit(&key, insert)?,
            None => insert()?,
        }
        Ok(expiry)
    }

    /// Removes the grant of `ip`; false if it had none.
    pub fn revoke(&mut self, ip: IpAddr) -> Result<bool> {
        let key = addr::key(ip);
        if self.map.get(&key, 0).is_err() {
            return Ok(false);
        }
        self.map
            .remove(&key)
            .with_context(|| format!("removing the grant for {ip}"))?;
        Ok(true)
    }

    /// Every grant that has not expired, soonest expiry last.
    pub fn live(&self) -> Result<Vec<Grant>> {
        let now = clock::monotonic_ns();
        let mut grants = Vec::new();
        self.for_each(|&key, &expiry| {
            if expiry > now {
                grants.push(Grant {
                    ip: addr::from_key(key),
                    remaining: Duration::from_nanos(expiry - now),
                });
            }
        })?;
        grants.sort_by(|a, b| b.remaining.cmp(&a.remaining).then(a.ip.cmp(&b.ip)));
        Ok(grants)
    }

    pub fn count_live(&self) -> Result<usize> {
        let now = clock::monotonic_ns();
        let mut live = 0;
        self.for_each(|_, &expiry| live += usize::from(expiry > now))?;
        Ok(live)
    }

    fn for_each(&self, each: impl FnMut(&AddrKey, &u64)) -> Result<()> {
        batch::for_each_entry(self.map.map(), each).context("reading the grant map")
    }

    /// Counts live grants and collects expired ones, rebuilding the filter
    /// on the way: that clears the bits of grants removed since the last
    /// scan. Expired grants keep theirs until the next scan, so that the
    /// gate tells their SYNs apart as expired.
    ///
    /// Only reads the map: the agent scans through a handle of its own while
    /// logins go on granting through another.
    pub fn scan(&self) -> Result<Scan> {
        let now = clock::monotonic_ns();
        let mut rebuild = self.filter.as_ref().map(GrantFilter::rebuild);
        let mut scan = Scan {
            live: 0,
            expired: Vec::new(),
        };
        self.for_each(|key, &expiry| {
            if let Some(rebuild) = &mut rebuild {
                rebuild.add(key);
            }
            if expiry > now {
                scan.live += 1;
            } else {
                scan.expired.push(*key);
            }
        })?;
        if let Some(rebuild) = rebuild {
            rebuild.finish();
        }
        Ok(scan)
    }

    /// Removes those of `keys` whose grant is still expired: a source
    /// granted again since the scan keeps its new grant. Returns how many
    /// went.
    pub fn remove_expired(&mut self, keys: &[AddrKey]) -> usize {
        let now = clock::monotonic_ns();
        let map = &mut self.map;
        keys.iter()
            .filter(|key| {
                matches!(map.get(key, 0), Ok(expiry) if expiry <= now) && map.remove(key).is_ok()
            })
            .count()
    }

    /// Scans and removes the expired grants, so that the LRU map's capacity
    /// goes to live ones.
    pub fn sweep(&mut self) -> Result<Sweep> {
        let scan = self.scan()?;
        Ok(Sweep {
            removed: self.remove_expired(&scan.expired),
            live: scan.live,
        })
    }
}

/// The per-CPU counters, summed over CPUs.
pub struct Counters {
    map: PerCpuArray<MapData, CounterBlock>,
}

impl Counters {
    pub fn new(map: Map) -> Result<Self> {
        let map = map
            .try_into()
            .context("the counters map has an unexpected type")?;
        Ok(Self { map })
    }

    pub fn totals(&self) -> Result<Vec<(Counter, u64)>> {
        let per_cpu = self.map.get(&0, 0).context("reading the counters")?;
        Ok(Counter::ALL
            .iter()
            .map(|&counter| {
                (
                    counter,
                    per_cpu.iter().map(|block| block.get(counter)).sum(),
                )
            })
            .collect())
    }
}

/// The single-slot configuration map.
pub struct Config {
    map: Array<MapData, GateConfig>,
}

impl Config {
    pub fn new(map: Map) -> Result<Self> {
        let map = map
            .try_into()
            .context("the config map has an unexpected type")?;
        Ok(Self { map })
    }

    pub fn write(&mut self, config: &GateConfig) -> Result<()> {
        self.map
            .set(0, config, 0)
            .context("writing the gate configuration")
    }
}

/// The gated destination addresses (used when `--dest` is given).
pub struct GatedDests {
    map: HashMap<MapData, AddrKey, u8>,
}

impl GatedDests {
    pub fn new(map: Map) -> Result<Self> {
        let map = map
            .try_into()
            .context("the gated destinations map has an unexpected type")?;
        Ok(Self { map })
    }

    /// Makes the set exactly `wanted`: new entries first, then stale ones
    /// go, so a destination gated before and after is never briefly open.
    pub fn sync(&mut self, wanted: &[IpAddr]) -> Result<()> {
        let wanted: Vec<AddrKey> = wanted.iter().map(|&ip| addr::key(ip)).collect();
        for key in &wanted {
            self.map
                .insert(key, 1, 0)
                .context("writing the gated destinations")?;
        }
        let stale: Vec<AddrKey> = self
            .map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            self.map
                .remove(&key)
                .context("updating the gated destinations")?;
        }
        Ok(())
    }
}
