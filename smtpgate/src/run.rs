//! `smtpgate run`: attach the gate, watch for logins and keep the grant map
//! tidy until told to stop. Stopping leaves the gate and every grant in place.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::{programs::XdpMode, Ebpf};
use smtpgate_common::{
    GateConfig, ALLOWLIST_MAP, CONFIG_MAP, COUNTERS_MAP, FLAG_DEST_FILTER, FLAG_MONITOR, FLAG_RESET,
    GATED_DESTS_MAP, GRANTS_MAP, GRANT_FILTER_MAP, PORT_WORDS,
};
use tokio::{
    io::unix::{AsyncFd, AsyncFdReadyMutGuard},
    signal::unix::{signal, SignalKind},
};

use crate::{
    allowlist::Allowlist,
    attach::{self, Attached},
    cli::{Action, Mode, RunArgs, XdpModeArg},
    maps::{Config, Counters, GatedDests, Grants},
    metrics::Metrics,
    pins::{Hook, PinDir},
    settings::Settings,
    watch::{StateStore, Watch},
};

type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Share of the grant map's capacity above which each sweep warns.
const CAPACITY_WARNING: f64 = 0.9;
/// How often read positions are saved.
const STATE_FLUSH: Duration = Duration::from_secs(1);

pub fn run(pins: &PinDir, args: RunArgs, verbose: u8) -> Result<()> {
    let check_only = args.check_config;
    let settings = Settings::resolve(args)?;
    for iface in &settings.ifaces {
        attach::require_interface(iface)?;
    }
    if check_only {
        println!("configuration is valid");
        println!("{settings:#?}");
        return Ok(());
    }
    pins.prepare()?;
    let state = Arc::new(StateStore::open(&settings.watch.state_dir)?);
    let kernel_log_level = if verbose > 0 { attach::KernelLogLevel::Debug } else { attach::KernelLogLevel::Info };
    let mut ebpf = attach::load(pins, settings.max_grants, kernel_log_level)?;

    // The settings go in before any attachment so the program never runs
    // with an empty port set.
    GatedDests::new(take_map(&mut ebpf, GATED_DESTS_MAP)?)?.sync(&settings.dests)?;
    Allowlist::new(take_map(&mut ebpf, ALLOWLIST_MAP)?)?.sync_config(&settings.allowlist)?;
    Config::new(take_map(&mut ebpf, CONFIG_MAP)?)?.write(&gate_config(&settings))?;

    let metrics = Metrics::new(Counters::new(take_map(&mut ebpf, COUNTERS_MAP)?)?);
    // The filter is built from the grants already pinned before the program
    // is attached or swapped in: until then it would deny them all.
    let mut grants = Grants::new(take_map(&mut ebpf, GRANTS_MAP)?, Some(take_map(&mut ebpf, GRANT_FILTER_MAP)?))?;
    sweep_grants(&mut grants, &metrics);

    let xdp_mode = match settings.xdp_mode {
        XdpModeArg::Native => XdpMode::Driver,
        XdpModeArg::Skb => XdpMode::Skb,
    };
    for iface in &settings.ifaces {
        let how = match attach::attach(&mut ebpf, pins, iface, settings.hook, xdp_mode)? {
            Attached::New => "attached",
            Attached::Replaced => "took over the pinned attachment on",
        };
        let hook = match (settings.hook, settings.xdp_mode) {
            (Hook::Tc, _) => "tc ingress",
            (Hook::Xdp, XdpModeArg::Native) => "xdp native",
            (Hook::Xdp, XdpModeArg::Skb) => "xdp skb",
        };
        let mode = match settings.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (nothing is dropped)",
        };
        tracing::info!(ports = ?settings.ports, dests = ?settings.dests, "{how} {iface} ({hook}), mode {mode}");
    }

    if grants.capacity() != settings.max_grants {
        tracing::warn!(
            "the pinned grant map holds {} entries, not --max-grants {}; run `smtpgate detach` to resize it",
            grants.capacity(),
            settings.max_grants
        );
    }
    metrics.grant_capacity.set(i64::from(grants.capacity()));
    let grants = Arc::new(Mutex::new(grants));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        if let Some(addr) = settings.metrics_listen {
            tokio::spawn(metrics.clone().listen(addr).await?);
        }
        let watch = Arc::new(Watch::new(&settings.watch, grants.clone(), metrics.clone(), state.clone())?);
        watch.spawn_sources(&settings.watch)?;
        if !settings.watch.any_source() {
            tracing::info!("no login source configured: grants come only from `smtpgate allow`");
        }
        let result = serve(pins, ebpf, &grants, &metrics, &state, settings.sweep_interval).await;
        state.flush()?;
        result
    })
}

fn gate_config(settings: &Settings) -> GateConfig {
    let mut config = GateConfig { flags: 0, reserved: 0, ports: [0; PORT_WORDS] };
    for &port in &settings.ports {
        config.gate_port(port);
    }
    for (on, flag) in [
        (settings.mode == Mode::Monitor, FLAG_MONITOR),
        (settings.action == Action::Reset, FLAG_RESET),
        (!settings.dests.is_empty(), FLAG_DEST_FILTER),
    ] {
        if on {
            config.flags |= flag;
        }
    }
    config
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).with_context(|| format!("map {name} missing from the BPF object"))
}

async fn serve(
    pins: &PinDir,
    mut ebpf: Ebpf,
    grants: &Mutex<Grants>,
    metrics: &Metrics,
    state: &StateStore,
    sweep_every: Duration,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        // SAFETY: the logger owns its ring buffer's fd and keeps it open, and
        // unchanged, for as long as it lives inside the AsyncFd.
        Ok(logger) => Some(unsafe { AsyncFd::register(logger) }.map_err(|e| e.into_parts().1)?),
        Err(e) => {
            tracing::warn!("kernel log unavailable: {e}");
            None
        }
    };
    let mut sweep = tokio::time::interval(sweep_every);
    let mut flush = tokio::time::interval(STATE_FLUSH);
    tracing::info!("gate running; grants are kept in {}", pins.path().display());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sweep.tick() => {
                if pins.require_gate().is_err() {
                    tracing::warn!("the gate was detached under {}; exiting", pins.path().display());
                    return Ok(());
                }
                sweep_grants(&mut grants.lock().expect("grant map lock"), metrics);
            }
            _ = flush.tick() => {
                if let Err(e) = state.flush() {
                    tracing::warn!("saving read positions: {e:#}");
                }
            }
            guard = readable(&mut kernel_log) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    tracing::info!("stopping; the gate stays attached and grants stay in place");
    Ok(())
}

/// Waits until the kernel log ring buffer has records; forever if there is none.
async fn readable(fd: &mut Option<AsyncFd<KernelLogger>>) -> std::io::Result<AsyncFdReadyMutGuard<'_, KernelLogger>> {
    match fd {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn sweep_grants(grants: &mut Grants, metrics: &Metrics) {
    let sweep = grants.sweep();
    metrics.record_sweep(sweep.live, sweep.removed);
    if sweep.removed > 0 {
        tracing::debug!(removed = sweep.removed, live = sweep.live, "removed expired grants");
    }
    let capacity = grants.capacity() as f64;
    if sweep.live as f64 >= capacity * CAPACITY_WARNING {
        tracing::warn!(
            live = sweep.live,
            capacity = grants.capacity(),
            "the grant map is nearly full; the least recently used grants are being evicted (raise --max-grants)"
        );
    }
}
