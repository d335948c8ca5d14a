//! The Prometheus endpoint (`--metrics-listen`): the kernel's counters, read
//! from the counters map at each scrape (where there is a gate), plus the
//! agent's own figures, and those of its stream where it has one.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
    },
    registry::Registry,
};
use smtpgate_common::Counter as KernelCounter;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    agent::accept::AcceptErrors,
    gate::{maps::Counters, replay::ReplayPath},
};

/// Scrapes answered at once.
const MAX_SCRAPES: usize = 16;

/// Labels of `smtpgate_grants_issued_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// Where the login came from: log, journal, stdin, socket.
    pub source: String,
    /// pop3 or imap.
    pub service: String,
}

/// Labels of `smtpgate_policy_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The answer: dunno or defer_if_permit.
    pub action: &'static str,
}

/// Labels of `smtpgate_quota_exceeded_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// user or address.
    pub quota: &'static str,
}

/// Labels of `smtpgate_syns_replayed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabels {
    /// live_frame or raw_socket.
    pub path: &'static str,
}

/// Labels of `smtpgate_stream_events_applied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// grant, revoke, revoke-user; or malformed for an entry not applied.
    pub kind: String,
}

/// The figures of the agent's Redis stream; clones share the same values.
#[derive(Clone, Default)]
pub struct StreamMetrics {
    /// 1 while the broker answers, 0 while it does not.
    pub connected: Gauge,
    /// For the entry applied last: how long after it was added (by the
    /// broker's clock) it was applied. Small while the relay keeps up; a
    /// relay replaying a backlog shows how far behind it still is.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub published: Counter,
    pub applied: Family<EventLabels, Counter>,
    /// Events a POP host dropped, oldest first, from its full buffer while
    /// the broker could not be reached.
    pub dropped: Counter,
}

impl StreamMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "smtpgate_stream_connected",
            "Whether the Redis stream's broker answers (1) or not (0)",
            self.connected.clone(),
        );
        registry.register(
            "smtpgate_stream_lag_seconds",
            "How long after it was added to the stream the last applied entry was applied",
            self.lag_seconds.clone(),
        );
        registry.register(
            "smtpgate_stream_events_published",
            "Events this agent added to the stream",
            self.published.clone(),
        );
        registry.register(
            "smtpgate_stream_events_applied",
            "Stream entries this agent applied to the gate, by kind",
            self.applied.clone(),
        );
        registry.register(
            "smtpgate_stream_events_dropped",
            "Events dropped unpublished, oldest first, from a full buffer while the broker was unreachable",
            self.dropped.clone(),
        );
    }

    pub fn record_applied(&self, kind: &str) {
        self.applied
            .get_or_create(&EventLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}

/// The agent's metrics; clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub grants_issued: Family<GrantLabels, Counter>,
    pub live_grants: Gauge,
    pub grant_capacity: Gauge,
    pub expired_removed: Counter,
    pub last_sweep: Gauge,
    pub cooldown_refusals: Counter,
    pub grants_evicted: Counter,
    pub syns_replayed: Family<ReplayLabels, Counter>,
    pub recorded_syns_expired: Counter,
    pub policy_requests: Family<PolicyLabels, Counter>,
    pub policy_malformed: Counter,
    pub quota_exceeded: Family<QuotaLabels, Counter>,
    pub stream: StreamMetrics,
}

