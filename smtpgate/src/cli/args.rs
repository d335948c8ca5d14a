//! The command line. These command and flag names are the product's
//! interface: scripts and runbooks depend on them.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use jiff::tz::TimeZone;
use smtpgate_logins::{Format, Service};

use crate::{
    agent::{quota::Quota, settings::PolicyListen},
    gate::{
        addr,
        clock::parse_duration,
        options::{Action, Hook, Mode, SynRate, XdpMode},
        pins,
    },
};

/// Where `notify` reports by default; give `run --listen-unix` the same path.
pub const DEFAULT_NOTIFY_SOCKET: &str = "/run/smtpgate/notify.sock";

#[derive(Parser)]
#[command(
    name = "smtpgate",
    version,
    about = "POP-before-SMTP enforced in the Linux kernel"
)]
pub struct Cli {
    /// bpffs directory holding the gate's pinned maps and attachments.
    #[arg(long, global = true, value_name = "DIR", default_value = pins::DEFAULT_DIR)]
    pub bpffs_dir: PathBuf,

    /// More log output (-v: debug, also each SYN the kernel drops; -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Attach the gate (or take over the pinned one) and keep it tidy until
    /// SIGINT/SIGTERM; the gate and its grants stay in place afterwards.
    Run(Box<RunArgs>),
    /// Watch logins like `run` and publish each grant to a Redis stream for
    /// the relays (`run --subscribe`), on a POP host: attaches nothing.
    Watch(Box<WatchArgs>),
    /// Grant an address: it may open SMTP connections until the TTL runs out.
    Allow {
        /// IPv4 or IPv6 address.
        ip: String,
        /// How long the grant lasts (90s, 10m, 1h). An existing longer grant is kept.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
        /// The customer the grant is for, so that quotas and
        /// `revoke --user` see it; without it, the grant is nobody's.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Remove grants: an address's, or every one a user earned. Their new
    /// SMTP connections are dropped at once.
    Revoke {
        /// IPv4 or IPv6 address.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        ip: Option<String>,
        /// Every grant this user earned, on whatever address.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// End a user's quota cooldown: their next login grants again.
    Pardon {
        user: String,
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// List live grants: the address, time left, and who earned each.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the gate's counters (totals and rates) and grant-map usage.
    Stats {
        #[arg(long)]
        json: bool,
        /// Rates are measured over this long (the command waits for it).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Totals only, without waiting to measure rates.
        #[arg(long)]
        no_rates: bool,
    },
    /// Manage the static allowlist: source prefixes that always pass.
    Allowlist {
        #[command(subcommand)]
        action: AllowlistAction,
    },
    /// Report a login to the agent's --listen-unix socket (for a Dovecot
    /// post-login script; needs no root, only access to the socket).
    Notify {
        /// The client address that logged in.
        ip: String,
        /// pop3 or imap.
        #[arg(long, default_value = "pop3")]
        service: String,
        /// The user name, for the agent's log.
        #[arg(long)]
        user: Option<String>,
        /// The agent's socket.
        #[arg(long, default_value = DEFAULT_NOTIFY_SOCKET)]
        socket: PathBuf,
    },
    /// Print each log line's verdict (which address would be granted, or why
    /// not) and a summary: test a log before deploying.
    CheckLog {
        /// The log file; `-` reads standard input.
        file: PathBuf,
        #[command(flatten)]
        parser: ParserArgs,
        /// Print only the summary and the granting lines.
        #[arg(long)]
        grants_only: bool,
    },
    /// Remove the gate from an interface, or from all and delete every pin.
    Detach {
        /// Only this interface; the maps and grants stay for the others.
        #[arg(long)]
        iface: Option<String>,
    },
    /// Write the manual pages or the shell completions, for packaging.
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

/// What `smtpgate generate` writes (see `cli/generate.rs`).
#[derive(Subcommand)]
pub enum Generate {
    /// smtpgate.8 and a page for each subcommand.
    Man { dir: PathBuf },
    /// Completions for bash, zsh and fish.
    Completions { dir: PathBuf },
}

#[derive(Subcommand)]
pub enum AllowlistAction {
    /// Add prefixes (192.0.2.0/24, 2001:db8::/32, or a single address).
    Add {
        #[arg(required = true, value_name = "CIDR")]
        prefixes: Vec<String>,
    },
    /// Remove prefixes.
    Del {
        #[arg(required = true, value_name = "CIDR")]
        prefixes: Vec<String>,
    },
    /// List the allowlist with where each entry came from.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Every flag of `run` is optional here: a value may also come from the
/// configuration file, and the flag wins. Defaults are applied afterwards
/// (see `settings`), so `--help` states them in words.
#[derive(Args, Default)]
pub struct RunArgs {
    /// Configuration file (TOML) holding any of these settings; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration (file and flags), print it, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Interface to gate (repeatable). Required here or in the file.
    #[arg(long, value_name = "IFACE")]
    pub iface: Vec<String>,

    /// Where to hook in [default: xdp]: XDP (fastest, before the kernel
    /// allocates anything) or TC clsact ingress (for drivers without XDP).
    #[arg(long, value_enum)]
    pub attach: Option<Hook>,

    /// XDP mode [default: native]: native (in the driver) or skb (generic).
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,

    /// Gated destination TCP port (repeatable) [default: 25].
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Gate only SYNs to these local addresses (repeatable); by default every
    /// address on the interface is gated. For a host that is an MX on one
    /// address and the customers' relay on another: gate the relay address.
    #[arg(long = "dest", value_name = "ADDR", value_parser = addr::parse)]
    pub dests: Vec<IpAddr>,

    /// enforce [default]: drop refused SYNs. monitor: pass everything, count
    /// what would have been dropped (monitor_would_drop), for a trial period.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// drop [default]: refused SYNs vanish (the client retries, then times
    /// out). reset: answer with a TCP RST so the client fails at once (XDP only).
    #[arg(long, value_enum)]
    pub action: Option<Action>,

    /// Capacity of the grant map [default: 1048576]. Applies when the map is
    /// created; an existing pinned map keeps its size until `smtpgate detach`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_grants: Option<u32>,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9925).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_socket_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// How often expired grants are removed from the map [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub sweep_interval: Option<Duration>,

    /// Give the pin directory this group (mode 0750): its members may read
    /// the pins, nobody else but the agent's user and root.
    #[arg(long, value_name = "GROUP")]
    pub pin_group: Option<String>,
    /// How long a SYN refused for want of a grant is kept, to be replayed
    /// the moment its source's grant lands, or off [default: 3s]. A mail
    /// client's "send and receive" then connects at once instead of after
    /// its retransmission a second later.
    #[arg(long, value_name = "DURATION|off", value_parser = parse_replay_window)]
    pub replay_window: Option<Duration>,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// How long a login grants SMTP access [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,

    #[command(flatten)]
    pub grants: GrantArgs,

    #[command(flatten)]
    pub parser: ParserArgs,

    /// Where log positions and the journal cursor are kept [default: /var/lib/smtpgate].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Apply every grant and revoke published to this Redis stream
    /// (redis://HOST:6379/0, or rediss:// for TLS), besides the local logins.
    #[arg(long, value_name = "URL")]
    pub subscribe: Option<String>,

    #[command(flatten)]
    pub stream: StreamArgs,
}

/// Where logins come from: the same flags for `run` and `watch`.
#[derive(Args, Default)]
pub struct SourceArgs {
    /// Mail log to watch for logins (repeatable); `-` is standard input.
    /// Followed by name across rotations; positions survive restarts.
    #[arg(long = "log", value_name = "PATH")]
    pub logs: Vec<PathBuf>,

    /// Watch the systemd journal for logins.
    #[arg(long)]
    pub journal: bool,

    /// Only these journal units (repeatable; implies --journal).
    #[arg(long = "journal-unit", value_name = "UNIT")]
    pub journal_units: Vec<String>,

    /// Accept login reports (`IP SERVICE USER` lines) on this Unix socket,
    /// e.g. from a Dovecot post-login script via `smtpgate notify`.
    #[arg(long, value_name = "PATH")]
    pub listen_unix: Option<PathBuf>,

    /// Permissions of the socket [default: 0660]: who may report logins.
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal_mode)]
    pub listen_unix_mode: Option<u32>,

    /// Group owning the socket (e.g. the mail users' group).
    #[arg(long, value_name = "GROUP")]
    pub listen_unix_group: Option<String>,
}

/// `watch`: a POP host's logins, published to a Redis stream for the
/// relays. Nothing is attached; no BPF is needed.
#[derive(Args, Default)]
pub struct WatchArgs {
    /// Configuration file (TOML), the relays' own will do: what `watch`
    /// has no use for in it is ignored; flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration (file and flags), print it, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// The Redis stream to publish each grant to (redis://HOST:6379/0, or
    /// rediss:// for TLS). Required here or in the file.
    #[arg(long, value_name = "URL")]
    pub publish: Option<String>,

    #[command(flatten)]
    pub stream: StreamArgs,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// How long a login grants SMTP access [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,

    /// An IPv6 login grants its address's prefix of this length [default: 64].
    #[arg(long, value_name = "BITS", value_parser = parse_ipv6_grant_prefix)]
    pub ipv6_grant_prefix: Option<u8>,

    #[command(flatten)]
    pub parser: ParserArgs,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9925).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_socket_addr)]
    pub metrics_listen: Option<SocketAddr>,

