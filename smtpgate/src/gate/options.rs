//! The choices an operator makes about the gate, and what each means to the
//! kernel: where the program hooks in, whether it enforces, and how it
//! refuses a SYN. Flags and the configuration file spell them alike, so
//! each type parses itself for both.

use std::{str::FromStr, time::Duration};

use serde::Deserialize;
use smtpgate_common::{SynBudget, FLAG_MONITOR, FLAG_RESET};

use crate::gate::clock::parse_rate;

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }

    /// The hook an interface must not stay attached through once this one
    /// is: the gate runs on one hook per interface.
    pub fn other(self) -> Hook {
        match self {
            Hook::Xdp => Hook::Tc,
            Hook::Tc => Hook::Xdp,
        }
    }

    /// The hook as `run` reports an attachment through it, with the XDP
    /// mode where that applies.
    pub fn describe(self, xdp_mode: XdpMode) -> &'static str {
        match (self, xdp_mode) {
            (Hook::Tc, _) => "tc ingress",
            (Hook::Xdp, XdpMode::Native) => "xdp native",
            (Hook::Xdp, XdpMode::Skb) => "xdp skb",
        }
    }
}

/// Where an XDP program runs: in the driver, or generically (on any
/// driver, after the kernel has built a socket buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    Native,
    Skb,
}

impl From<XdpMode> for aya::programs::XdpMode {
    fn from(mode: XdpMode) -> Self {
        match mode {
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Skb => aya::programs::XdpMode::Skb,
        }
    }
}

/// Whether refused SYNs are dropped or only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Monitor,
}

impl Mode {
    /// The `GateConfig` flag bits of this mode.
    pub fn flags(self) -> u32 {
        match self {
            Mode::Enforce => 0,
            Mode::Monitor => FLAG_MONITOR,
        }
    }

    /// The mode as `run` reports it.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (nothing is dropped)",
        }
    }
}

/// What a refused SYN gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Reset,
}

impl Action {
    /// The `GateConfig` flag bits of this action.
    pub fn flags(self) -> u32 {
        match self {
            Action::Drop => 0,
            Action::Reset => FLAG_RESET,
        }
    }
}

/// How fast a granted source may open connections: `COUNT/DURATION`
/// sustained, on top of a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynRate {
    pub syns: u32,
    pub per: Duration,
}

impl SynRate {
    /// The kernel's form of this rate with `burst` SYNs at once.
    pub fn budget(self, burst: u32) -> SynBudget {
        let per_ns = u64::try_from(self.per.as_nanos()).unwrap_or(u64::MAX);
        SynBudget::new(self.syns, per_ns, burst)
    }
}

impl FromStr for SynRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (syns, per) = parse_rate(text)?;
        Ok(Self { syns, per })
    }
}
