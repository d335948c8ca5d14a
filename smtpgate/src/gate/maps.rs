//! Typed access to the gate's maps, whether freshly loaded by `run` or
//! opened from their pins by the one-shot commands (`allow`, `list`, ...).

use std::{net::IpAddr, path::Path, time::Duration, time::SystemTime};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, IterableMap, Map, MapData, PerCpuArray};
use smtpgate_common::{
    AddrKey, Counter, CounterBlock, GateConfig, Grant, SynBudget, CONFIG_MAP, GRANTS_MAP,
    GRANT_FILTER_MAP, GRANT_OWNERS_MAP,
};

use crate::gate::{
    addr, batch, clock,
    filter::GrantFilter,
    owners::{Owner, Owners},
    pins::PinDir,
    replay::{self, Replay},
};

/// Opens a pinned map, whatever its type.
pub fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("opening {}", path.display()))
}

/// The grant map: source key -> expiry on the monotonic clock and SYN
/// budget, with the grant filter in front of it and the record of who
/// earned each grant beside it.
pub struct Grants {
    map: HashMap<MapData, AddrKey, Grant>,
    /// Absent where a gate from before the filter is still pinned.
    filter: Option<GrantFilter>,
    owners: Owners,
    capacity: u32,
    /// Entries in the map as this handle knows them: counted by the last
    /// sweep, then moved by this handle's own writes and removals.
    entries: u64,
    /// Fresh grants this handle wrote into a full map, each of which made
    /// the LRU map evict the grant used least recently. A lower bound: the
    /// kernel's per-CPU free lists may evict a little before the map is
    /// full.
    evictions: u64,
    /// Every IPv6 grant covers this prefix of its address: the gate looks
    /// IPv6 sources up masked to it (see `GateConfig::v6_mask`).
    v6_prefix: u8,
    /// Where this handle writes grants for customers (the agent, `allow`):
    /// what replays the SYN each grant's source was refused just before.
    replay: Option<Replay>,
}

/// How long a new grant lasts and how fast it may open connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    pub ttl: Duration,
    pub budget: SynBudget,
}

/// One live grant, as `list` shows it.
pub struct LiveGrant {
    /// The address, or the first address of the prefix granted.
    pub ip: IpAddr,
    /// Bits of `ip` the grant covers: 32 or 128 for one address.
    pub prefix: u8,
    pub remaining: Duration,
    /// `None` for a grant carried over from a layout that kept no owners.
    pub owner: Option<Owner>,
}

impl LiveGrant {
    /// The address that logged in, where it is known; else the first of
    /// the prefix.
    pub fn address(&self) -> IpAddr {
        self.owner.as_ref().map_or(self.ip, |owner| owner.address)
    }

    /// The address or prefix the grant covers.
    pub fn covers(&self) -> String {
        match self.ip {
            IpAddr::V6(_) if self.prefix < 128 => format!("{}/{}", self.ip, self.prefix),
            ip => ip.to_string(),
        }
    }
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
    /// The grant map, its filter and its owners of a gate whose IPv6
    /// grants cover `/v6_prefix`.
    pub fn new(map: Map, filter: Option<Map>, owners: Map, v6_prefix: u8) -> Result<Self> {
        let capacity = match &map {
            Map::LruHashMap(data) | Map::HashMap(data) => data.info()?.max_entries(),
            _ => 0,
        };
        let map: HashMap<MapData, AddrKey, Grant> = map
            .try_into()
            .context("the grant map has an unexpected type or layout")?;
        let filter = filter.map(GrantFilter::new).transpose()?;
        Ok(Self {
            map,
            filter,
            owners: Owners::new(owners)?,
            capacity,
            entries: 0,
            evictions: 0,
            v6_prefix,
            replay: None,
        })
    }

    /// Replays, after each grant this handle writes, the SYN refused just
    /// before it.
    pub fn replay_with(&mut self, replay: Replay) {
        self.replay = Some(replay);
    }

    /// The replay this handle's grants end in, if any.
    pub fn replay(&self) -> Option<&Replay> {
        self.replay.as_ref()
    }

