//! What the agent runs with: every setting resolved and checked, the login
//! parser compiled, before anything touches the kernel. Where the values
//! come from (flags, the configuration file, defaults) is the command
//! line's business (`cli::settings`); the agent only uses them.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{anyhow, Result};
use ipnet::IpNet;
use smtpgate_common::{GateConfig, FLAG_DEST_FILTER};
use smtpgate_logins::{Parser, ParserOptions, Service};

use crate::gate::{
    attach::KernelLogLevel,
    options::{Action, Hook, Mode, XdpMode},
};

/// Everything `run` needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    pub ifaces: Vec<String>,
    pub hook: Hook,
    pub xdp_mode: XdpMode,
    pub ports: Vec<u16>,
    pub dests: Vec<IpAddr>,
    pub mode: Mode,
    pub action: Action,
    pub max_grants: u32,
    pub metrics_listen: Option<SocketAddr>,
    pub sweep_interval: Duration,
    pub allowlist: Vec<IpNet>,
    /// What the kernel program logs: at debug, each refusal.
    pub kernel_log_level: KernelLogLevel,
    pub watch: WatchSettings,
}

impl Settings {
    /// The configuration map's entry: the gated ports and the flags of the
    /// mode, the action and the destination filter.
    pub fn gate_config(&self) -> GateConfig {
        let dest_filter = if self.dests.is_empty() {
            0
        } else {
            FLAG_DEST_FILTER
        };
        GateConfig::new(
            self.mode.flags() | self.action.flags() | dest_filter,
            &self.ports,
        )
    }
}

/// Where logins come from and what they grant.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub logs: Vec<PathBuf>,
    pub stdin: bool,
    /// `Some(units)` when the journal is watched (empty: every unit).
    pub journal: Option<Vec<String>>,
    pub socket: Option<SocketSettings>,
    pub ttl: Duration,
    pub parser: LoginParser,
    pub state_dir: PathBuf,
}

impl WatchSettings {
    pub fn any_source(&self) -> bool {
        !self.logs.is_empty() || self.stdin || self.journal.is_some() || self.socket.is_some()
    }
}

/// A Unix socket for login reports.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<String>,
}

/// The login parser, compiled once from its options: `run` and
/// `check-log` judge lines with the same one.
#[derive(Clone)]
pub struct LoginParser {
    options: ParserOptions,
    compiled: Parser,
}

impl LoginParser {
    /// Compiles `options`; a bad custom pattern is a configuration error.
    pub fn new(options: ParserOptions) -> Result<Self> {
        let compiled = Parser::new(options.clone()).map_err(|e| anyhow!("pattern: {e}"))?;
        Ok(Self { options, compiled })
    }

    pub fn parser(&self) -> &Parser {
        &self.compiled
    }

    pub fn options(&self) -> &ParserOptions {
        &self.options
    }

    /// The services whose logins grant.
    pub fn services(&self) -> &[Service] {
        &self.options.services
    }
}

impl std::fmt::Debug for LoginParser {
    /// The options: they say what the compiled parser does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}
