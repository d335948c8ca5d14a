//! The real kernel program, loaded into a private bpffs and driven with
//! crafted frames through BPF_PROG_TEST_RUN: no interface, no traffic, the
//! exact verdict and counters for each frame.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use anyhow::{Context, Result};
use aya::{
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    Ebpf,
};
use smtpgate::gate::{
    allowlist::{self, Allowlist, Origin},
    attach::{self, Variant},
    gate_maps::GateMaps,
    maps::{Config, Counters, GatedDests, Grants},
    pins::PinDir,
};
use smtpgate_common::GateConfig;

use crate::{unique_name, BpfFs};

/// Longest a kernel tick lasts (HZ=100): how long the coarse clock, which
/// the agent writes expiries on and the gate may read, stands still. Two of
/// them after a grant of 1 ns, it has expired on every clock.
pub const TICK: Duration = Duration::from_millis(10);

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// What the program did with one frame.
pub struct Outcome {
    pub action: u32,
    /// The frame as the program left it (for XDP_TX: the reply).
    pub frame: Vec<u8>,
}

pub struct LoadedGate {
    ebpf: Ebpf,
    pub grants: Grants,
    pub allowlist: Allowlist,
    pub dests: GatedDests,
    config: Config,
    counters: Counters,
    bpffs: BpfFs,
}

impl LoadedGate {
    /// Loads the program with `flags` and the gated `ports`, on the clock
    /// the agent would pick.
    pub fn new(flags: u32, ports: &[u16]) -> Result<Self> {
        Self::configured(&GateConfig::new(flags, ports), None)
    }

    /// Like [`LoadedGate::new`], the given variant of the program.
    pub fn variant(flags: u32, ports: &[u16], variant: Variant) -> Result<Self> {
        Self::configured(&GateConfig::new(flags, ports), Some(variant))
    }

    /// Like [`LoadedGate::new`], granting each IPv6 login its `/prefix`.
    pub fn with_v6_grant_prefix(flags: u32, ports: &[u16], prefix: u8) -> Result<Self> {
        let mut config = GateConfig::new(flags, ports);
        config.set_v6_grant_prefix(prefix);
        Self::configured(&config, None)
    }

    /// Like [`LoadedGate::new`], configured with `config`, the variant of
    /// the program `variant` (the agent's choice without).
    pub fn configured(config: &GateConfig, variant: Option<Variant>) -> Result<Self> {
        let bpffs = BpfFs::new(&unique_name())?;
        let pins = PinDir::new(bpffs.pin_dir());
        pins.prepare(None)?;
        let (grants, level) = (1 << 20, attach::KernelLogLevel::Info);
        let mut ebpf = match variant {
            None => attach::load(&pins, grants, level)?,
            Some(variant) => attach::load_variant(&pins, grants, level, variant)?,
        };
        let GateMaps {
            grants,
            allowlist,
            dests,
            config,
            counters,
            ..
        } = GateMaps::take(&mut ebpf, &pins, config)?;
        let mut gate = Self {
            grants,
            allowlist,
            dests,
            config,
            counters,
            ebpf,
            bpffs,
        };
        // As the agent does at start: build the grant filter, so that the
        // program consults it.
        gate.grants.sweep()?;
        Ok(gate)
    }

    /// Rewrites the configuration with other `flags` and `ports` (each
    /// IPv6 address granted for itself).
    pub fn configure(&mut self, flags: u32, ports: &[u16]) -> Result<()> {
        self.reconfigure(&GateConfig::new(flags, ports))
    }

    /// Rewrites the configuration with `config`.
    pub fn reconfigure(&mut self, config: &GateConfig) -> Result<()> {
        self.config.write(config)
    }

    /// Where the program's maps are pinned, for opening them as other
    /// processes (`smtpgate allow`, a second agent) would.
    pub fn pins(&self) -> PinDir {
        PinDir::new(self.bpffs.pin_dir())
    }

    pub fn grant(&mut self, ip: &str, ttl: Duration) -> Result<()> {
        self.grants.grant(ip.parse::<IpAddr>()?, ttl).map(drop)
    }

    pub fn allow_prefix(&mut self, prefix: &str) -> Result<()> {
        self.allowlist
            .add(allowlist::parse_prefix(prefix)?, Origin::Cli)
    }

    /// The loaded XDP program, to unload and load again.
    pub fn xdp_mut(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut("smtpgate_xdp")
            .context("xdp program")?
            .try_into()?)
    }

    pub fn run_xdp(&self, frame: &[u8]) -> Result<Outcome> {
        let program: &Xdp = self
            .ebpf
            .program("smtpgate_xdp")
            .context("xdp program")?
            .try_into()?;
        run_with(frame, |opts| program.test_run(opts))
    }

    pub fn run_tc(&self, frame: &[u8]) -> Result<Outcome> {
        let program: &SchedClassifier = self
            .ebpf
            .program("smtpgate_tc")
            .context("tc program")?
            .try_into()?;
        run_with(frame, |opts| program.test_run(opts))
    }

    /// How many instructions the verifier processed for each program.
    pub fn verified_instruction_counts(&self) -> Result<Vec<(&'static str, u32)>> {
        let xdp: &Xdp = self
            .ebpf
            .program("smtpgate_xdp")
            .context("xdp program")?
            .try_into()?;
        let tc: &SchedClassifier = self
            .ebpf
            .program("smtpgate_tc")
            .context("tc program")?
            .try_into()?;
        let count = |info: aya::programs::ProgramInfo| {
            info.verified_instruction_count()
                .context("the kernel reports no count")
        };
        Ok(vec![
            ("smtpgate_xdp", count(xdp.info()?)?),
            ("smtpgate_tc", count(tc.info()?)?),
        ])
    }

    /// Counter totals by name.
    pub fn counters(&self) -> Result<HashMap<&'static str, u64>> {
        Ok(self
            .counters
            .totals()?
            .into_iter()
            .map(|(c, v)| (c.name(), v))
            .collect())
    }
}

fn run_with(
    frame: &[u8],
    test_run: impl FnOnce(TestRunOptions<'_>) -> Result<TestRunResult, ProgramError>,
) -> Result<Outcome> {
    let mut out = vec![0u8; frame.len() + 256];
    let result = test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    })
    .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(Outcome {
        action: result.return_value,
        frame: out,
    })
}