    /// Opens the pinned grant map, its filter and its owners, with the
    /// IPv6 grant prefix of the pinned configuration.
    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        let filter = pins.map(GRANT_FILTER_MAP);
        let filter = if filter.exists() {
            Some(open_pinned(&filter)?)
        } else {
            None
        };
        let config = Config::new(open_pinned(&pins.map(CONFIG_MAP))?)?.read()?;
        Self::new(
            open_pinned(&pins.map(GRANTS_MAP))?,
            filter,
            open_pinned(&pins.map(GRANT_OWNERS_MAP))?,
            config.v6_grant_prefix(),
        )
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The key `ip`'s grant is stored under.
    fn key(&self, ip: IpAddr) -> AddrKey {
        replay::grant_key(ip, self.v6_prefix)
    }

    /// Grants `ip` until `ttl` from now, with no SYN budget and no record
    /// of who earned it.
    pub fn grant(&mut self, ip: IpAddr, ttl: Duration) -> Result<u64> {
        let terms = Terms {
            ttl,
            budget: SynBudget::UNLIMITED,
        };
        self.write(ip, clock::expiry_after(ttl), terms.budget, None)
    }

    /// Grants `ip` on `terms`, earned by `owner`. An existing longer grant
    /// is kept: a grant is only ever extended, never shortened; its budget
    /// takes the new terms but keeps what it has used. Returns the expiry.
    pub fn grant_for(&mut self, ip: IpAddr, terms: Terms, owner: &Owner) -> Result<u64> {
        self.write(
            ip,
            clock::expiry_after(terms.ttl),
            terms.budget,
            Some(owner),
        )
    }

    /// Grants `ip` until `expiry` (on the monotonic clock) within `budget`,
    /// as [`Grants::grant_for`] does, recorded as earned by `owner`, or
    /// keeping whatever owner it has.
    pub fn grant_until(
        &mut self,
        ip: IpAddr,
        expiry: u64,
        budget: SynBudget,
        owner: Option<&Owner>,
    ) -> Result<u64> {
        self.write(ip, expiry, budget, owner)
    }

    fn write(
        &mut self,
        ip: IpAddr,
        wanted: u64,
        budget: SynBudget,
        owner: Option<&Owner>,
    ) -> Result<u64> {
        let key = self.key(ip);
        let current = self.map.get(&key, 0);
        if current.is_err() {
            if self.entries >= u64::from(self.capacity) {
                self.evictions += 1;
            } else {
                self.entries += 1;
            }
        }
        let grant = match current {
            Ok(current) => Grant {
                expiry_ns: current.expiry_ns.max(wanted),
                budget: SynBudget {
                    next_ns: current.budget.next_ns,
                    ..budget
                },
            },
            Err(_) => Grant {
                expiry_ns: wanted,
                budget,
            },
        };
        // The owner goes first, so that whoever finds the grant finds it.
        if let Some(owner) = owner {
            self.owners.record(&key, owner)?;
        }
        let map = &mut self.map;
        let mut insert = || {
            map.insert(key, grant, 0)
                .with_context(|| format!("writing the grant for {ip}"))
        };
        match &self.filter {
            Some(filter) => filter.admit(&key, insert)?,
            None => insert()?,
        }
        if let Some(replay) = &self.replay {
            replay.after_grant(&key, self.v6_prefix);
        }
        Ok(grant.expiry_ns)
    }

    /// Removes the grant covering `ip`; false if there was none.
    pub fn revoke(&mut self, ip: IpAddr) -> Result<bool> {
        self.revoke_older(ip, None)
    }

    /// Removes the grant covering `ip` if it was granted before `before`
    /// (any grant, without it): a revoke read back from a stream must not
    /// remove a login made after it. False if nothing was removed.
    pub fn revoke_older(&mut self, ip: IpAddr, before: Option<SystemTime>) -> Result<bool> {
        let key = self.key(ip);
        self.revoke_key(&key, before)
            .with_context(|| format!("removing the grant for {ip}"))
    }

    /// Removes every grant `user` earned; returns what they covered.
    pub fn revoke_user(&mut self, user: &str) -> Result<Vec<IpAddr>> {
        self.revoke_user_older(user, None)
    }

    /// Removes every grant `user` earned before `before` (every one,
    /// without it); returns what they covered.
    pub fn revoke_user_older(
        &mut self,
        user: &str,
        before: Option<SystemTime>,
    ) -> Result<Vec<IpAddr>> {
        let mut revoked = Vec::new();
        for key in self.owners.keys_of(user)? {
            if self.revoke_key(&key, before)? {
                revoked.push(addr::from_key(key));
            }
        }
        Ok(revoked)
    }

