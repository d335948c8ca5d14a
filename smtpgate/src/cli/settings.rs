//! How `run`'s settings are resolved: each from its flag, else from the
//! configuration file, else its default. A value is read by the same
//! parser whether a flag or the file gives it, and everything is checked
//! here, before anything touches the kernel, so `--check-config` and a real
//! start reject the same mistakes with the same messages. The result is the
//! agent's [`Settings`].

use std::{
    fmt::Display,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use jiff::tz::TimeZone;
use serde::{de::Error as _, Deserialize, Deserializer};
use smtpgate_logins::{Format, ParserOptions, Service};

use smtpgate_common::SynBudget;

use crate::{
    agent::{
        privileges,
        quota::Quota,
        settings::{
            Credentials, GrantPolicy, Limits, LoginParser, PolicyListen, PolicySettings,
            PopSettings, Settings, SocketSettings, StreamSettings, WatchSettings,
        },
    },
    cli::args::{
        ipv6_grant_prefix, parse_octal_mode, parse_policy_listen, parse_replay_window,
        parse_socket_addr, parse_timezone, GrantArgs, ParserArgs, RunArgs, SourceArgs, StreamArgs,
        Switch, WatchArgs,
    },
    gate::{
        addr,
        allowlist::parse_prefix,
        attach::KernelLogLevel,
        clock::parse_duration,
        options::{Action, Hook, Mode, SynRate, XdpMode},
    },
};

/// Grants last this long unless configured otherwise: ten minutes, as
/// POP-before-SMTP has long been run.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smtpgate";
const DEFAULT_SOCKET_MODE: u32 = 0o660;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Three seconds: a SYN refused while its client's login was in flight is
/// younger than that when the grant lands (the login takes milliseconds),
/// and the client has not retransmitted it twice yet (at 1 and 3 s).
const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(3);
/// A /64 is one customer's network (RFC 6177), and privacy addresses
/// (RFC 8981) rotate inside it: granting the one address that logged in
/// would lock the customer out at the next rotation.
const DEFAULT_IPV6_GRANT_PREFIX: u8 = 64;
/// Ten connections a second, forty at once: far above any mail client or
/// office behind one address, far below a flood. A backstop, not a quota.
const DEFAULT_SYN_RATE: SynRate = SynRate {
    syns: 10,
    per: Duration::from_secs(1),
};
const DEFAULT_SYN_BURST: u32 = 40;
/// Three hundred recipients an hour: a busy customer, a small mailing
/// list, but the 50,000 of a spam run would take a week.
const DEFAULT_USER_QUOTA: Quota = Quota {
    limit: 300,
    window: Duration::from_secs(3600),
};
/// A thousand an hour for one address, which several customers may share.
const DEFAULT_ADDRESS_QUOTA: Quota = Quota {
    limit: 1000,
    window: Duration::from_secs(3600),
};
const DEFAULT_QUOTA_COOLDOWN: Duration = Duration::from_secs(3600);
pub const DEFAULT_STREAM: &str = "smtpgate:grants";

/// `/etc/smtpgate/smtpgate.toml`: every setting `run` has a flag for, typed
/// as the flag is. Values written as text go through the flag's parser.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub iface: Option<Vec<String>>,
    pub attach: Option<Hook>,
    pub xdp_mode: Option<XdpMode>,
    pub ports: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "text::dests")]
    pub dests: Option<Vec<IpAddr>>,
    pub mode: Option<Mode>,
    pub action: Option<Action>,
    pub max_grants: Option<u32>,
    #[serde(default, deserialize_with = "text::metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "text::sweep_interval")]
    pub sweep_interval: Option<Duration>,
    pub pin_group: Option<String>,
    #[serde(default, deserialize_with = "text::replay_window")]
    pub replay_window: Option<Duration>,
    #[serde(default, deserialize_with = "text::allowlist")]
    pub allowlist: Option<Vec<IpNet>>,
    pub logs: Option<Vec<PathBuf>>,
    pub journal: Option<bool>,
    pub journal_units: Option<Vec<String>>,
    pub listen_unix: Option<PathBuf>,
    #[serde(default, deserialize_with = "text::listen_unix_mode")]
    pub listen_unix_mode: Option<u32>,
    pub listen_unix_group: Option<String>,
    #[serde(default, deserialize_with = "text::ttl")]
    pub ttl: Option<Duration>,
    #[serde(default, deserialize_with = "text::services")]
    pub services: Option<Vec<Service>>,
    #[serde(default, deserialize_with = "text::log_format")]
    pub log_format: Option<Format>,
    pub patterns: Option<Vec<String>>,
    pub trust_hosts: Option<Vec<String>>,
    pub state_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "text::timezone")]
    pub timezone: Option<TimeZone>,
    #[serde(default, deserialize_with = "text::ipv6_grant_prefix")]
    pub ipv6_grant_prefix: Option<u8>,
    #[serde(default, deserialize_with = "text::grant_syn_rate")]
    pub grant_syn_rate: Option<Switch<SynRate>>,
    pub grant_syn_burst: Option<u32>,
    #[serde(default, deserialize_with = "text::user_quota")]
    pub user_quota: Option<Switch<Quota>>,
    #[serde(default, deserialize_with = "text::address_quota")]
    pub address_quota: Option<Switch<Quota>>,
    #[serde(default, deserialize_with = "text::quota_cooldown")]
    pub quota_cooldown: Option<Duration>,
    #[serde(default, deserialize_with = "text::policy_listen")]
    pub policy_listen: Option<PolicyListen>,
    /// `[[network]]` tables: other limits for the grants of one network.
    pub network: Option<Vec<NetworkTable>>,
    /// The stream `run` applies (a relay's).
    pub subscribe: Option<String>,
    /// The stream `watch` publishes to (a POP host's).
    pub publish: Option<String>,
    pub stream: Option<String>,
    pub redis_ca: Option<PathBuf>,
    pub redis_auth_file: Option<PathBuf>,
}