    /// Where log positions, the journal cursor and the count of published
    /// entries are kept [default: /var/lib/smtpgate].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The stream and how to reach it, for every command that publishes or
/// subscribes.
#[derive(Args, Default, Clone)]
pub struct StreamArgs {
    /// The stream's key [default: smtpgate:grants].
    #[arg(long, value_name = "KEY")]
    pub stream: Option<String>,

    /// PEM file of the certificate authority a rediss:// server's
    /// certificate must chain to [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,

    /// File holding the Redis ACL user on its first line and the password
    /// on its second (one line: the default user's password). Never give
    /// credentials in the URL, where `ps` shows them.
    #[arg(long, value_name = "FILE")]
    pub redis_auth_file: Option<PathBuf>,
}

/// `--publish` of the one-shot commands: the event goes to the stream, for
/// every relay, instead of into this host's gate.
#[derive(Args, Default, Clone)]
pub struct PublishArgs {
    /// Publish the event to this Redis stream (redis://HOST:6379/0 or
    /// rediss://) for the relays, instead of acting on the local gate.
    #[arg(long, value_name = "URL")]
    pub publish: Option<String>,

    #[command(flatten)]
    pub stream: StreamArgs,
}

/// What a grant is worth: the defaults that `[[network]]` tables of the
/// configuration file override per network.
#[derive(Args, Default)]
pub struct GrantArgs {
    /// An IPv6 login grants its address's prefix of this length [default: 64],
    /// since privacy addresses rotate within it (48 to 128).
    #[arg(long, value_name = "BITS", value_parser = parse_ipv6_grant_prefix)]
    pub ipv6_grant_prefix: Option<u8>,

