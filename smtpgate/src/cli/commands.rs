//! The one-shot commands. They work on the pinned maps directly, so they act
//! on the live gate whether or not `smtpgate run` is running.

use std::{net::IpAddr, time::Duration, time::SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::json;
use smtpgate_common::{SynBudget, COOLDOWNS_MAP, COUNTERS_MAP};

use crate::{
    agent::{
        pop_host, privileges, run,
        stream::{entry::Event, publish},
    },
    cli::{
        args::{AllowlistAction, Cli, Command, PublishArgs, RunArgs, StreamArgs, WatchArgs},
        check_log, generate, notify,
        settings::{self, ConfigFile},
    },
    gate::{
        addr,
        allowlist::{self, Allowlist, Origin},
        attach, clock,
        maps::{self, Counters, Grants, LiveGrant, Terms},
        owners::{Cooldowns, Owner, Source},
        pins::PinDir,
        replay::Replay,
    },
};

pub fn dispatch(cli: Cli) -> Result<()> {
    // These touch no BPF object: mail users, administrators and the
    // packaging run them without root.
    match cli.command {
        Command::Notify {
            ip,
            service,
            user,
            socket,
        } => return notify::notify(&socket, &ip, &service, user.as_deref()),
        Command::CheckLog {
            file,
            parser,
            grants_only,
        } => return check_log::check_log(&file, &parser.build()?, grants_only),
        // A POP host has no gate; publishing needs only the broker.
        Command::Watch(args) => return watch(*args),
        Command::Allow {
            ip,
            ttl,
            user,
            publish:
                PublishArgs {
                    publish: Some(url),
                    stream,
                },
        } => {
            let ip = addr::parse(&ip)?;
            let event = Event::Grant {
                ip,
                prefix: full_prefix(ip),
                ttl,
                user,
                service: "-".to_string(),
            };
            return publish_event(url, stream, event);
        }
        Command::Revoke {
            ip,
            user,
            publish:
                PublishArgs {
                    publish: Some(url),
                    stream,
                },
        } => {
            let event = match (ip, user) {
                (_, Some(user)) => Event::RevokeUser {
                    user,
                    cooldown: None,
                },
                (ip, None) => {
                    let ip = addr::parse(&ip.context("give an address or --user NAME")?)?;
                    Event::Revoke {
                        ip,
                        prefix: full_prefix(ip),
                    }
                }
            };
            return publish_event(url, stream, event);
        }
        Command::Pardon {
            user,
            publish:
                PublishArgs {
                    publish: Some(url),
                    stream,
                },
        } => return publish_event(url, stream, Event::Pardon { user }),
        Command::Generate { what } => return generate::run(what),
        _ => {}
    }
    require_bpf_capable()?;
    let pins = PinDir::new(cli.bpffs_dir);
    match cli.command {
        Command::Notify { .. }
        | Command::CheckLog { .. }
        | Command::Watch(_)
        | Command::Generate { .. } => {
            unreachable!("handled above")
        }
        Command::Run(args) => start(&pins, *args, cli.verbose),
        Command::Allow {
            ip,
            ttl,
            user,
            publish,
        } => {
            no_stream_options(publish.stream)?;
            allow(&pins, &ip, ttl, user.as_deref())
        }
        Command::Revoke { ip, user, publish } => {
            no_stream_options(publish.stream)?;
            revoke(&pins, ip.as_deref(), user.as_deref())
        }
        Command::Pardon { user, publish } => {
            no_stream_options(publish.stream)?;
            pardon(&pins, &user)
        }
        Command::List { json } => list(&pins, json),
        Command::Stats {
            json,
            interval,
            no_rates,
        } => stats(&pins, json, (!no_rates).then_some(interval)),
        Command::Allowlist { action } => allowlist(&pins, action),
        Command::Detach { iface } => detach(&pins, iface.as_deref()),
    }
}

/// `run`: resolves and checks the settings, then runs the agent on them,
/// or with `--check-config` prints them instead.
fn start(pins: &PinDir, args: RunArgs, verbose: u8) -> Result<()> {
    let check_only = args.check_config;
    let settings = settings::resolve(args, verbose)?;
    for iface in &settings.ifaces {
        attach::require_interface(iface)?;
    }
    if check_only {
        println!("configuration is valid");
        println!("{settings:#?}");
        return Ok(());
    }
    run::run(pins, settings)
}

/// `watch`: resolves and checks the settings, then publishes the logins
/// they name, or with `--check-config` prints the settings instead.
fn watch(args: WatchArgs) -> Result<()> {
    let check_only = args.check_config;
    let settings = settings::resolve_watch(args)?;
    if check_only {
        println!("configuration is valid");
        println!("{settings:#?}");
        return Ok(());
    }
    pop_host::watch(settings)
}

/// `allow` or `revoke` with `--publish`: adds `event` to the stream at
/// `url`, for every relay, and touches no local gate.
fn publish_event(url: String, stream: StreamArgs, event: Event) -> Result<()> {
    let settings = settings::stream_settings(Some(url), stream, &ConfigFile::default())?
        .expect("a URL was given");
    let described = match &event {
        Event::Grant { ip, ttl, user, .. } => {
            let whose = user
                .as_ref()
                .map(|user| format!(" (user {user})"))
                .unwrap_or_default();
            format!("the grant of {ip} for {}{whose}", clock::format_secs(*ttl))
        }
        Event::Revoke { ip, .. } => format!("the revoke of {ip}"),
        Event::RevokeUser { user, .. } => format!("the revoke of every grant of {user}"),
        Event::Pardon { user } => format!("the pardon of {user}"),
    };
    let id = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(publish::publish_once(&settings, event))?;
    println!("published {described} to {} as entry {id}", settings.key);
    Ok(())
}

/// Fails if stream options came without `--publish`, which they serve.
fn no_stream_options(stream: StreamArgs) -> Result<()> {
    settings::stream_settings(None, stream, &ConfigFile::default()).map(drop)
}

/// The prefix of `ip` alone; each relay's gate covers its own IPv6 prefix.
fn full_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Root, or a dedicated user with CAP_BPF (see `privileges`). Root
/// without the capabilities goes on, to the errors that name the one
/// missing.
fn require_bpf_capable() -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 && !privileges::bpf_capable()? {
        bail!(
            "smtpgate must run as root, or as a user with CAP_BPF: it loads BPF programs and manages pinned BPF maps"
        );
    }
    Ok(())
}