/// One `[[network]]` table: limits for the grants of one network, each
/// falling back to the top level's when left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkTable {
    #[serde(deserialize_with = "text::prefix")]
    pub prefix: IpNet,
    #[serde(default, deserialize_with = "text::ttl")]
    pub ttl: Option<Duration>,
    #[serde(default, deserialize_with = "text::grant_syn_rate")]
    pub grant_syn_rate: Option<Switch<SynRate>>,
    pub grant_syn_burst: Option<u32>,
    #[serde(default, deserialize_with = "text::user_quota")]
    pub user_quota: Option<Switch<Quota>>,
    #[serde(default, deserialize_with = "text::address_quota")]
    pub address_quota: Option<Switch<Quota>>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| path.display().to_string())
    }

    /// Reads the file's text; an error is one line.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            // toml's messages span lines (with a caret); keep them on one.
            anyhow::anyhow!(
                "{}",
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
    }
}

/// The file's values that are written as text, each read with the parser
/// of its flag; an error names the key.
mod text {
    use super::*;

    fn one<'de, D: Deserializer<'de>, T, E: Display>(
        d: D,
        key: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("{key}: {e}")))
    }

    fn list<'de, D: Deserializer<'de>, T, E: Display>(
        d: D,
        key: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<Vec<T>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| parse(text).map_err(|e| D::Error::custom(format!("{key}: {e}"))))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    macro_rules! keys {
        ($($name:ident: $value:ty = $read:ident($key:literal, $parse:expr);)*) => {$(
            pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$value>, D::Error> {
                $read(d, $key, $parse)
            }
        )*};
    }

    keys! {
        dests: Vec<IpAddr> = list("dests", addr::parse);
        metrics_listen: SocketAddr = one("metrics-listen", parse_socket_addr);
        sweep_interval: Duration = one("sweep-interval", parse_duration);
        replay_window: Duration = one("replay-window", parse_replay_window);
        allowlist: Vec<IpNet> = list("allowlist", parse_prefix);
        listen_unix_mode: u32 = one("listen-unix-mode", parse_octal_mode);
        ttl: Duration = one("ttl", parse_duration);
        services: Vec<Service> = list("services", str::parse::<Service>);
        log_format: Format = one("log-format", str::parse::<Format>);
        timezone: TimeZone = one("timezone", parse_timezone);
        grant_syn_rate: Switch<SynRate> = one("grant-syn-rate", str::parse::<Switch<SynRate>>);
        user_quota: Switch<Quota> = one("user-quota", str::parse::<Switch<Quota>>);
        address_quota: Switch<Quota> = one("address-quota", str::parse::<Switch<Quota>>);
        quota_cooldown: Duration = one("quota-cooldown", parse_duration);
        policy_listen: PolicyListen = one("policy-listen", parse_policy_listen);
    }

    /// The IPv6 grant prefix, a number as the flag's.
    pub fn ipv6_grant_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        let bits = u32::deserialize(d)?;
        super::ipv6_grant_prefix(bits)
            .map(Some)
            .map_err(|e| D::Error::custom(format!("ipv6-grant-prefix: {e}")))
    }

    /// A `[[network]]` table's prefix, required.
    pub fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        parse_prefix(&text).map_err(|e| D::Error::custom(format!("network prefix: {e}")))
    }
}

