//! The command line. These command and flag names are the product's
//! interface: scripts and runbooks depend on them.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{clock::parse_duration, pins};

#[derive(Parser)]
#[command(name = "smtpgate", version, about = "POP-before-SMTP enforced in the Linux kernel")]
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
    Run(RunArgs),
    /// Grant an address: it may open SMTP connections until the TTL runs out.
    Allow {
        /// IPv4 or IPv6 address.
        ip: String,
        /// How long the grant lasts (90s, 10m, 1h). An existing longer grant is kept.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Remove an address's grant: its new SMTP connections are dropped at once.
    Revoke {
        /// IPv4 or IPv6 address.
        ip: String,
    },
    /// List live grants with the seconds each has left.
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
    /// Remove the gate from an interface, or from all and delete every pin.
    Detach {
        /// Only this interface; the maps and grants stay for the others.
        #[arg(long)]
        iface: Option<String>,
    },
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

#[derive(Args)]
pub struct RunArgs {
    /// Interface to gate (repeatable).
    #[arg(long, required = true, value_name = "IFACE")]
    pub iface: Vec<String>,

    /// Where to hook in: XDP (fastest, before the kernel allocates anything)
    /// or TC clsact ingress (for drivers without XDP).
    #[arg(long, value_enum, default_value_t = pins::Hook::Xdp)]
    pub attach: pins::Hook,

    /// XDP mode: native (in the driver) or skb (generic, any driver).
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,

    /// Gated destination TCP port (repeatable).
    #[arg(long = "port", value_name = "PORT", default_values_t = [25u16],
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Gate only SYNs to these local addresses (repeatable); by default every
    /// address on the interface is gated. For a host that is an MX on one
    /// address and the customers' relay on another: gate the relay address.
    #[arg(long = "dest", value_name = "ADDR")]
    pub dests: Vec<String>,

    /// enforce: drop refused SYNs. monitor: pass everything, count what
    /// would have been dropped (monitor_would_drop) — for a trial period.
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    pub mode: Mode,

    /// drop: refused SYNs vanish (the client retries, then times out).
    /// reset: answer them with a TCP RST so the client fails at once (XDP only).
    #[arg(long, value_enum, default_value_t = Action::Drop)]
    pub action: Action,

    /// Capacity of the grant map. Applies when the map is created; an
    /// existing pinned map keeps its size until `smtpgate detach`.
    #[arg(long, default_value_t = smtpgate_common::DEFAULT_MAX_GRANTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_grants: u32,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9925).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// How often expired grants are removed from the map.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Skb,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Enforce,
    Monitor,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    Drop,
    Reset,
}