impl Metrics {
    /// The metrics of an agent with the kernel's `counters`, where it has a
    /// gate, and with a stream's figures, where it `streams`.
    pub fn new(counters: Option<Counters>, streams: bool) -> Self {
        let mut registry = Registry::default();
        let grants_issued = Family::<GrantLabels, Counter>::default();
        registry.register(
            "smtpgate_grants_issued",
            "Grants written by this agent, by login source and service",
            grants_issued.clone(),
        );
        let live_grants = Gauge::default();
        registry.register(
            "smtpgate_grants_live",
            "Unexpired grants at the last sweep",
            live_grants.clone(),
        );
        let grant_capacity = Gauge::default();
        registry.register(
            "smtpgate_grant_capacity",
            "Capacity of the grant map",
            grant_capacity.clone(),
        );
        let expired_removed = Counter::default();
        registry.register(
            "smtpgate_expired_grants_removed",
            "Expired grants removed by sweeps",
            expired_removed.clone(),
        );
        let last_sweep = Gauge::default();
        registry.register(
            "smtpgate_last_sweep_timestamp_seconds",
            "When the agent last swept the grant map (Unix time); a stale value means a stuck agent",
            last_sweep.clone(),
        );
        let cooldown_refusals = Counter::default();
        registry.register(
            "smtpgate_logins_refused_in_cooldown",
            "Logins that granted nothing because their user went over a quota",
            cooldown_refusals.clone(),
        );
        let policy_requests = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "smtpgate_policy_requests",
            "Requests the Postfix policy service answered, by answer",
            policy_requests.clone(),
        );
        let policy_malformed = Counter::default();
        registry.register(
            "smtpgate_policy_malformed",
            "Policy requests that broke the protocol's format (answered DUNNO)",
            policy_malformed.clone(),
        );
        let quota_exceeded = Family::<QuotaLabels, Counter>::default();
        registry.register(
            "smtpgate_quota_exceeded",
            "Times a user (grants revoked) or an address (recipients deferred) went over its recipient quota",
            quota_exceeded.clone(),
        );
        let grants_evicted = Counter::default();
        registry.register(
            "smtpgate_grants_evicted",
            "Live grants the full grant map evicted for fresh ones (at least this many)",
            grants_evicted.clone(),
        );
        let syns_replayed = Family::<ReplayLabels, Counter>::default();
        registry.register(
            "smtpgate_syns_replayed",
            "Refused SYNs handed back to the gate once their source's grant was written, by how",
            syns_replayed.clone(),
        );
        let recorded_syns_expired = Counter::default();
        registry.register(
            "smtpgate_recorded_syns_expired",
            "Refused SYNs recorded for replay whose window passed unreplayed (their slots freed)",
            recorded_syns_expired.clone(),
        );
        let started: Gauge = Gauge::default();
        started.set(unix_now() as i64);
        registry.register(
            "smtpgate_agent_start_time_seconds",
            "When the agent started (Unix time)",
            started,
        );
        if let Some(counters) = counters {
            registry.register_collector(Box::new(KernelCounters(counters)));
        }
        let stream = StreamMetrics::default();
        if streams {
            stream.register(&mut registry);
        }
        Self {
            registry: Arc::new(registry),
            grants_issued,
            live_grants,
            grant_capacity,
            expired_removed,
            last_sweep,
            cooldown_refusals,
            grants_evicted,
            syns_replayed,
            recorded_syns_expired,
            policy_requests,
            policy_malformed,
            quota_exceeded,
            stream,
        }
    }

    pub fn record_policy_answer(&self, action: &'static str) {
        self.policy_requests
            .get_or_create(&PolicyLabels { action })
            .inc();
    }

    pub fn record_policy_malformed(&self) {
        self.policy_malformed.inc();
    }

    pub fn record_quota_exceeded(&self, quota: &'static str) {
        self.quota_exceeded
            .get_or_create(&QuotaLabels { quota })
            .inc();
    }

    pub fn record_replay(&self, path: ReplayPath) {
        self.syns_replayed
            .get_or_create(&ReplayLabels { path: path.name() })
            .inc();
    }

    pub fn record_cooldown_refusal(&self) {
        self.cooldown_refusals.inc();
    }

    pub fn record_sweep(&self, live: usize, removed: usize) {
        self.live_grants.set(live as i64);
        self.expired_removed.inc_by(removed as u64);
        self.last_sweep.set(unix_now() as i64);
    }

    pub fn record_grant(&self, source: &str, service: &str) {
        self.grants_issued
            .get_or_create(&GrantLabels {
                source: source.to_string(),
                service: service.to_string(),
            })
            .inc();
    }

    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Binds the endpoint (so a taken port fails the agent's start) and
    /// returns the task that serves `GET /metrics` on it.
    pub async fn listen(self, addr: SocketAddr) -> Result<impl std::future::Future<Output = ()>> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for metrics"))?;
        tracing::info!("metrics on http://{addr}/metrics");
        Ok(self.serve(listener))
    }

    /// Serves scrapes, a few at a time: a scraper asks once every few
    /// seconds, so a flood of idle connections holds at most
    /// [`MAX_SCRAPES`] descriptors and the rest wait in the backlog.
    async fn serve(self, listener: TcpListener) {
        let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
        let mut errors = AcceptErrors::new("metrics endpoint");
        loop {
            let slot = scrapes
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    errors.failed(e).await;
                    continue;
                }
            };
            let metrics = self.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    tokio::time::timeout(Duration::from_secs(10), metrics.answer(stream)).await
                {
                    tracing::debug!("metrics request timed out: {e}");
                }
                drop(slot);
            });
        }
    }

    /// Answers one HTTP/1.x request and closes the connection.
    async fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
        let (status, body) = match line.split(|&b| b == b' ').collect::<Vec<_>>()[..] {
            [b"GET", b"/metrics", ..] => ("200 OK", self.render()),
            _ => ("404 Not Found", "try /metrics\n".to_string()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One counter's value and its label, within a metric family.
type Member = (u64, Option<(&'static str, &'static str)>);

/// The kernel counters, read from the pinned map at each scrape.
struct KernelCounters(Counters);

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCounters")
    }
}