/// The flag's values if any were given, else the file's.
fn pick<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

impl ParserArgs {
    /// The login parser these options describe, compiled: a bad pattern or
    /// trusted host is a configuration error, named by its option.
    pub fn build(self) -> Result<LoginParser> {
        if let Some(host) = self.trusted_hosts.iter().find(|host| !is_host_name(host)) {
            bail!("trust-host: '{host}' is not a host name as syslog writes one (letters, digits, '.', '-', '_', ':')");
        }
        let mut options = ParserOptions {
            custom_patterns: self.patterns,
            trusted_hosts: self.trusted_hosts,
            ..ParserOptions::default()
        };
        if !self.services.is_empty() {
            options.services = self.services;
        }
        if let Some(format) = self.log_format {
            options.format = format;
        }
        if let Some(zone) = self.timezone {
            options.timezone = zone;
        }
        LoginParser::new(options)
    }

    /// These flags over `file`, the same options from the file.
    fn over(self, file: ParserArgs) -> Self {
        Self {
            services: pick(self.services, Some(file.services)),
            log_format: self.log_format.or(file.log_format),
            patterns: pick(self.patterns, Some(file.patterns)),
            trusted_hosts: pick(self.trusted_hosts, Some(file.trusted_hosts)),
            timezone: self.timezone.or(file.timezone),
        }
    }
}

/// A host field as syslog collectors write it: a name or an address.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// The settings of `args` over those of the file it names, if any; with
/// `verbose` (`-v`), the kernel program logs each refusal.
pub fn resolve(args: RunArgs, verbose: u8) -> Result<Settings> {
    let file = load(args.config.as_deref())?;
    from_parts(args, file, verbose)
}

/// The file at `path`, or an empty one.
fn load(path: Option<&Path>) -> Result<ConfigFile> {
    match path {
        Some(path) => ConfigFile::load(path),
        None => Ok(ConfigFile::default()),
    }
}