    fn revoke_key(&mut self, key: &AddrKey, before: Option<SystemTime>) -> Result<bool> {
        if let (Some(before), Some(owner)) = (before, self.owners.get(key)) {
            if owner.granted_at >= before {
                return Ok(false);
            }
        }
        let had = self.map.get(key, 0).is_ok();
        if had {
            self.map.remove(key)?;
            self.entries = self.entries.saturating_sub(1);
        }
        self.owners.forget(key);
        Ok(had)
    }

    /// Who earned the live grant covering `ip`, if one does.
    pub fn owner_of(&self, ip: IpAddr) -> Option<Owner> {
        let key = self.key(ip);
        let grant = self.map.get(&key, 0).ok()?;
        (grant.expiry_ns > clock::monotonic_ns()).then(|| self.owners.get(&key))?
    }

    /// Every grant that has not expired, soonest expiry last.
    pub fn live(&self) -> Result<Vec<LiveGrant>> {
        let now = clock::monotonic_ns();
        let mut grants = Vec::new();
        self.for_each(|key, grant| {
            if grant.expiry_ns > now {
                let ip = addr::from_key(*key);
                let prefix = match ip {
                    IpAddr::V4(_) => 32,
                    IpAddr::V6(_) => self.v6_prefix,
                };
                grants.push(LiveGrant {
                    ip,
                    prefix,
                    remaining: Duration::from_nanos(grant.expiry_ns - now),
                    owner: self.owners.get(key),
                });
            }
        })?;
        grants.sort_by(|a, b| b.remaining.cmp(&a.remaining).then(a.ip.cmp(&b.ip)));
        Ok(grants)
    }

    pub fn count_live(&self) -> Result<usize> {
        let now = clock::monotonic_ns();
        let mut live = 0;
        self.for_each(|_, grant| live += usize::from(grant.expiry_ns > now))?;
        Ok(live)
    }

    fn for_each(&self, each: impl FnMut(&AddrKey, &Grant)) -> Result<()> {
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
        self.for_each(|key, grant| {
            if let Some(rebuild) = &mut rebuild {
                rebuild.add(key);
            }
            if grant.expiry_ns > now {
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

    /// Removes those of `keys` whose grant is still expired, with their
    /// owners: a source granted again since the scan keeps its new grant.
    /// Returns how many went.
    pub fn remove_expired(&mut self, keys: &[AddrKey]) -> usize {
        let now = clock::monotonic_ns();
        let (map, owners) = (&mut self.map, &mut self.owners);
        let removed = keys
            .iter()
            .filter(|key| {
                let gone = matches!(map.get(key, 0), Ok(grant) if grant.expiry_ns <= now)
                    && map.remove(key).is_ok();
                if gone {
                    owners.forget(key);
                }
                gone
            })
            .count();
        self.entries = self.entries.saturating_sub(removed as u64);
        removed
    }

    /// Takes `entries`, counted by a sweep through another handle, as the
    /// map's entries.
    pub fn note_entries(&mut self, entries: u64) {
        self.entries = entries;
    }

    /// How many fresh grants of this handle evicted another grant.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Forgets the owners of grants no longer in the map (the LRU map
    /// evicted them, or a revoke of an older version left them).
    pub fn forget_stray_owners(&mut self) -> Result<usize> {
        let stray: Vec<AddrKey> = self
            .owners
            .keys()?
            .into_iter()
            .filter(|key| self.map.get(key, 0).is_err())
            .collect();
        for key in &stray {
            self.owners.forget(key);
        }
        Ok(stray.len())
    }

    /// Scans and removes the expired grants, so that the LRU map's capacity
    /// goes to live ones.
    pub fn sweep(&mut self) -> Result<Sweep> {
        let scan = self.scan()?;
        self.note_entries((scan.live + scan.expired.len()) as u64);
        let removed = self.remove_expired(&scan.expired);
        self.forget_stray_owners()?;
        Ok(Sweep {
            removed,
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

    pub fn read(&self) -> Result<GateConfig> {
        self.map
            .get(&0, 0)
            .context("reading the gate configuration")
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
