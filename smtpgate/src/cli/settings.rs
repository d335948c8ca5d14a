//! The settings `run` works with: the configuration file, overridden by
//! flags, with defaults for what neither gives. Everything is validated here,
//! before anything touches the kernel, so `--check-config` and a real start
//! reject the same mistakes with the same messages.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;
use smtpgate_logins::{Format, ParserOptions, Service};

use crate::{
    cli::args::{parse_octal_mode, Action, Mode, RunArgs, XdpModeArg},
    gate::{addr, allowlist, clock::parse_duration, pins::Hook},
};

/// Grants last this long unless configured otherwise: ten minutes, as
/// POP-before-SMTP has long been run.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
pub const DEFAULT_STATE_DIR: &str = "/var/lib/smtpgate";
const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// `/etc/smtpgate/smtpgate.toml`: every setting `run` has a flag for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub iface: Option<Vec<String>>,
    pub attach: Option<Hook>,
    pub xdp_mode: Option<XdpModeArg>,
    pub ports: Option<Vec<u16>>,
    pub dests: Option<Vec<String>>,
    pub mode: Option<Mode>,
    pub action: Option<Action>,
    pub max_grants: Option<u32>,
    pub metrics_listen: Option<String>,
    pub sweep_interval: Option<String>,
    pub allowlist: Option<Vec<String>>,
    pub logs: Option<Vec<PathBuf>>,
    pub journal: Option<bool>,
    pub journal_units: Option<Vec<String>>,
    pub listen_unix: Option<PathBuf>,
    pub listen_unix_mode: Option<String>,
    pub listen_unix_group: Option<String>,
    pub ttl: Option<String>,
    pub services: Option<Vec<String>>,
    pub log_format: Option<String>,
    pub patterns: Option<Vec<String>>,
    pub trust_hosts: Option<Vec<String>>,
    pub state_dir: Option<PathBuf>,
    pub timezone: Option<String>,
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

/// A Unix socket for login reports.
#[derive(Debug, Clone)]
pub struct SocketSettings {
    pub path: PathBuf,
    pub mode: u32,
    pub group: Option<String>,
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
    pub parser: ParserOptions,
    pub state_dir: PathBuf,
}

impl WatchSettings {
    pub fn any_source(&self) -> bool {
        !self.logs.is_empty() || self.stdin || self.journal.is_some() || self.socket.is_some()
    }
}

/// Everything `run` needs, resolved and validated.
#[derive(Debug)]
pub struct Settings {
    pub ifaces: Vec<String>,
    pub hook: Hook,
    pub xdp_mode: XdpModeArg,
    pub ports: Vec<u16>,
    pub dests: Vec<IpAddr>,
    pub mode: Mode,
    pub action: Action,
    pub max_grants: u32,
    pub metrics_listen: Option<SocketAddr>,
    pub sweep_interval: Duration,
    pub allowlist: Vec<IpNet>,
    pub watch: WatchSettings,
}

/// The flag's values if any were given, else the file's.
fn pick<T>(flag: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flag.is_empty() {
        file.unwrap_or_default()
    } else {
        flag
    }
}

/// A duration from a flag, else from the file (as text), else the default.
fn duration(
    flag: Option<Duration>,
    file: Option<String>,
    key: &str,
    default: Duration,
) -> Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(text)) => parse_duration(&text).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        (None, None) => Ok(default),
    }
}