/// The settings of `args` over those of `file`; touches no file but the
/// ones the stream's options name (and the group database, for the pin
/// group).
pub fn from_parts(args: RunArgs, mut file: ConfigFile, verbose: u8) -> Result<Settings> {
    let grants = grant_policy(&args.grants, args.ttl, &file)?;
    let policy = policy_settings(&args.grants, &file)?;
    let subscribe = stream_settings(args.subscribe.or(file.subscribe.take()), args.stream, &file)?;
    let ifaces = pick(args.iface, file.iface.take());
    if ifaces.is_empty() {
        bail!("no interface to gate: give --iface IFACE (or iface = [...] in the configuration)");
    }
    let ports = pick(args.ports, file.ports.take());
    if ports.contains(&0) {
        bail!("port 0 cannot be gated");
    }
    let hook = args.attach.or(file.attach).unwrap_or(Hook::Xdp);
    let action = args.action.or(file.action).unwrap_or(Action::Drop);
    if action == Action::Reset && hook == Hook::Tc {
        bail!("--action reset needs --attach xdp: the RST is sent back with XDP_TX");
    }
    let max_grants = args
        .max_grants
        .or(file.max_grants)
        .unwrap_or(smtpgate_common::DEFAULT_MAX_GRANTS);
    if max_grants == 0 {
        bail!("max-grants must be at least 1");
    }
    let watch = watch_settings(args.sources, args.parser, args.state_dir, &mut file)?;
    let pin_group = match args.pin_group.or(file.pin_group) {
        Some(name) => Some(privileges::group_id(&name).context("pin-group")?),
        None => None,
    };

    Ok(Settings {
        ifaces,
        hook,
        xdp_mode: args.xdp_mode.or(file.xdp_mode).unwrap_or(XdpMode::Native),
        ports: if ports.is_empty() { vec![25] } else { ports },
        dests: pick(args.dests, file.dests),
        mode: args.mode.or(file.mode).unwrap_or(Mode::Enforce),
        action,
        max_grants,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        sweep_interval: args
            .sweep_interval
            .or(file.sweep_interval)
            .unwrap_or(DEFAULT_SWEEP_INTERVAL),
        replay_window: Some(
            args.replay_window
                .or(file.replay_window)
                .unwrap_or(DEFAULT_REPLAY_WINDOW),
        )
        .filter(|window| !window.is_zero()),
        allowlist: file.allowlist.unwrap_or_default(),
        pin_group,
        kernel_log_level: if verbose > 0 {
            KernelLogLevel::Debug
        } else {
            KernelLogLevel::Info
        },
        watch,
        grants,
        policy,
        subscribe,
    })
}

/// `watch`'s settings: `args` over the file they name, if any. Of the
/// file, only what a POP host uses counts: the login sources and parser,
/// the TTLs (with `[[network]]` ones) and the IPv6 prefix, the metrics
/// address, the state directory and `publish` with its stream options.
pub fn resolve_watch(args: WatchArgs) -> Result<PopSettings> {
    let mut file = load(args.config.as_deref())?;
    let grant_args = GrantArgs {
        ipv6_grant_prefix: args.ipv6_grant_prefix,
        ..GrantArgs::default()
    };
    let grants = grant_policy(&grant_args, args.ttl, &file)?;
    let publish = stream_settings(args.publish.or(file.publish.take()), args.stream, &file)?
        .context("nowhere to publish: give --publish redis://HOST:6379/0 (or publish = \"...\" in the configuration)")?;
    let metrics_listen = args.metrics_listen.or(file.metrics_listen);
    let watch = watch_settings(args.sources, args.parser, args.state_dir, &mut file)?;
    if !watch.any_source() {
        bail!("no login source: give --log PATH, --journal or --listen-unix PATH");
    }
    Ok(PopSettings {
        watch,
        grants,
        metrics_listen,
        publish,
    })
}