    /// Connections a granted source may open, sustained, or off [default: 10/1s].
    #[arg(long, value_name = "COUNT/DURATION")]
    pub grant_syn_rate: Option<Switch<SynRate>>,

    /// Connections a granted source may open at once [default: 40].
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u32).range(1..))]
    pub grant_syn_burst: Option<u32>,

    /// Recipients one user may send in a sliding window, over all the
    /// addresses they hold, or off [default: 300/1h]. Needs --policy-listen.
    #[arg(long, value_name = "COUNT/DURATION")]
    pub user_quota: Option<Switch<Quota>>,

    /// Recipients one address may send in a sliding window, whoever holds
    /// it, or off [default: 1000/1h]. Needs --policy-listen.
    #[arg(long, value_name = "COUNT/DURATION")]
    pub address_quota: Option<Switch<Quota>>,

    /// How long a user over quota earns no grant [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub quota_cooldown: Option<Duration>,

    /// Serve Postfix's policy delegation protocol here, for
    /// `check_policy_service`: inet:ADDRESS:PORT or unix:PATH.
    #[arg(long, value_name = "inet:ADDR:PORT|unix:PATH", value_parser = parse_policy_listen)]
    pub policy_listen: Option<PolicyListen>,
}

/// A limit, or `off` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch<T>(pub Option<T>);

