//! `smtpgate watch`: a POP host's service. It watches logins exactly as
//! `run` does, with the same sources and parser, and publishes each grant
//! to the stream the relays read, instead of writing a kernel map: it
//! attaches nothing and needs no BPF.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use crate::agent::{
    metrics::Metrics,
    settings::PopSettings,
    stream::{link, publish::Publisher},
    watch::{socket, StateStore, Watch},
};

/// How often read positions are saved.
const STATE_FLUSH: Duration = Duration::from_secs(1);
/// How long a stopping agent waits for the broker to take what it holds.
const DRAIN: Duration = Duration::from_secs(5);
/// A reply to XADD may take this long at start.
const FIRST_REPLY: Duration = Duration::from_secs(10);

/// Runs the POP host's service on `settings` until SIGINT or SIGTERM.
pub fn watch(settings: PopSettings) -> Result<()> {
    let state = Arc::new(StateStore::open(&settings.watch.state_dir)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = link::client(&settings.publish)?;
        let first = link::first_connection(&client, &settings.publish, FIRST_REPLY).await?;
        let metrics = Metrics::new(None, true);
        if let Some(addr) = settings.metrics_listen {
            tokio::spawn(metrics.clone().listen(addr).await?);
        }
        let publisher = Arc::new(Publisher::new(
            settings.publish.clone(),
            settings.grants.ipv6_prefix,
            settings.grants.longest_ttl(),
            metrics.stream.clone(),
            state.clone(),
        ));
        tokio::spawn(publisher.clone().run(client, first));
        let watch = Arc::new(Watch::new(
            &settings.watch,
            &settings.grants,
            publisher.clone(),
            metrics,
            state.clone(),
        ));
        let login_socket = socket::bind_configured(&settings.watch)?;
        watch.spawn_sources(&settings.watch, login_socket)?;
        tracing::info!(
            stream = %settings.publish.key,
            "watching logins; publishing grants to Redis at {}",
            settings.publish.url
        );
        let result = serve(&state).await;
        let unsent = publisher.drain(DRAIN).await;
        if unsent > 0 {
            tracing::warn!(unsent, "stopping with grants the broker has not taken");
        }
        state.flush()?;
        result
    })
}

/// Saves read positions every [`STATE_FLUSH`] until a signal.
async fn serve(state: &StateStore) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut flush = tokio::time::interval(STATE_FLUSH);
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = flush.tick() => {
                if let Err(e) = state.flush() {
                    tracing::warn!("saving read positions: {e:#}");
                }
            }
        }
    }
    tracing::info!("stopping");
    Ok(())
}