/// Where logins come from and how they are read: the flags over `file`'s
/// (whose values are taken).
fn watch_settings(
    sources: SourceArgs,
    parser: ParserArgs,
    state_dir: Option<PathBuf>,
    file: &mut ConfigFile,
) -> Result<WatchSettings> {
    let mut logs = pick(sources.logs, file.logs.take());
    let stdin = logs.iter().any(|p| p == Path::new("-"));
    logs.retain(|p| p != Path::new("-"));
    let units = pick(sources.journal_units, file.journal_units.take());
    let journal =
        (sources.journal || file.journal.unwrap_or(false) || !units.is_empty()).then_some(units);
    let socket = sources
        .listen_unix
        .or(file.listen_unix.take())
        .map(|path| SocketSettings {
            path,
            mode: sources
                .listen_unix_mode
                .or(file.listen_unix_mode)
                .unwrap_or(DEFAULT_SOCKET_MODE),
            group: sources.listen_unix_group.or(file.listen_unix_group.take()),
        });
    let parser = parser
        .over(ParserArgs {
            services: file.services.take().unwrap_or_default(),
            log_format: file.log_format,
            patterns: file.patterns.take().unwrap_or_default(),
            trusted_hosts: file.trust_hosts.take().unwrap_or_default(),
            timezone: file.timezone.take(),
        })
        .build()?;
    Ok(WatchSettings {
        logs,
        stdin,
        journal,
        socket,
        parser,
        state_dir: state_dir
            .or(file.state_dir.take())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    })
}

/// The stream at `url` with the options of `args` over `file`'s, or none
/// without a URL (then the options are a mistake). Reads the files the
/// options name, so that a missing one stops the start.
pub fn stream_settings(
    url: Option<String>,
    args: StreamArgs,
    file: &ConfigFile,
) -> Result<Option<StreamSettings>> {
    let key = args.stream.or(file.stream.clone());
    let ca = args.redis_ca.or(file.redis_ca.clone());
    let auth_file = args.redis_auth_file.or(file.redis_auth_file.clone());
    let Some(url) = url else {
        if key.is_some() || ca.is_some() || auth_file.is_some() {
            bail!("--stream, --redis-ca and --redis-auth-file need a stream: give --publish or --subscribe with them");
        }
        return Ok(None);
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("'{url}' is not a redis:// or rediss:// URL");
    };
    if scheme != "redis" && scheme != "rediss" {
        bail!("'{url}' is not a redis:// or rediss:// URL");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        bail!("'{scheme}://…' holds credentials, which `ps` would show: put them in a file and give --redis-auth-file");
    }
    if ca.is_some() && scheme != "rediss" {
        bail!("--redis-ca is for TLS: give a rediss:// URL with it");
    }
    let key = key.unwrap_or_else(|| DEFAULT_STREAM.to_string());
    if key.is_empty() {
        bail!("--stream: the key is empty");
    }
    let ca = ca
        .map(|path| {
            std::fs::read(&path).with_context(|| format!("--redis-ca: reading {}", path.display()))
        })
        .transpose()?;
    let credentials = auth_file.map(|path| read_credentials(&path)).transpose()?;
    Ok(Some(StreamSettings {
        url,
        key,
        ca,
        credentials,
    }))
}

/// `--redis-auth-file`: the user on the first line and the password on the
/// second, or only the default user's password on one line.
fn read_credentials(path: &Path) -> Result<Credentials> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--redis-auth-file: reading {}", path.display()))?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            "{} is readable by others (mode {:04o}): whoever reads it can write grants; chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    let (user, password) = match lines.as_slice() {
        [password] => (None, *password),
        [user, password] => (Some(user.to_string()), *password),
        _ => bail!(
            "--redis-auth-file {}: expected the user on one line and the password on the next",
            path.display()
        ),
    };
    if password.is_empty() || user.as_deref() == Some("") {
        bail!(
            "--redis-auth-file {}: the user or password is empty",
            path.display()
        );
    }
    Ok(Credentials {
        user,
        password: password.to_string(),
        file: path.to_path_buf(),
    })
}

/// The limits named by one level of settings (flags over the file's top
/// level, or one `[[network]]` table), each falling back to `base`'s.
struct LimitChoices {
    ttl: Option<Duration>,
    rate: Option<Switch<SynRate>>,
    burst: Option<u32>,
    user_quota: Option<Switch<Quota>>,
    address_quota: Option<Switch<Quota>>,
}

