//! The peer: xdp-filter from xdp-tools, set to drop TCP to port 25, the way
//! an administrator would block the port without smtpgate.
//!
//! Its program is the one built for the `tcp` feature alone (Ethernet and
//! VLAN, IPv4 and IPv6, TCP ports), the leanest that does the job. libxdp's
//! multi-program dispatcher is skipped, so the program runs on its own just
//! as the gate does. xdp-filter keeps its maps under /sys/fs/bpf/xdp-filter
//! whatever bpffs the caller prefers, so it is one per host: the benchmark
//! refuses to start it when someone else's is loaded.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{loaded_programs, ProgramFd},
};
use smtpgate_tests::{tools, Netns};

const PINS: &str = "/sys/fs/bpf/xdp-filter";
/// Key of XDP_DROP in xdp-filter's per-action statistics.
const XDP_DROP: u32 = 1;

/// xdp-filter loaded on one interface of a namespace; unloaded on drop.
pub struct XdpFilter<'a> {
    netns: &'a Netns,
    iface: String,
}

impl<'a> XdpFilter<'a> {
    /// Loads xdp-filter on `iface` in `mode` (`native` or `skb`) and makes
    /// it drop TCP segments to port 25.
    pub fn load(netns: &'a Netns, iface: &str, mode: &str) -> Result<Self> {
        if Path::new(PINS).exists() {
            bail!("xdp-filter is already in use on this host ({PINS} exists); unload it first (xdp-filter unload --all)");
        }
        run(netns, &["load", "--mode", mode, "--features", "tcp", iface])?;
        let filter = Self {
            netns,
            iface: iface.to_string(),
        };
        run(netns, &["port", "--proto", "tcp", "--mode", "dst", "25"])?;
        Ok(filter)
    }

    /// The program attached to the interface.
    pub fn program(&self) -> Result<ProgramFd> {
        let out = self.netns.ip(&["-j", "link", "show", "dev", &self.iface])?;
        let links: serde_json::Value =
            serde_json::from_str(&out).context("parsing `ip -j link show`")?;
        let id = links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .context("no XDP program on the interface")?;
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| u64::from(p.id()) == id)
            .with_context(|| format!("program {id} vanished"))?;
        Ok(info.fd()?)
    }

    /// Frames its program dropped so far, over all CPUs.
    pub fn dropped(&self) -> Result<u64> {
        let stats: PerCpuArray<MapData, [u64; 2]> = PerCpuArray::try_from(
            smtpgate::gate::maps::open_pinned(&Path::new(PINS).join("xdp_stats_map"))?,
        )?;
        Ok(stats
            .get(&XDP_DROP, 0)?
            .iter()
            .map(|[packets, _bytes]| packets)
            .sum())
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = run(self.netns, &["unload", &self.iface]);
    }
}

fn run(netns: &Netns, args: &[&str]) -> Result<()> {
    let out = netns
        .command(tools::require("xdp-filter")?)
        .args(args)
        .env("LIBXDP_SKIP_DISPATCHER", "1")
        .output()
        .context("running xdp-filter")?;
    if !out.status.success() {
        bail!(
            "xdp-filter {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
