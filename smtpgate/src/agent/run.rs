//! `smtpgate run`: attach the gate, watch for logins and keep the grant map
//! tidy until told to stop. Stopping leaves the gate and every grant in place.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::Ebpf;
use tokio::{
    io::unix::{AsyncFd, AsyncFdReadyMutGuard},
    signal::unix::{signal, SignalKind},
};

use crate::{
    agent::{
        interfaces::Interfaces,
        metrics::Metrics,
        policy, privileges,
        settings::Settings,
        sink::KernelSink,
        stream::{
            self,
            publish::Publisher,
            subscribe::{self, Subscriber},
        },
        sweep,
        throttle::Throttle,
        watch::{socket, StateStore, Watch},
    },
    gate::{
        attach::{self, Attached},
        gate_maps::GateMaps,
        maps::Grants,
        pins::PinDir,
        replay::Replay,
        upgrade,
    },
};

type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// How often read positions are saved.
const STATE_FLUSH: Duration = Duration::from_secs(1);
/// How often the pins are checked: a gate whose pins were removed is gone
/// (a link lives as long as its pin), so the agent must say so at once.
/// Each check is a few `stat` calls.
const PIN_CHECK: Duration = Duration::from_secs(1);

/// Runs the agent on `settings`, resolved and checked beforehand.
pub fn run(pins: &PinDir, settings: Settings) -> Result<()> {
    pins.prepare(settings.pin_group)?;
    let state = Arc::new(StateStore::open(&settings.watch.state_dir)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // A broker that refuses the credentials stops the start before the gate
    // changes; one that cannot be reached is retried while the gate runs.
    let subscription = match &settings.subscribe {
        Some(stream) => {
            let client = stream::link::client(stream)?;
            let first = runtime.block_on(stream::link::first_connection(
                &client,
                stream,
                subscribe::RESPONSE_TIMEOUT,
            ))?;
            Some((stream.clone(), client, first))
        }
        None => None,
    };
    let mut ebpf = attach::load(pins, settings.max_grants, settings.kernel_log_level)?;

    // The settings go in before any attachment so the program never runs
    // with an empty port set.
    let GateMaps {
        mut grants,
        cooldowns,
        mut allowlist,
        mut dests,
        counters,
        ..
    } = GateMaps::take(&mut ebpf, pins, &settings.gate_config())?;
    dests.sync(&settings.dests)?;
    allowlist.sync_config(&settings.allowlist)?;

    let metrics = Metrics::new(Some(counters), settings.subscribe.is_some());
    // An older layout's grants go in before this program takes over.
    let carried = upgrade::carry_over(pins, &mut grants, settings.grants.default.syn_budget)?;
    // The filter is built from the grants already pinned before the program
    // is attached or swapped in: until then it would deny them all.
    sweep::at_start(&mut grants, &metrics)?;
    let scanner = Grants::open_pinned(pins)?;

    for iface in &settings.ifaces {
        let how = match attach::attach(&mut ebpf, pins, iface, settings.hook, settings.xdp_mode)? {
            Attached::New => "attached",
            Attached::Replaced => "took over the pinned attachment on",
        };
        let hook = settings.hook.describe(settings.xdp_mode);
        let mode = settings.mode.describe();
        tracing::info!(ports = ?settings.ports, dests = ?settings.dests, "{how} {iface} ({hook}), mode {mode}");
    }
    if carried > 0 {
        // Grants the older side made while this one started; then its maps go.
        upgrade::carry_over(pins, &mut grants, settings.grants.default.syn_budget)?;
        tracing::info!("carried {carried} live grants over from an older smtpgate's pins");
    }
    upgrade::retire(pins)?;
    replay_refused_syns(&mut ebpf, pins, &mut grants, &metrics)?;

    if grants.capacity() != settings.max_grants {
        tracing::warn!(
            "the pinned grant map holds {} entries, not --max-grants {}; run `smtpgate detach` to resize it",
            grants.capacity(),
            settings.max_grants
        );
    }
    metrics.grant_capacity.set(i64::from(grants.capacity()));
    let grants = Arc::new(Mutex::new(grants));
    runtime.block_on(async {
        // Everything that needs more than the service keeps comes first:
        // the sockets (a group to chown to, a low port) and the kernel log.
        let metrics_server = match settings.metrics_listen {
            Some(addr) => Some(metrics.clone().listen(addr).await?),
            None => None,
        };
        let login_socket = socket::bind_configured(&settings.watch)?;
        let policy_listener = match &settings.policy {
            Some(policy) => Some(policy::listen::Listener::bind(&policy.listen).await?),
            None => None,
        };
        let kernel_log = open_kernel_log(&mut ebpf)?;
        let interfaces =
            Interfaces::follow(ebpf, &settings.ifaces, settings.hook, settings.xdp_mode)?;
        privileges::drop_to_service()?;

        if let Some(server) = metrics_server {
            tokio::spawn(server);
        }
        let cooldowns = Arc::new(Mutex::new(cooldowns));
        let sink = Arc::new(KernelSink {
            grants: grants.clone(),
            cooldowns: cooldowns.clone(),
            metrics: metrics.clone(),
            full_map_warnings: Mutex::new(Throttle::new(Duration::from_secs(60))),
        });
        let watch = Arc::new(Watch::new(
            &settings.watch,
            &settings.grants,
            sink,
            metrics.clone(),
            state.clone(),
        ));
        watch.spawn_sources(&settings.watch, login_socket)?;
        let mut revokes_publisher = None;
        if let Some((stream, client, first)) = subscription {
            if settings.policy.is_some() {
                let publisher = Arc::new(Publisher::new(
                    stream.for_revokes(),
                    settings.grants.ipv6_prefix,
                    settings.grants.longest_ttl(),
                    metrics.stream.clone(),
                    state.clone(),
                ));
                tokio::spawn(publisher.clone().run(client.clone(), None));
                revokes_publisher = Some(publisher);
            }
            let subscriber = Subscriber::new(
                stream,
                client,
                (grants.clone(), cooldowns.clone()),
                settings.grants.clone(),
                state.clone(),
                metrics.stream.clone(),
            );
            tokio::spawn(subscriber.run(first));
        } else if !settings.watch.any_source() {
            tracing::info!("no login source configured: grants come only from `smtpgate allow`");
        }
        if let (Some(policy), Some(listener)) = (&settings.policy, policy_listener) {
            let gate = policy::Gate {
                grants: grants.clone(),
                cooldowns,
                metrics: metrics.clone(),
                publisher: revokes_publisher,
            };
            policy::spawn(listener, policy, &settings.grants, gate);
        }
        let replay_window = grants
            .lock()
            .expect("grant map lock")
            .replay()
            .map(|replay| replay.window());
        if let Some(window) = replay_window {
            tokio::spawn(sweep::refused_syns(grants.clone(), metrics.clone(), window));
        }
        let sweeper = tokio::spawn(sweep::forever(
            scanner,
            grants,
            metrics.clone(),
            settings.sweep_interval,
        ));
        let result = serve(pins, interfaces, kernel_log, sweeper, &state).await;
        state.flush()?;
        result
    })
}

/// Has `grants` replay the SYN each source was refused just before its
/// grant, where the configuration asks for it: pins the program for that
/// (every writer of grants runs it) and opens what replays need while the
/// agent still holds every capability. Replays that cannot be set up are
/// no reason to stop: the clients still retransmit.
fn replay_refused_syns(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    grants: &mut Grants,
    metrics: &Metrics,
) -> Result<()> {
    attach::pin_program(ebpf, pins)?;
    match Replay::open(pins) {
        Ok(Some(replay)) => {
            tracing::info!(
                "SYNs refused just before a grant are replayed ({})",
                replay.path().name()
            );
            let metrics = metrics.clone();
            grants.replay_with(replay.reporting(move |path| metrics.record_replay(path)));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("SYNs refused just before a grant are not replayed: {e:#}"),
    }
    Ok(())
}

/// The kernel program's log records, if the program has a log.
fn open_kernel_log(ebpf: &mut Ebpf) -> Result<Option<AsyncFd<KernelLogger>>> {
    match aya_log::EbpfLogger::init(ebpf) {
        // SAFETY: the logger owns its ring buffer's fd and keeps it open, and
        // unchanged, for as long as it lives inside the AsyncFd.
        Ok(logger) => Ok(Some(
            unsafe { AsyncFd::register(logger) }.map_err(|e| e.into_parts().1)?,
        )),
        Err(e) => {
            tracing::warn!("kernel log unavailable: {e}");
            Ok(None)
        }
    }
}

/// Runs until a signal, until the gate is detached from under the agent
/// (checked every [`PIN_CHECK`]), or until the sweeper fails.
async fn serve(
    pins: &PinDir,
    mut interfaces: Interfaces,
    mut kernel_log: Option<AsyncFd<KernelLogger>>,
    mut sweeper: tokio::task::JoinHandle<anyhow::Error>,
    state: &StateStore,
) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut check = tokio::time::interval(PIN_CHECK);
    let mut flush = tokio::time::interval(STATE_FLUSH);
    let mut saving = Saving::default();
    tracing::info!("gate running; grants are kept in {}", pins.path().display());
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = check.tick() => {
                if let Some(removed) = pins.removed_map() {
                    // Without its pins the gate is gone or going (a link
                    // lives as long as its pin), so the agent must not go
                    // on as if it guarded anything.
                    sweeper.abort();
                    bail!(
                        "the gate's pins under {} were removed ({} is gone); the relay may be open: \
                         start `smtpgate run` again to restore the gate",
                        pins.path().display(),
                        removed.display()
                    );
                }
            }
            ended = &mut sweeper => {
                return Err(ended.unwrap_or_else(|e| anyhow::anyhow!("the grant sweeper stopped: {e}")));
            }
            _ = flush.tick() => saving.report(state.flush()),
            attached = interfaces.keep_attached(pins) => {
                if let Err(e) = attached {
                    tracing::error!("{e:#}");
                }
            }
            guard = readable(&mut kernel_log) => {
                let mut guard = guard?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    }
    sweeper.abort();
    tracing::info!("stopping; the gate stays attached and grants stay in place");
    Ok(())
}

/// Whether read positions are being saved, so that a state directory that
/// turns unwritable (a full disk, a read-only remount) is reported once,
/// and its recovery once, not at every flush.
#[derive(Default)]
struct Saving {
    failing: bool,
}

impl Saving {
    fn report(&mut self, flushed: Result<()>) {
        match flushed {
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!("cannot save read positions: {e:#}; grants go on, and saving resumes when it can");
            }
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("saving read positions again");
            }
            _ => {}
        }
    }
}

/// Waits until the kernel log ring buffer has records; forever if there is none.
async fn readable(
    fd: &mut Option<AsyncFd<KernelLogger>>,
) -> std::io::Result<AsyncFdReadyMutGuard<'_, KernelLogger>> {
    match fd {
        Some(fd) => fd.readable_mut().await,
        None => std::future::pending().await,
    }
}