impl LimitChoices {
    fn over(self, base: &LimitChoices) -> LimitChoices {
        LimitChoices {
            ttl: self.ttl.or(base.ttl),
            rate: self.rate.or(base.rate),
            burst: self.burst.or(base.burst),
            user_quota: self.user_quota.or(base.user_quota),
            address_quota: self.address_quota.or(base.address_quota),
        }
    }

    /// Resolved, with the defaults for what nobody chose.
    fn limits(&self) -> Result<Limits> {
        let burst = self.burst.unwrap_or(DEFAULT_SYN_BURST);
        if burst == 0 {
            bail!("grant-syn-burst must be at least 1");
        }
        let rate = self.rate.map_or(Some(DEFAULT_SYN_RATE), |choice| choice.0);
        Ok(Limits {
            ttl: self.ttl.unwrap_or(DEFAULT_TTL),
            syn_budget: rate.map_or(SynBudget::UNLIMITED, |rate| rate.budget(burst)),
            user_quota: self
                .user_quota
                .map_or(Some(DEFAULT_USER_QUOTA), |choice| choice.0),
            address_quota: self
                .address_quota
                .map_or(Some(DEFAULT_ADDRESS_QUOTA), |choice| choice.0),
        })
    }
}

/// What grants are given: the flags over the file's top level, and each
/// `[[network]]` table over those.
fn grant_policy(args: &GrantArgs, ttl: Option<Duration>, file: &ConfigFile) -> Result<GrantPolicy> {
    let top = LimitChoices {
        ttl: ttl.or(file.ttl),
        rate: args.grant_syn_rate.or(file.grant_syn_rate),
        burst: args.grant_syn_burst.or(file.grant_syn_burst),
        user_quota: args.user_quota.or(file.user_quota),
        address_quota: args.address_quota.or(file.address_quota),
    };
    let mut networks = Vec::new();
    for table in file.network.iter().flatten() {
        if networks.iter().any(|(net, _)| *net == table.prefix) {
            bail!("network {} is configured twice", table.prefix);
        }
        let choices = LimitChoices {
            ttl: table.ttl,
            rate: table.grant_syn_rate,
            burst: table.grant_syn_burst,
            user_quota: table.user_quota,
            address_quota: table.address_quota,
        };
        let limits = choices
            .over(&top)
            .limits()
            .with_context(|| format!("network {}", table.prefix))?;
        networks.push((table.prefix, limits));
    }
    // The most specific network wins.
    networks.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    Ok(GrantPolicy {
        ipv6_prefix: args
            .ipv6_grant_prefix
            .or(file.ipv6_grant_prefix)
            .unwrap_or(DEFAULT_IPV6_GRANT_PREFIX),
        default: top.limits()?,
        networks,
    })
}

