//! The gate under test: the agent's embedded program, loaded the way
//! `smtpgate run` loads it, into a private bpffs, with a grant map filled
//! to the sizes the benchmark asks for.

use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::{
    maps::MapInfo,
    programs::{ProgramFd, Xdp},
    Ebpf,
};
use smtpgate::{
    attach,
    maps::{Config, Counters, Grants},
    pins::PinDir,
};
use smtpgate_common::{Counter, GateConfig, CONFIG_MAP, COUNTERS_MAP, DEFAULT_MAX_GRANTS, GRANTS_MAP, GRANT_FILTER_MAP, PORT_WORDS};
use smtpgate_tests::{unique_name, BpfFs, SMTP};

use super::cases::{self, Family, Sources};

/// Long enough that no grant expires while the benchmark runs.
const GRANT_TTL: Duration = Duration::from_secs(3600);

pub struct Gate {
    ebpf: Ebpf,
    grants: Grants,
    counters: Counters,
    pins: PinDir,
    /// Grants of each family in the map: sources `0..granted` of
    /// [`Sources::Granted`].
    granted_per_family: u32,
    _bpffs: BpfFs,
}

impl Gate {
    /// Loads the gate with the agent's default map capacity, gating port 25.
    pub fn load() -> Result<Self> {
        let bpffs = BpfFs::new(&unique_name())?;
        let pins = PinDir::new(bpffs.pin_dir());
        pins.prepare()?;
        let mut ebpf = attach::load(&pins, DEFAULT_MAX_GRANTS, attach::KernelLogLevel::Info)?;
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("map {name}"));
        let mut config = GateConfig { flags: 0, reserved: 0, ports: [0; PORT_WORDS] };
        config.gate_port(SMTP);
        Config::new(take(CONFIG_MAP)?)?.write(&config)?;
        let mut grants = Grants::new(take(GRANTS_MAP)?, Some(take(GRANT_FILTER_MAP)?))?;
        // As the agent does at start: build the grant filter.
        grants.sweep()?;
        let counters = Counters::new(take(COUNTERS_MAP)?)?;
        Ok(Self { ebpf, grants, counters, pins, granted_per_family: 0, _bpffs: bpffs })
    }

    /// Grants more sources until the map holds `total` grants, half of each
    /// address family.
    pub fn fill_to(&mut self, total: u32) -> Result<()> {
        let per_family = total / 2;
        for index in self.granted_per_family..per_family {
            for family in [Family::V4, Family::V6] {
                self.grants.grant(cases::source(Sources::Granted, family, index), GRANT_TTL)?;
            }
        }
        self.granted_per_family = self.granted_per_family.max(per_family);
        Ok(())
    }

    pub fn granted_per_family(&self) -> u32 {
        self.granted_per_family
    }

    pub fn program(&self) -> Result<&ProgramFd> {
        let xdp: &Xdp = self.ebpf.program("smtpgate_xdp").context("the gate's XDP program")?.try_into()?;
        Ok(xdp.fd()?)
    }

    /// The total of one of the gate's counters over all CPUs.
    pub fn counter(&self, counter: Counter) -> Result<u64> {
        let totals = self.counters.totals()?;
        totals.into_iter().find(|&(c, _)| c == counter).map(|(_, total)| total).context("no such counter")
    }

    /// The grant map's capacity and the kernel memory charged for it, which
    /// a preallocated LRU map takes in full however many entries it holds.
    pub fn map_memory(&self) -> Result<(u32, u64)> {
        let info = MapInfo::from_pin(self.pins.map(GRANTS_MAP))?;
        let fd = info.fd()?;
        let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
        let memlock = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no memlock in the grant map's fdinfo")?;
        Ok((self.grants.capacity(), memlock))
    }
}
