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
    /// Show the gate's counters and grant-map usage.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Remove the gate from an interface, or from all and delete every pin.
    Detach {
        /// Only this interface; the maps and grants stay for the others.
        #[arg(long)]
        iface: Option<String>,
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

    /// Capacity of the grant map. Applies when the map is created; an
    /// existing pinned map keeps its size until `smtpgate detach`.
    #[arg(long, default_value_t = smtpgate_common::DEFAULT_MAX_GRANTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_grants: u32,

    /// How often expired grants are removed from the map.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Skb,
}