/// The policy service's settings, if it is to run. Quotas chosen without
/// it would count nothing, so choosing them alone is a mistake.
fn policy_settings(args: &GrantArgs, file: &ConfigFile) -> Result<Option<PolicySettings>> {
    let listen = args.policy_listen.clone().or(file.policy_listen.clone());
    let quota_chosen = args.user_quota.is_some()
        || args.address_quota.is_some()
        || file.user_quota.is_some()
        || file.address_quota.is_some()
        || args.quota_cooldown.is_some()
        || file.quota_cooldown.is_some();
    match listen {
        Some(listen) => Ok(Some(PolicySettings {
            listen,
            cooldown: args
                .quota_cooldown
                .or(file.quota_cooldown)
                .unwrap_or(DEFAULT_QUOTA_COOLDOWN),
        })),
        None if quota_chosen => bail!(
            "quotas are counted by the Postfix policy service: give --policy-listen (or policy-listen in the configuration) with them"
        ),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<Settings> {
        let dir = std::env::temp_dir().join(format!(
            "smtpgate-settings-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("smtpgate.toml");
        std::fs::write(&path, text)?;
        let result = resolve(
            RunArgs {
                config: Some(path),
                ..RunArgs::default()
            },
            0,
        );
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[test]
    fn file_values_apply_and_defaults_fill_in() {
        let s = config("iface = [\"eth0\"]\nttl = \"15m\"\nports = [25, 587]\nlogs = [\"/var/log/mail.log\", \"-\"]\nallowlist = [\"192.0.2.0/24\"]\n").unwrap();
        assert_eq!(s.ifaces, ["eth0"]);
        assert_eq!(s.grants.default.ttl, Duration::from_secs(900));
        assert_eq!(s.ports, [25, 587]);
        assert_eq!(s.watch.logs, [PathBuf::from("/var/log/mail.log")]);
        assert!(s.watch.stdin);
        assert_eq!(s.allowlist.len(), 1);
        assert_eq!(s.sweep_interval, Duration::from_secs(30));
        assert_eq!(s.hook, Hook::Xdp);
    }

    #[test]
    fn trusted_hosts_come_from_flags_or_the_file() {
        let s = config("iface = [\"eth0\"]\ntrust-hosts = [\"mx1.example\", \"2001:db8::25\"]\n")
            .unwrap();
        assert_eq!(
            s.watch.parser.options().trusted_hosts,
            ["mx1.example", "2001:db8::25"]
        );
        let file =
            ConfigFile::parse("iface = [\"eth0\"]\ntrust-hosts = [\"mx1.example\"]\n").unwrap();
        let args = RunArgs {
            parser: ParserArgs {
                trusted_hosts: vec!["mx2.example".into()],
                ..ParserArgs::default()
            },
            ..RunArgs::default()
        };
        assert_eq!(
            from_parts(args, file, 0)
                .unwrap()
                .watch
                .parser
                .options()
                .trusted_hosts,
            ["mx2.example"]
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir =
            std::env::temp_dir().join(format!("smtpgate-settings-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("smtpgate.toml");
        std::fs::write(&path, "iface = [\"eth0\"]\nttl = \"15m\"\n").unwrap();
        let s = resolve(
            RunArgs {
                config: Some(path),
                iface: vec!["eth1".into()],
                ttl: Some(Duration::from_secs(60)),
                ..RunArgs::default()
            },
            0,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(s.ifaces, ["eth1"]);
        assert_eq!(s.grants.default.ttl, Duration::from_secs(60));
    }

    #[test]
    fn the_replay_window_defaults_to_three_seconds_and_turns_off() {
        let window =
            |text: &str| config(&format!("iface = [\"eth0\"]\n{text}")).map(|s| s.replay_window);
        assert_eq!(window("").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(
            window("replay-window = \"250ms\"\n").unwrap(),
            Some(Duration::from_millis(250))
        );
        for off in ["off", "0"] {
            let s = config(&format!("iface = [\"eth0\"]\nreplay-window = \"{off}\"\n")).unwrap();
            assert_eq!(
                (s.replay_window, s.gate_config().replay_window_ms),
                (None, 0)
            );
        }
        let err = format!("{:#}", window("replay-window = \"2m\"\n").unwrap_err());
        assert!(
            err.contains("replay-window: '2m' is not a replay window"),
            "{err}"
        );
    }

    #[test]
    fn the_ipv6_grant_prefix_is_a_number_in_the_file_too() {
        let s = config("iface = [\"eth0\"]\nipv6-grant-prefix = 56\n").unwrap();
        assert_eq!(s.grants.ipv6_prefix, 56);
        let err = format!(
            "{:#}",
            config("iface = [\"eth0\"]\nipv6-grant-prefix = 32\n").unwrap_err()
        );
        assert!(
            err.contains("ipv6-grant-prefix: 32 is not a prefix length from 48 to 128"),
            "{err}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| format!("{:#}", config(text).unwrap_err());
        assert!(
            err("iface = [\"eth0\"]\nttl = \"soon\"\n").contains("ttl: 'soon' is not a duration")
        );
        assert!(err("iface = [\"eth0\"]\ntypo = 1\n").contains("unknown field `typo`"));
        assert!(err("iface = [\"eth0\"]\nallowlist = [\"192.0.2.1/24\"]\n")
            .contains("did you mean 192.0.2.0/24"));
        assert!(err("iface = [\"eth0\"]\npatterns = [\"no ip group\"]\n").contains("pattern"));
        assert!(err("iface = [\"eth0\"]\nservices = [\"smtp\"]\n").contains("service"));
        assert!(err("ttl = \"1m\"\n").contains("no interface to gate"));
        assert!(
            err("iface = [\"eth0\"]\nattach = \"tc\"\naction = \"reset\"\n")
                .contains("needs --attach xdp")
        );
        assert!(!err("iface = [\"eth0\"\n").contains('\n'), "one line");
        assert!(err("iface = [\"eth0\"]\ntrust-hosts = [\"mx 1\"]\n")
            .contains("trust-host: 'mx 1' is not a host name"));
    }

    #[test]
    fn a_stream_is_checked_before_use() {
        let stream = |url: &str, args: StreamArgs| {
            stream_settings(Some(url.to_string()), args, &ConfigFile::default())
                .map(|s| s.expect("a URL"))
                .map_err(|e| format!("{e:#}"))
        };
        let plain = stream("redis://192.0.2.20:6379/0", StreamArgs::default()).unwrap();
        assert_eq!(plain.key, DEFAULT_STREAM);
        assert!(
            stream("redis://relay:pw@192.0.2.20/0", StreamArgs::default())
                .unwrap_err()
                .contains("--redis-auth-file")
        );
        assert!(stream("http://192.0.2.20/", StreamArgs::default())
            .unwrap_err()
            .contains("not a redis://"));
        let ca = StreamArgs {
            redis_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..StreamArgs::default()
        };
        assert!(stream("redis://192.0.2.20/0", ca.clone())
            .unwrap_err()
            .contains("rediss://"));
        assert!(stream("rediss://192.0.2.20/0", ca)
            .unwrap_err()
            .contains("reading /nonexistent/ca.pem"));
        let alone = StreamArgs {
            stream: Some("grants".into()),
            ..StreamArgs::default()
        };
        assert!(stream_settings(None, alone, &ConfigFile::default())
            .unwrap_err()
            .to_string()
            .contains("need a stream"));
    }

    #[test]
    fn credentials_come_from_their_file_and_are_never_printed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("smtpgate-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let both = read_credentials(&file("both", "relay\ns3cret\n")).unwrap();
        assert_eq!(
            (both.user.as_deref(), both.password.as_str()),
            (Some("relay"), "s3cret")
        );
        assert!(!format!("{both:?}").contains("s3cret"));
        let default_user = read_credentials(&file("one", "s3cret\n")).unwrap();
        assert_eq!(default_user.user, None);
        for bad in ["", "a\nb\nc\n", "relay\n\n"] {
            assert!(
                read_credentials(&file("bad", bad)).is_err(),
                "{bad:?} was taken"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn watch_needs_a_stream_and_a_source() {
        let publish = || Some("redis://192.0.2.20:6379/0".to_string());
        let err = |args: WatchArgs| format!("{:#}", resolve_watch(args).unwrap_err());
        assert!(err(WatchArgs::default()).contains("nowhere to publish"));
        assert!(err(WatchArgs {
            publish: publish(),
            ..WatchArgs::default()
        })
        .contains("no login source"));
        let settings = resolve_watch(WatchArgs {
            publish: publish(),
            sources: SourceArgs {
                logs: vec![PathBuf::from("/var/log/mail.log")],
                ..SourceArgs::default()
            },
            ttl: Some(Duration::from_secs(300)),
            ..WatchArgs::default()
        })
        .unwrap();
        assert_eq!(settings.grants.longest_ttl(), Duration::from_secs(300));
        assert_eq!(settings.publish.key, DEFAULT_STREAM);
        assert_eq!(settings.watch.logs, [PathBuf::from("/var/log/mail.log")]);
    }
}