fn open_grants(pins: &PinDir) -> Result<Grants> {
    pins.require_gate()?;
    Grants::open_pinned(pins)
}

/// Grants `ip` for `ttl`, recorded as earned by `user` (or nobody). An
/// operator's grant carries no SYN budget.
fn allow(pins: &PinDir, ip: &str, ttl: Duration, user: Option<&str>) -> Result<()> {
    let ip = addr::parse(ip)?;
    let owner = Owner::now(ip, user, "-", Source::Cli);
    let terms = Terms {
        ttl,
        budget: SynBudget::UNLIMITED,
    };
    let mut grants = open_grants(pins)?;
    // The SYN a customer was refused just before goes through too.
    match Replay::open(pins) {
        Ok(Some(replay)) => grants.replay_with(replay),
        Ok(None) => {}
        Err(e) => tracing::warn!("the SYN refused before this grant is not replayed: {e:#}"),
    }
    let expiry = grants.grant_for(ip, terms, &owner)?;
    let whose = user
        .map(|user| format!(" (user {user})"))
        .unwrap_or_default();
    println!(
        "allowed {ip} for {}{whose}",
        clock::format_secs(clock::remaining(expiry))
    );
    Ok(())
}

/// Revokes the grant covering `ip`, or every grant `user` earned.
fn revoke(pins: &PinDir, ip: Option<&str>, user: Option<&str>) -> Result<()> {
    let mut grants = open_grants(pins)?;
    if let Some(user) = user {
        let revoked = grants.revoke_user(user)?;
        let list: Vec<String> = revoked.iter().map(IpAddr::to_string).collect();
        match list.is_empty() {
            true => println!("{user} held no grant"),
            false => println!(
                "revoked {} grants of {user}: {}",
                list.len(),
                list.join(" ")
            ),
        }
        return Ok(());
    }
    let ip = addr::parse(ip.context("give an address or --user NAME")?)?;
    if grants.revoke(ip)? {
        println!("revoked {ip}");
    } else {
        println!("{ip} had no grant");
    }
    Ok(())
}

/// Ends `user`'s quota cooldown.
fn pardon(pins: &PinDir, user: &str) -> Result<()> {
    pins.require_gate()?;
    let mut cooldowns = Cooldowns::new(maps::open_pinned(&pins.map(COOLDOWNS_MAP))?)?;
    if cooldowns.pardon(user)? {
        println!("pardoned {user}: their next login grants again");
    } else {
        println!("{user} was in no cooldown");
    }
    Ok(())
}

fn list(pins: &PinDir, as_json: bool) -> Result<()> {
    let grants = open_grants(pins)?.live()?;
    if as_json {
        let rows: Vec<_> = grants.iter().map(grant_json).collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<40} {:<22} {:>9}  {:<24} {:<8} {:<7} GRANTED",
        "ADDRESS", "COVERS", "LEFT", "USER", "SERVICE", "SOURCE"
    );
    for grant in &grants {
        let owner = grant.owner.as_ref();
        println!(
            "{:<40} {:<22} {:>9}  {:<24} {:<8} {:<7} {}",
            grant.address().to_string(),
            grant.covers(),
            clock::format_secs(grant.remaining),
            owner.and_then(|o| o.user.as_deref()).unwrap_or("-"),
            owner.map_or("-", |o| o.service.as_str()),
            owner.and_then(|o| o.source).map_or("-", Source::as_str),
            owner.map_or("-".to_string(), |o| rfc3339(o.granted_at)),
        );
    }
    Ok(())
}

