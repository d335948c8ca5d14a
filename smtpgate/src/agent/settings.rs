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
use smtpgate_common::{GateConfig, SynBudget, FLAG_DEST_FILTER};
use smtpgate_logins::{Parser, ParserOptions, Service};

use crate::{
    agent::quota::Quota,
    gate::{
        attach::KernelLogLevel,
        maps::Terms,
        options::{Action, Hook, Mode, XdpMode},
    },
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
    /// How long a refused SYN is kept for replay; `None`: not recorded.
    pub replay_window: Option<Duration>,
    pub allowlist: Vec<IpNet>,
    /// The group given the pin directory (`--pin-group`), as a gid.
    pub pin_group: Option<u32>,
    /// What the kernel program logs: at debug, each refusal.
    pub kernel_log_level: KernelLogLevel,
    pub watch: WatchSettings,
    pub grants: GrantPolicy,
    /// The Postfix policy service, when asked for (`--policy-listen`).
    pub policy: Option<PolicySettings>,
    /// The stream whose grants and revokes this relay applies
    /// (`--subscribe`).
    pub subscribe: Option<StreamSettings>,
}

/// Everything `watch` needs: a POP host's logins, published.
#[derive(Debug)]
pub struct PopSettings {
    pub watch: WatchSettings,
    /// Only the TTLs and the IPv6 prefix apply here; the relays keep the
    /// rest of what a grant is worth.
    pub grants: GrantPolicy,
    pub metrics_listen: Option<SocketAddr>,
    pub publish: StreamSettings,
}

/// A Redis stream, and how to reach it.
#[derive(Clone)]
pub struct StreamSettings {
    /// `redis://` or `rediss://`, without credentials.
    pub url: String,
    /// The stream's key (`--stream`).
    pub key: String,
    /// The PEM certificates a `rediss://` server's certificate must chain
    /// to, instead of the system's roots (`--redis-ca`).
    pub ca: Option<Vec<u8>>,
    pub credentials: Option<Credentials>,
}

impl std::fmt::Debug for StreamSettings {
    /// The CA file's size rather than its bytes, for `--check-config`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSettings")
            .field("url", &self.url)
            .field("key", &self.key)
            .field("ca_pem_bytes", &self.ca.as_ref().map(Vec::len))
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl StreamSettings {
    /// The stream relays publish their quota revocations to, beside the
    /// stream itself: a relay's ACL user may write this key and only read
    /// the other, so a compromised relay can shut customers out but never
    /// let anyone in.
    pub fn revokes_key(&self) -> String {
        format!("{}:revokes", self.key)
    }

    /// These settings, for the stream of [`StreamSettings::revokes_key`].
    pub fn for_revokes(&self) -> StreamSettings {
        StreamSettings {
            key: self.revokes_key(),
            ..self.clone()
        }
    }
}

/// An ACL user and password, read from `--redis-auth-file`.
#[derive(Clone)]
pub struct Credentials {
    /// `None`: the default user.
    pub user: Option<String>,
    pub password: String,
    /// The file they came from, to name in errors.
    pub file: PathBuf,
}

impl std::fmt::Debug for Credentials {
    /// Never the password: `--check-config` prints the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
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
        let mut config = GateConfig::new(
            self.mode.flags() | self.action.flags() | dest_filter,
            &self.ports,
        );
        config.set_v6_grant_prefix(self.grants.ipv6_prefix);
        config.replay_window_ms = self.replay_window.map_or(0, |window| {
            window.as_millis().try_into().unwrap_or(u32::MAX)
        });
        config
    }
}

/// What a grant is given, by the network its address is in.
#[derive(Debug, Clone)]
pub struct GrantPolicy {
    /// Every IPv6 login grants its address's prefix of this length.
    pub ipv6_prefix: u8,
    pub default: Limits,
    /// `[[network]]` overrides, longest prefix first.
    pub networks: Vec<(IpNet, Limits)>,
}

impl GrantPolicy {
    /// The limits for a grant of `ip`: those of the most specific network
    /// containing it, else the defaults.
    pub fn limits_for(&self, ip: IpAddr) -> &Limits {
        let ip = ip.to_canonical();
        self.networks
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(&self.default, |(_, limits)| limits)
    }

    /// The longest TTL any grant gets: how far back a log is read at start.
    pub fn longest_ttl(&self) -> Duration {
        self.networks
            .iter()
            .map(|(_, limits)| limits.ttl)
            .fold(self.default.ttl, Duration::max)
    }
}

/// How long a grant lasts and how much it is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub ttl: Duration,
    pub syn_budget: SynBudget,
    /// Recipients a user may send (summed over their addresses), if limited.
    pub user_quota: Option<Quota>,
    /// Recipients one address may send, if limited.
    pub address_quota: Option<Quota>,
}

impl Limits {
    /// A grant's terms under these limits, lasting `ttl`.
    pub fn terms(&self, ttl: Duration) -> Terms {
        Terms {
            ttl,
            budget: self.syn_budget,
        }
    }
}

/// Where the Postfix policy service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyListen {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// The Postfix policy service's settings (quotas are in [`GrantPolicy`]).
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub listen: PolicyListen,
    /// How long a user over quota earns no grant.
    pub cooldown: Duration,
}

/// Where logins come from and what they grant.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub logs: Vec<PathBuf>,
    pub stdin: bool,
    /// `Some(units)` when the journal is watched (empty: every unit).
    pub journal: Option<Vec<String>>,
    pub socket: Option<SocketSettings>,
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
