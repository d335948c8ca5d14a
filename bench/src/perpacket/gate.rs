//! The gate under test: the agent's embedded program, loaded the way
//! `smtpgate run` loads it, into a private bpffs, then filled to the levels
//! the benchmark asks for.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use aya::{
    maps::MapInfo,
    programs::{ProgramFd, Xdp},
    Ebpf,
};
use smtpgate::gate::{attach, clock, gate_maps::GateMaps, pins::PinDir};
use smtpgate_common::{Counter, GateConfig, SynBudget, DEFAULT_MAX_GRANTS, GRANTS_MAP};
use smtpgate_tests::{unique_name, BpfFs, SMTP};

use crate::{
    load::{Load, Loaded, GRANT_TTL},
    sources::{self, Family, Sources},
};

/// The gate's configuration: port 25 gated, refused SYNs recorded for
/// `window_ms`.
fn config(window_ms: u32) -> GateConfig {
    let mut config = GateConfig::new(0, &[SMTP]);
    config.replay_window_ms = window_ms;
    config
}

pub struct Gate {
    ebpf: Ebpf,
    maps: GateMaps,
    loaded: Loaded,
    pins: PinDir,
    _bpffs: BpfFs,
}

impl Gate {
    /// Loads the gate with the agent's default map capacity, gating port 25.
    pub fn load() -> Result<Self> {
        let bpffs = BpfFs::new(&unique_name())?;
        let pins = PinDir::new(bpffs.pin_dir());
        pins.prepare(None)?;
        let mut ebpf = attach::load(&pins, DEFAULT_MAX_GRANTS, attach::KernelLogLevel::Info)?;
        let mut maps = GateMaps::take(&mut ebpf, &pins, &config(0))?;
        // As the agent does at start: the loopback entries on the
        // allowlist, and the grant filter built.
        maps.allowlist.sync_config(&[])?;
        maps.grants.sweep()?;
        Ok(Self {
            ebpf,
            maps,
            loaded: Loaded::default(),
            pins,
            _bpffs: bpffs,
        })
    }

    /// Grants and allowlists more until the gate holds `load`.
    pub fn fill_to(&mut self, load: Load) -> Result<()> {
        self.loaded
            .top_up(&mut self.maps.grants, &mut self.maps.allowlist, load)
    }

    pub fn granted_per_family(&self) -> u32 {
        self.loaded.granted_per_family()
    }

    /// Gives the first granted source of `family` (the hot key's) `budget`.
    pub fn set_budget_of_first_grant(&mut self, family: Family, budget: SynBudget) -> Result<()> {
        let ip = sources::first(Sources::Granted, family);
        self.maps
            .grants
            .grant_until(ip, clock::expiry_after(GRANT_TTL), budget, None)
            .map(drop)
    }

    /// Records refused SYNs for replay for `window_ms`, or (0) not at all.
    pub fn set_replay_window(&mut self, window_ms: u32) -> Result<()> {
        self.maps.config.write(&config(window_ms))
    }

    pub fn program(&self) -> Result<&ProgramFd> {
        let xdp: &Xdp = self
            .ebpf
            .program("smtpgate_xdp")
            .context("the gate's XDP program")?
            .try_into()?;
        Ok(xdp.fd()?)
    }

    /// The total of one of the gate's counters over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64> {
        let totals = self.maps.counters.totals()?;
        totals
            .into_iter()
            .find(|&(c, _)| c == counter)
            .map(|(_, total)| total)
            .context("no such counter")
    }

    /// The grant map's capacity and the kernel memory charged for it, which
    /// a preallocated LRU map takes in full however many entries it holds.
    pub fn map_memory(&self) -> Result<(u32, u64)> {
        let info = MapInfo::from_pin(self.pins.map(GRANTS_MAP))?;
        let fd = info.fd()?;
        let fdinfo =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no memlock in the grant map's fdinfo")?;
        Ok((self.maps.grants.capacity(), memlock))
    }
}
