//! The one-shot commands. They work on the pinned maps directly, so they act
//! on the live gate whether or not `smtpgate run` is running.

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;
use smtpgate_common::{COUNTERS_MAP, GRANTS_MAP};

use crate::{
    addr, attach,
    cli::{Cli, Command},
    clock,
    maps::{self, Counters, Grants},
    pins::PinDir,
    run,
};

pub fn dispatch(cli: Cli) -> Result<()> {
    require_root()?;
    let pins = PinDir::new(cli.bpffs_dir);
    match cli.command {
        Command::Run(args) => run::run(&pins, args, cli.verbose),
        Command::Allow { ip, ttl } => allow(&pins, &ip, ttl),
        Command::Revoke { ip } => revoke(&pins, &ip),
        Command::List { json } => list(&pins, json),
        Command::Stats { json } => stats(&pins, json),
        Command::Detach { iface } => detach(&pins, iface.as_deref()),
    }
}

fn require_root() -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("smtpgate must run as root: it loads BPF programs and manages pinned BPF maps");
    }
    Ok(())
}

fn open_grants(pins: &PinDir) -> Result<Grants> {
    pins.require_gate()?;
    Grants::new(maps::open_pinned(&pins.map(GRANTS_MAP))?)
}

fn allow(pins: &PinDir, ip: &str, ttl: Duration) -> Result<()> {
    let ip = addr::parse(ip)?;
    let expiry = open_grants(pins)?.grant(ip, ttl)?;
    println!("allowed {ip} for {}", format_secs(clock::remaining(expiry)));
    Ok(())
}

fn revoke(pins: &PinDir, ip: &str) -> Result<()> {
    let ip = addr::parse(ip)?;
    if open_grants(pins)?.revoke(ip)? {
        println!("revoked {ip}");
    } else {
        println!("{ip} had no grant");
    }
    Ok(())
}

fn list(pins: &PinDir, as_json: bool) -> Result<()> {
    let grants = open_grants(pins)?.live()?;
    if as_json {
        let rows: Vec<_> = grants
            .iter()
            .map(|g| json!({ "address": g.ip.to_string(), "seconds_left": g.remaining.as_secs() }))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!("{:<40} {:>10}", "ADDRESS", "LEFT");
    for grant in &grants {
        println!("{:<40} {:>10}", grant.ip.to_string(), format_secs(grant.remaining));
    }
    Ok(())
}

fn stats(pins: &PinDir, as_json: bool) -> Result<()> {
    let grants = open_grants(pins)?;
    let (live, capacity) = (grants.count_live(), grants.capacity());
    let counters = Counters::new(maps::open_pinned(&pins.map(COUNTERS_MAP))?)?.totals()?;
    let attachments = pins.attachments()?;
    if as_json {
        let counters: serde_json::Map<_, _> =
            counters.iter().map(|(c, v)| (c.name().to_string(), json!(v))).collect();
        let attached: Vec<_> = attachments
            .iter()
            .map(|(hook, iface)| json!({ "iface": iface, "hook": hook.name() }))
            .collect();
        let doc = json!({
            "counters": counters,
            "grants": { "live": live, "capacity": capacity },
            "attached": attached,
        });
        println!("{doc}");
        return Ok(());
    }
    for (hook, iface) in &attachments {
        println!("attached      {iface} ({})", hook.name());
    }
    println!("grants        {live} live of {capacity}");
    for (counter, value) in counters {
        println!("{:<22} {value}", counter.name());
    }
    Ok(())
}

fn detach(pins: &PinDir, iface: Option<&str>) -> Result<()> {
    pins.require_gate()?;
    let attachments = pins.attachments()?;
    let targets: Vec<_> = match iface {
        Some(iface) => {
            let hits: Vec<_> = attachments.iter().filter(|(_, i)| i == iface).cloned().collect();
            if hits.is_empty() {
                bail!("smtpgate is not attached to '{iface}'");
            }
            hits
        }
        None => attachments,
    };
    for (hook, iface) in &targets {
        attach::detach_one(pins, *hook, iface)?;
        println!("detached {iface} ({})", hook.name());
    }
    if pins.attachments()?.is_empty() {
        for map in pins.maps() {
            std::fs::remove_file(&map).ok();
        }
        std::fs::remove_dir(pins.path()).ok();
        println!("removed the grant map, counters and pins under {}", pins.path().display());
    }
    Ok(())
}

/// `1m05s`-style rendering of a whole number of seconds.
pub fn format_secs(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_render_compactly() {
        assert_eq!(format_secs(Duration::from_secs(7)), "7s");
        assert_eq!(format_secs(Duration::from_secs(65)), "1m05s");
        assert_eq!(format_secs(Duration::from_secs(3725)), "1h02m05s");
    }
}