/// Metric name, help and label of each kernel counter.
fn describe(
    counter: KernelCounter,
) -> (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
) {
    use KernelCounter::*;
    const VERDICTS: &str = "Gated SYNs and doubtful frames by verdict";
    const UNJUDGED: &str = "Frames passed without a verdict, by reason";
    let verdict = |name| ("smtpgate_syn_verdicts", VERDICTS, Some(("verdict", name)));
    match counter {
        Frames => ("smtpgate_frames", "Frames the kernel program saw", None),
        GatedSyns => ("smtpgate_gated_syns", "TCP SYNs to a gated destination", None),
        GatedDoubtful => (
            "smtpgate_gated_doubtful",
            "Frames that could be SYNs to a gated destination but could not be read in full, judged like one",
            None,
        ),
        AllowedGrant | AllowedAllowlist | DroppedNoGrant | DroppedExpired | RefusedVlanDepth | RefusedExtDepth
        | RefusedFragment | RefusedNonlinear | MonitorWouldDrop | DroppedOverBudget => verdict(counter.name()),
        ResetsSent => ("smtpgate_resets_sent", "Refused SYNs answered with a TCP RST", None),
        PassedFragment => ("smtpgate_frames_unjudged", UNJUDGED, Some(("reason", "later_fragment"))),
        UnparsedTruncated => ("smtpgate_frames_unjudged", UNJUDGED, Some(("reason", "truncated"))),
        UnparsedMalformed => ("smtpgate_frames_unjudged", UNJUDGED, Some(("reason", "malformed"))),
        SynsRecorded => ("smtpgate_syns_recorded", "Refused SYNs recorded for replay once their source's grant lands", None),
        ReplaySlotBusy => ("smtpgate_syns_unrecorded_slot_busy", "Refused SYNs not recorded for replay: their slot held another source's SYN, refused within the window", None),
    }
}

impl Collector for KernelCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Ok(totals) = self.0.totals() else {
            tracing::warn!("could not read the kernel counters for a scrape");
            return Ok(());
        };
        // Group counters sharing a metric name, so that each family is
        // described once: new counters join the end of `Counter::ALL`,
        // away from the rest of their family.
        let mut families: Vec<(&str, &str, Vec<Member>)> = Vec::new();
        for (counter, value) in totals {
            let (name, help, label) = describe(counter);
            match families.iter_mut().find(|(family, _, _)| *family == name) {
                Some((_, _, members)) => members.push((value, label)),
                None => families.push((name, help, vec![(value, label)])),
            }
        }
        for (name, help, members) in families {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            match members.as_slice() {
                [(value, None)] => ConstCounter::new(*value).encode(metric)?,
                labelled => {
                    for (value, label) in labelled {
                        let label = [label.unwrap_or(("kind", "other"))];
                        ConstCounter::new(*value).encode(metric.encode_family(&label)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