/// How log lines are read: shared by `run` and `check-log`, so that a log
/// checked beforehand is judged exactly as the agent will judge it. The
/// patterns are compiled here: a bad one is a configuration error.
pub fn parser_options(
    format: Option<String>,
    patterns: Vec<String>,
    services: Vec<String>,
    timezone: Option<String>,
    trusted_hosts: Vec<String>,
) -> Result<ParserOptions> {
    if let Some(host) = trusted_hosts.iter().find(|host| !is_host_name(host)) {
        bail!("trust-host: '{host}' is not a host name as syslog writes one (letters, digits, '.', '-', '_', ':')");
    }
    let mut options = ParserOptions {
        custom_patterns: patterns,
        trusted_hosts,
        ..ParserOptions::default()
    };
    if !services.is_empty() {
        options.services = services
            .iter()
            .map(|s| {
                s.parse::<Service>()
                    .map_err(|e| anyhow::anyhow!("service: {e}"))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(format) = format {
        options.format = format
            .parse::<Format>()
            .map_err(|e| anyhow::anyhow!("log-format: {e}"))?;
    }
    if let Some(zone) = timezone {
        options.timezone = jiff::tz::TimeZone::get(&zone)
            .map_err(|e| anyhow::anyhow!("timezone: '{zone}': {e}"))?;
    }
    smtpgate_logins::Parser::new(options.clone()).map_err(|e| anyhow::anyhow!("pattern: {e}"))?;
    Ok(options)
}

/// A host field as syslog collectors write it: a name or an address.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

impl Settings {
    pub fn resolve(args: RunArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        Self::from_parts(args, file)
    }

    /// The settings of `args` over those of `file`; touches no file.
    pub fn from_parts(args: RunArgs, file: ConfigFile) -> Result<Self> {
        let ifaces = pick(args.iface, file.iface);
        if ifaces.is_empty() {
            bail!(
                "no interface to gate: give --iface IFACE (or iface = [...] in the configuration)"
            );
        }
        let ports = pick(args.ports, file.ports);
        if ports.contains(&0) {
            bail!("port 0 cannot be gated");
        }
        let dests = pick(args.dests, file.dests)
            .iter()
            .map(|d| addr::parse(d))
            .collect::<Result<Vec<_>>>()?;
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
        let metrics_listen =
            match (args.metrics_listen, file.metrics_listen) {
                (Some(addr), _) => Some(addr),
                (None, Some(text)) => Some(text.parse().map_err(|_| {
                    anyhow::anyhow!("metrics-listen: '{text}' is not an ADDRESS:PORT")
                })?),
                (None, None) => None,
            };
        let allowlist = file
            .allowlist
            .unwrap_or_default()
            .iter()
            .map(|p| allowlist::parse_prefix(p))
            .collect::<Result<Vec<_>>>()?;

        let mut logs = pick(args.logs, file.logs);
        let stdin = logs.iter().any(|p| p == Path::new("-"));
        logs.retain(|p| p != Path::new("-"));
        let units = pick(args.journal_units, file.journal_units);
        let journal =
            (args.journal || file.journal.unwrap_or(false) || !units.is_empty()).then_some(units);
        let socket = match args.listen_unix.or(file.listen_unix) {
            Some(path) => Some(SocketSettings {
                path,
                mode: match (args.listen_unix_mode, file.listen_unix_mode) {
                    (Some(mode), _) => mode,
                    (None, Some(text)) => parse_octal_mode(&text)
                        .map_err(|e| anyhow::anyhow!("listen-unix-mode: {e}"))?,
                    (None, None) => DEFAULT_SOCKET_MODE,
                },
                group: args.listen_unix_group.or(file.listen_unix_group),
            }),
            None => None,
        };
        let parser = parser_options(
            args.log_format.or(file.log_format),
            pick(args.patterns, file.patterns),
            pick(args.services, file.services),
            args.timezone.or(file.timezone),
            pick(args.trusted_hosts, file.trust_hosts),
        )?;

        Ok(Settings {
            ifaces,
            hook,
            xdp_mode: args
                .xdp_mode
                .or(file.xdp_mode)
                .unwrap_or(XdpModeArg::Native),
            ports: if ports.is_empty() { vec![25] } else { ports },
            dests,
            mode: args.mode.or(file.mode).unwrap_or(Mode::Enforce),
            action,
            max_grants,
            metrics_listen,
            sweep_interval: duration(
                args.sweep_interval,
                file.sweep_interval,
                "sweep-interval",
                Duration::from_secs(30),
            )?,
            allowlist,
            watch: WatchSettings {
                logs,
                stdin,
                journal,
                socket,
                ttl: duration(args.ttl, file.ttl, "ttl", DEFAULT_TTL)?,
                parser,
                state_dir: args
                    .state_dir
                    .or(file.state_dir)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            },
        })
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
        let result = Settings::resolve(RunArgs {
            config: Some(path),
            ..RunArgs::default()
        });
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[test]
    fn file_values_apply_and_defaults_fill_in() {
        let s = config("iface = [\"eth0\"]\nttl = \"15m\"\nports = [25, 587]\nlogs = [\"/var/log/mail.log\", \"-\"]\nallowlist = [\"192.0.2.0/24\"]\n").unwrap();
        assert_eq!(s.ifaces, ["eth0"]);
        assert_eq!(s.watch.ttl, Duration::from_secs(900));
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
            s.watch.parser.trusted_hosts,
            ["mx1.example", "2001:db8::25"]
        );
        let file =
            ConfigFile::parse("iface = [\"eth0\"]\ntrust-hosts = [\"mx1.example\"]\n").unwrap();
        let args = RunArgs {
            trusted_hosts: vec!["mx2.example".into()],
            ..RunArgs::default()
        };
        assert_eq!(
            Settings::from_parts(args, file)
                .unwrap()
                .watch
                .parser
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
        let s = Settings::resolve(RunArgs {
            config: Some(path),
            iface: vec!["eth1".into()],
            ttl: Some(Duration::from_secs(60)),
            ..RunArgs::default()
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(s.ifaces, ["eth1"]);
        assert_eq!(s.watch.ttl, Duration::from_secs(60));
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
}
