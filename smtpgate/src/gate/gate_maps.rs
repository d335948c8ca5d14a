//! The maps of a freshly loaded gate, taken out of its BPF object in one
//! place for `run`, the tests and the benchmark alike.

use anyhow::{Context, Result};
use aya::{maps::Map, Ebpf};
use smtpgate_common::{
    GateConfig, ALLOWLIST_MAP, ALLOW_FILTER_MAP, CONFIG_MAP, COOLDOWNS_MAP, COUNTERS_MAP,
    GATED_DESTS_MAP, GRANTS_MAP, GRANT_FILTER_MAP, GRANT_OWNERS_MAP,
};

use crate::gate::{
    allowlist::Allowlist,
    maps::{Config, Counters, GatedDests, Grants},
    owners::Cooldowns,
    pins::PinDir,
};

pub struct GateMaps {
    pub grants: Grants,
    pub cooldowns: Cooldowns,
    pub allowlist: Allowlist,
    pub dests: GatedDests,
    pub config: Config,
    pub counters: Counters,
}

impl GateMaps {
    /// Takes every map out of `ebpf`, which was loaded with its maps pinned
    /// under `pins` (see `attach::load`), and writes `config`, which the
    /// grants' keys depend on. The programs hold the maps by fd already, so
    /// taking them changes nothing for the kernel.
    pub fn take(ebpf: &mut Ebpf, pins: &PinDir, config: &GateConfig) -> Result<Self> {
        let mut take = |name: &str| -> Result<Map> {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the BPF object"))
        };
        let mut config_map = Config::new(take(CONFIG_MAP)?)?;
        config_map.write(config)?;
        Ok(Self {
            grants: Grants::new(
                take(GRANTS_MAP)?,
                Some(take(GRANT_FILTER_MAP)?),
                take(GRANT_OWNERS_MAP)?,
                config.v6_grant_prefix(),
            )?,
            cooldowns: Cooldowns::new(take(COOLDOWNS_MAP)?)?,
            allowlist: Allowlist::new(take(ALLOWLIST_MAP)?, take(ALLOW_FILTER_MAP)?, pins)?,
            dests: GatedDests::new(take(GATED_DESTS_MAP)?)?,
            config: config_map,
            counters: Counters::new(take(COUNTERS_MAP)?)?,
        })
    }
}