/// One grant as `list --json` gives it.
fn grant_json(grant: &LiveGrant) -> serde_json::Value {
    let owner = grant.owner.as_ref();
    json!({
        "address": grant.address().to_string(),
        "covers": grant.covers(),
        "seconds_left": grant.remaining.as_secs(),
        "user": owner.and_then(|o| o.user.clone()),
        "service": owner.map(|o| o.service.clone()),
        "source": owner.and_then(|o| o.source).map(Source::as_str),
        "granted_at": owner.map(|o| rfc3339(o.granted_at)),
    })
}

/// A wall-clock time as RFC 3339 in UTC, to the second.
fn rfc3339(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| "-".to_string())
}

fn stats(pins: &PinDir, as_json: bool, rate_interval: Option<Duration>) -> Result<()> {
    let grants = open_grants(pins)?;
    let counters = Counters::new(maps::open_pinned(&pins.map(COUNTERS_MAP))?)?;
    let first = counters.totals()?;
    let (totals, rates) = match rate_interval {
        Some(interval) => {
            std::thread::sleep(interval);
            let second = counters.totals()?;
            let secs = interval.as_secs_f64();
            let rates = second
                .iter()
                .zip(&first)
                .map(|((_, b), (_, a))| Some(b.saturating_sub(*a) as f64 / secs))
                .collect();
            (second, rates)
        }
        None => {
            let rates = vec![None; first.len()];
            (first, rates)
        }
    };
    print_stats(pins, &grants, &totals, &rates, as_json)
}

fn print_stats(
    pins: &PinDir,
    grants: &Grants,
    totals: &[(smtpgate_common::Counter, u64)],
    rates: &[Option<f64>],
    as_json: bool,
) -> Result<()> {
    let (live, capacity) = (grants.count_live()?, grants.capacity());
    let attachments = pins.attachments()?;
    if as_json {
        let counters: serde_json::Map<_, _> = totals
            .iter()
            .map(|(c, v)| (c.name().to_string(), json!(v)))
            .collect();
        let per_second: serde_json::Map<_, _> = totals
            .iter()
            .zip(rates)
            .filter_map(|((c, _), r)| r.map(|r| (c.name().to_string(), json!(r))))
            .collect();
        let attached: Vec<_> = attachments
            .iter()
            .map(|(hook, iface)| json!({ "iface": iface, "hook": hook.name() }))
            .collect();
        let doc = json!({
            "counters": counters,
            "rates_per_second": per_second,
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
    println!("{:<22} {:>14} {:>12}", "COUNTER", "TOTAL", "PER SECOND");
    for ((counter, value), rate) in totals.iter().zip(rates) {
        let rate = rate.map_or_else(|| "-".to_string(), |r| format!("{r:.1}"));
        println!("{:<22} {value:>14} {rate:>12}", counter.name());
    }
    Ok(())
}

fn allowlist(pins: &PinDir, action: AllowlistAction) -> Result<()> {
    pins.require_gate()?;
    let mut list = Allowlist::open_pinned(pins)?;
    match action {
        AllowlistAction::Add { prefixes } => {
            // Parse everything first: one bad prefix changes nothing.
            let nets = prefixes
                .iter()
                .map(|p| allowlist::parse_prefix(p))
                .collect::<Result<Vec<_>>>()?;
            for net in nets {
                list.add(net, Origin::Cli)?;
                println!("allowlisted {net}");
            }
        }
        AllowlistAction::Del { prefixes } => {
            let nets = prefixes
                .iter()
                .map(|p| allowlist::parse_prefix(p))
                .collect::<Result<Vec<_>>>()?;
            for net in nets {
                if list.remove(net)? {
                    println!("removed {net}");
                } else {
                    println!("{net} was not on the allowlist");
                }
            }
        }
        AllowlistAction::List { json: as_json } => {
            let entries = list.entries()?;
            if as_json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|(net, origin)| json!({ "prefix": net.to_string(), "origin": origin.name() }))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<44} ORIGIN", "PREFIX");
                for (net, origin) in entries {
                    println!("{:<44} {}", net.to_string(), origin.name());
                }
            }
        }
    }
    Ok(())
}

fn detach(pins: &PinDir, iface: Option<&str>) -> Result<()> {
    pins.require_gate()?;
    let attachments = pins.attachments()?;
    let targets: Vec<_> = match iface {
        Some(iface) => {
            let hits: Vec<_> = attachments
                .iter()
                .filter(|(_, i)| i == iface)
                .cloned()
                .collect();
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
        let pinned = pins.maps().into_iter().chain(pins.retired_maps());
        for map in pinned.chain([pins.program()]) {
            std::fs::remove_file(&map).ok();
        }
        std::fs::remove_dir(pins.path()).ok();
        println!(
            "removed the grant map, counters and pins under {}",
            pins.path().display()
        );
    }
    Ok(())
}