impl<T: FromStr<Err = String>> FromStr for Switch<T> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Self(None)),
            text => text.parse().map(|value| Self(Some(value))),
        }
    }
}

/// The longest replay window: a client gives up on a connection long
/// before, and whatever it still retransmits is recorded afresh.
const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(60);

/// A replay window, `off` or `0` for none (then [`Duration::ZERO`]).
pub fn parse_replay_window(text: &str) -> Result<Duration, String> {
    if matches!(text.trim(), "off" | "0") {
        return Ok(Duration::ZERO);
    }
    let window = parse_duration(text)?;
    if window > MAX_REPLAY_WINDOW || window < Duration::from_millis(1) {
        return Err(format!(
            "'{text}' is not a replay window from 1ms to {}s, or off",
            MAX_REPLAY_WINDOW.as_secs()
        ));
    }
    Ok(window)
}

/// An IPv6 grant prefix length. Shorter than /48 would grant more than one
/// customer's site; /128 grants each address alone.
pub fn parse_ipv6_grant_prefix(text: &str) -> Result<u8, String> {
    let bits = text
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("'{text}' is not a prefix length from 48 to 128"))?;
    ipv6_grant_prefix(bits)
}

/// `bits` as an IPv6 grant prefix length (the file writes it as a number).
pub fn ipv6_grant_prefix(bits: u32) -> Result<u8, String> {
    u8::try_from(bits)
        .ok()
        .filter(|bits| (48..=128).contains(bits))
        .ok_or_else(|| format!("{bits} is not a prefix length from 48 to 128"))
}

/// `inet:ADDRESS:PORT` or `unix:PATH`, as Postfix names policy services.
pub fn parse_policy_listen(text: &str) -> Result<PolicyListen, String> {
    if let Some(addr) = text.strip_prefix("inet:") {
        return parse_socket_addr(addr).map(PolicyListen::Inet);
    }
    match text.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(PolicyListen::Unix(PathBuf::from(path))),
        _ => Err(format!("'{text}' is not inet:ADDRESS:PORT or unix:PATH")),
    }
}

/// How log lines are read: the same flags for `run` and `check-log`, so
/// that a log checked beforehand is judged as the agent will judge it.
#[derive(Args, Default)]
pub struct ParserArgs {
    /// Which logins grant (repeatable) [default: pop3 and imap].
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<Service>,

    /// Shape of log lines [default: auto]: auto, syslog, rfc5424, journal,
    /// dovecot-file or bare.
    #[arg(long, alias = "format", value_name = "FORMAT")]
    pub log_format: Option<Format>,

    /// Extra login pattern (repeatable): a regular expression with a named
    /// `ip` group (and optional `user`, `service`), for servers not built in.
    /// It must match a whole `PROGRAM[PID]: MESSAGE` (or `PROGRAM: MESSAGE`).
    #[arg(long = "pattern", value_name = "REGEX")]
    pub patterns: Vec<String>,

    /// Only logins from lines whose syslog host field is this host grant
    /// (repeatable): for a central syslog collector. Lines without a host
    /// field (Dovecot's own log file) then never grant.
    #[arg(long = "trust-host", value_name = "NAME")]
    pub trusted_hosts: Vec<String>,

    /// Time zone of log time stamps that carry none [default: the system's].
    #[arg(long, value_name = "ZONE", value_parser = parse_timezone)]
    pub timezone: Option<TimeZone>,
}

/// A permission mode such as `0660` (the socket's, from flag or file).
pub fn parse_octal_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{text}' is not a permission mode like 0660"))
}

/// An `ADDRESS:PORT` to listen on (from flag or file).
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not an ADDRESS:PORT"))
}

/// A time zone by its IANA name, such as `Europe/Berlin` (from flag or file).
pub fn parse_timezone(text: &str) -> Result<TimeZone, String> {
    TimeZone::get(text).map_err(|e| format!("'{text}': {e}"))
}
