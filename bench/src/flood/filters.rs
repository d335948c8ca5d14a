//! The contenders of the flood, each set up on the server side of the lab
//! to let the granted client (192.0.2.2) through and drop every other SYN
//! to port 25, and each with the counter that says how many it dropped.

use std::{io::Write, process::Stdio};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use smtpgate_tests::{Lab, Netns, CLIENT_V4};

use crate::xdp_filter::XdpFilter;

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filter {
    /// As the agent runs by default: refused SYNs recorded for replay.
    SmtpgateXdp,
    /// `--replay-window off`: the same without the recording.
    SmtpgateXdpReplayOff,
    SmtpgateTc,
    /// xdp-filter, from xdp-tools.
    XdpTools,
    /// nftables where an administrator would put it: the input hook.
    NftablesInput,
    /// nftables at its earliest hook, before routing: netdev ingress.
    NftablesIngress,
    Unfiltered,
}

impl Filter {
    pub const ALL: [Filter; 7] = [
        Filter::SmtpgateXdp,
        Filter::SmtpgateXdpReplayOff,
        Filter::SmtpgateTc,
        Filter::XdpTools,
        Filter::NftablesInput,
        Filter::NftablesIngress,
        Filter::Unfiltered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Filter::SmtpgateXdp => "smtpgate XDP",
            Filter::SmtpgateXdpReplayOff => "smtpgate XDP, replay off",
            Filter::SmtpgateTc => "smtpgate TC",
            Filter::XdpTools => "xdp-filter",
            Filter::NftablesInput => "nftables (input)",
            Filter::NftablesIngress => "nftables (ingress)",
            Filter::Unfiltered => "no filter",
        }
    }

    /// The flags of the smtpgate contenders' agent, which runs in the lab.
    pub fn smtpgate_flags(self) -> Option<&'static [&'static str]> {
        match self {
            Filter::SmtpgateXdp => Some(&["--attach", "xdp"]),
            Filter::SmtpgateXdpReplayOff => Some(&["--attach", "xdp", "--replay-window", "off"]),
            Filter::SmtpgateTc => Some(&["--attach", "tc"]),
            _ => None,
        }
    }
}

/// A filter in place; what it set up goes when it is dropped (smtpgate's
/// agent excepted: starting and stopping it needs the lab to itself, see
/// the caller). `absorbed` counts the flood packets it took care of:
/// dropped ones, or, without a filter, packets the IP stack received.
pub enum Installed<'a> {
    Smtpgate(&'a Lab),
    XdpFilter(XdpFilter<'a>),
    Nftables(NftTable<'a>),
    NoFilter(&'a Netns),
}

impl<'a> Installed<'a> {
    pub fn new(filter: Filter, lab: &'a Lab) -> Result<Self> {
        Ok(match filter {
            Filter::SmtpgateXdp | Filter::SmtpgateXdpReplayOff | Filter::SmtpgateTc => {
                Installed::Smtpgate(lab)
            }
            Filter::XdpTools => {
                Installed::XdpFilter(XdpFilter::load(&lab.server, &lab.server_iface, "native")?)
            }
            Filter::NftablesInput => Installed::Nftables(NftTable::create(
                &lab.server,
                "inet",
                "hook input priority filter",
            )?),
            Filter::NftablesIngress => Installed::Nftables(NftTable::create(
                &lab.server,
                "netdev",
                &format!("hook ingress device \"{}\" priority -500", lab.server_iface),
            )?),
            Filter::Unfiltered => Installed::NoFilter(&lab.server),
        })
    }

    pub fn absorbed(&self) -> Result<u64> {
        match self {
            Installed::Smtpgate(lab) => lab.counter("dropped_no_grant"),
            Installed::XdpFilter(filter) => filter.dropped(),
            Installed::Nftables(table) => table.dropped(),
            Installed::NoFilter(netns) => ip_in_receives(netns),
        }
    }
}

/// The nftables contender's table; deleted on drop.
pub struct NftTable<'a> {
    netns: &'a Netns,
    family: &'static str,
}

const NFT_TABLE: &str = "smtpgate_bench";

impl<'a> NftTable<'a> {
    /// A timed set of granted sources, holding the granted client, and a
    /// base chain at `hook` that accepts their SYNs to port 25 and counts
    /// and drops everyone else's.
    fn create(netns: &'a Netns, family: &'static str, hook: &str) -> Result<Self> {
        nft(
            netns,
            &format!(
                "table {family} {NFT_TABLE} {{\n\
                   set granted {{ type ipv4_addr; flags timeout; elements = {{ {CLIENT_V4} timeout 10m }}; }}\n\
                   chain gate {{\n\
                     type filter {hook}; policy accept;\n\
                     tcp dport 25 tcp flags & (syn | ack) == syn ip saddr @granted accept\n\
                     tcp dport 25 tcp flags & (syn | ack) == syn counter drop\n\
                   }}\n\
                 }}\n"
            ),
        )?;
        Ok(Self { netns, family })
    }

    /// Packets the drop rule's counter has seen.
    fn dropped(&self) -> Result<u64> {
        let out = self
            .netns
            .command("nft")
            .args(["-j", "list", "table", self.family, NFT_TABLE])
            .output()
            .context("running nft")?;
        let table: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing nft -j")?;
        table["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item["rule"]["expr"].as_array())
            .flatten()
            .find_map(|expr| expr["counter"]["packets"].as_u64())
            .context("no counter in the nftables table")
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = nft(
            self.netns,
            &format!("delete table {} {NFT_TABLE}\n", self.family),
        );
    }
}

fn nft(netns: &Netns, script: &str) -> Result<()> {
    let mut child = netns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// IpInReceives of the namespace's /proc/net/snmp.
fn ip_in_receives(netns: &Netns) -> Result<u64> {
    let out = netns
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .context("reading /proc/net/snmp")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (
        ip_lines.next().context("no Ip: header")?,
        ip_lines.next().context("no Ip: values")?,
    );
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InReceives")
        .and_then(|(_, value)| value.parse().ok())
        .context("no InReceives in /proc/net/snmp")
}
