//! Publishing: a POP host's grants (and an operator's events) added to the
//! stream.
//!
//! A login is never held up by the broker. Its grant is numbered and put in
//! a bounded buffer, and a task of its own sends the buffer, in pipelined
//! batches, whenever the broker answers. While it does not, the buffer
//! holds the newest [`BUFFER`] events; older ones are dropped and counted,
//! since a newer grant of the same customer is worth more than an old one.
//! An event leaves the buffer only once the broker has taken it, so a
//! failure mid-batch sends some entries twice, which relays take as one.
//! A grant's lifetime counts from the entry's ID, given when it is sent:
//! the time it waited in the buffer is taken off it first, so waiting out
//! an outage never lengthens a grant.

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use redis::{aio::MultiplexedConnection, Client, Cmd};
use tokio::sync::Notify;

use super::{
    coalesce::Coalescer,
    entry::{Entry, EntryId, Event},
    link::{self, Link},
};
use crate::{
    agent::{
        metrics::StreamMetrics, settings::StreamSettings, sink::GrantSink, throttle::Throttle,
        watch::StateStore,
    },
    gate::{addr, maps::Terms, owners::Owner},
};

/// Events held while the broker cannot be reached: a day's logins of a
/// large POP host, a few tens of MiB.
const BUFFER: usize = 100_000;
/// Entries per pipelined round trip.
const BATCH: usize = 1000;
/// How long a reply may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Sequence numbers reserved on disk at a time.
const SEQ_BLOCK: u64 = 10_000;
/// Trimming keeps this much beyond the longest TTL: an entry is trimmed
/// only once no relay can still need it.
pub const TRIM_MARGIN: Duration = Duration::from_secs(60);
/// How often dropping events is warned about.
const DROP_WARNINGS: Duration = Duration::from_secs(10);

/// What the publisher holds between logins and the sending task.
struct Pending {
    /// Numbered events not yet taken by the broker, oldest first, with
    /// when each was queued.
    queue: VecDeque<(Entry, Instant)>,
    coalescer: Coalescer,
    next_seq: u64,
    reserved_seq: u64,
    drops: Throttle,
}

/// A POP host's way to the stream: the grant sink of `smtpgate watch`.
pub struct Publisher {
    settings: StreamSettings,
    origin: String,
    /// IPv6 logins grant this prefix: the relays are told so.
    v6_prefix: u8,
    /// Entries older than this, counted back from the newest, are trimmed.
    window: Duration,
    pending: Mutex<Pending>,
    wake: Notify,
    metrics: StreamMetrics,
    state: Arc<StateStore>,
}

impl Publisher {
    /// A publisher to the stream of `settings`, whose grants cover IPv6
    /// `/v6_prefix` and last at most `longest_ttl`.
    pub fn new(
        settings: StreamSettings,
        v6_prefix: u8,
        longest_ttl: Duration,
        metrics: StreamMetrics,
        state: Arc<StateStore>,
    ) -> Self {
        let seq = state.published_seq();
        Self {
            settings,
            origin: host_name(),
            v6_prefix,
            window: longest_ttl + TRIM_MARGIN,
            pending: Mutex::new(Pending {
                queue: VecDeque::new(),
                coalescer: Coalescer::new(Instant::now()),
                next_seq: seq + 1,
                reserved_seq: seq,
                drops: Throttle::new(DROP_WARNINGS),
            }),
            wake: Notify::new(),
            metrics,
            state,
        }
    }

    /// Numbers `event` and queues it for sending; with the buffer full,
    /// drops the oldest event queued.
    fn queue(&self, pending: &mut Pending, event: Event) -> Result<()> {
        if pending.next_seq > pending.reserved_seq {
            let reserved = pending.next_seq + SEQ_BLOCK;
            self.state.reserve_published_seq(reserved)?;
            pending.reserved_seq = reserved;
        }
        let entry = Entry {
            event,
            origin: self.origin.clone(),
            seq: pending.next_seq,
        };
        pending.next_seq += 1;
        if pending.queue.len() >= BUFFER {
            if let Some((oldest, _)) = pending.queue.pop_front() {
                self.metrics.dropped.inc();
                if let Event::Grant {
                    ip, prefix, user, ..
                } = &oldest.event
                {
                    pending
                        .coalescer
                        .forget(covered(*ip, *prefix), user.as_deref());
                }
                if let Some(held_back) = pending.drops.allow() {
                    tracing::warn!(
                        dropped_since_last_warning = held_back + 1,
                        "the broker has not taken the last {BUFFER} events; dropping the oldest"
                    );
                }
            }
        }
        pending.queue.push_back((entry, Instant::now()));
        self.wake.notify_one();
        Ok(())
    }

    /// Queues `event`, made elsewhere than at a login: a relay's quota
    /// revocation.
    pub fn publish(&self, event: Event) -> Result<()> {
        let mut pending = self.pending.lock().expect("publisher lock");
        self.queue(&mut pending, event)
    }

    /// Sends queued events for as long as the agent runs; `conn` is the
    /// connection made at start, if one was.
    pub async fn run(self: Arc<Self>, client: Client, mut conn: Option<MultiplexedConnection>) {
        let mut link = Link::new(&self.settings, self.metrics.clone());
        if conn.is_some() {
            link.up();
        }
        // The broker's time of the newest entry added, from its ID: entries
        // are trimmed by the broker's clock, not this host's.
        let mut newest_ms = None;
        loop {
            let batch = self.next_batch().await;
            let open = match conn.as_mut() {
                Some(open) => open,
                None => match link::connect(&client, RESPONSE_TIMEOUT).await {
                    Ok(open) => conn.insert(open),
                    Err(e) => {
                        link.down("to connect", &e, "events are buffered");
                        link.pause().await;
                        continue;
                    }
                },
            };
            match self.send(open, &batch, newest_ms).await {
                Ok(ms) => {
                    link.up();
                    newest_ms = ms;
                    self.taken(&batch);
                }
                Err(e) => {
                    link.down("XADD", &e, "events are buffered");
                    conn = None;
                    link.pause().await;
                }
            }
        }
    }

    /// Up to [`BATCH`] of the oldest queued events, once there are any.
    async fn next_batch(&self) -> Vec<(Entry, Instant)> {
        loop {
            {
                let pending = self.pending.lock().expect("publisher lock");
                if !pending.queue.is_empty() {
                    return pending.queue.iter().take(BATCH).cloned().collect();
                }
            }
            self.wake.notified().await;
        }
    }

    /// Adds `batch` to the stream in one round trip, as each event stands
    /// now (grants that ran out while waiting are left out), trimming what
    /// is older than the window before `newest_ms`; returns the broker's
    /// time of the last entry added, or `newest_ms` if none was.
    async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        batch: &[(Entry, Instant)],
        newest_ms: Option<u64>,
    ) -> redis::RedisResult<Option<u64>> {
        let trim = newest_ms.map(|ms| ms.saturating_sub(self.window.as_millis() as u64));
        let mut pipe = redis::pipe();
        for (entry, queued) in batch {
            if let Some(entry) = entry.aged(queued.elapsed()) {
                pipe.add_command(xadd(&self.settings.key, &entry, trim));
            }
        }
        if pipe.is_empty() {
            return Ok(newest_ms);
        }
        let ids: Vec<String> = pipe.query_async(conn).await?;
        Ok(ids
            .last()
            .and_then(|id| id.parse::<EntryId>().ok())
            .map(|id| id.ms)
            .or(newest_ms))
    }

    /// Removes the events of `batch`, which the broker has, from the queue.
    fn taken(&self, batch: &[(Entry, Instant)]) {
        let Some(last) = batch.last().map(|(entry, _)| entry.seq) else {
            return;
        };
        let mut pending = self.pending.lock().expect("publisher lock");
        let before = pending.queue.len();
        while pending
            .queue
            .front()
            .is_some_and(|(entry, _)| entry.seq <= last)
        {
            pending.queue.pop_front();
        }
        self.metrics
            .published
            .inc_by((before - pending.queue.len()) as u64);
    }

    /// Waits up to `within` for the queue to empty, as an agent stops;
    /// returns how many events are left unsent.
    pub async fn drain(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let left = self.pending.lock().expect("publisher lock").queue.len();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn prefix_of(&self, ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            32
        } else {
            self.v6_prefix
        }
    }
}

impl GrantSink for Publisher {
    /// Cooldowns are kept where the quotas are counted: on the relays.
    fn cooldown_left(&self, _user: &str) -> Option<Duration> {
        None
    }

    fn grant(&self, ip: IpAddr, terms: Terms, owner: &Owner) -> Result<Duration> {
        let ip = ip.to_canonical();
        let prefix = self.prefix_of(ip);
        let user = owner.user.as_deref();
        let mut pending = self.pending.lock().expect("publisher lock");
        if let Err(left) =
            pending
                .coalescer
                .admit(covered(ip, prefix), user, terms.ttl, Instant::now())
        {
            return Ok(left);
        }
        let event = Event::Grant {
            ip,
            prefix,
            ttl: terms.ttl,
            user: owner.user.clone(),
            service: owner.service.clone(),
        };
        if let Err(e) = self.queue(&mut pending, event) {
            pending.coalescer.forget(covered(ip, prefix), user);
            return Err(e);
        }
        Ok(terms.ttl)
    }
}

/// The address a grant of `ip`'s `/prefix` is known by: its first.
fn covered(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6(addr::v6_prefix_start(v6, prefix)),
        v4 => v4,
    }
}

/// `XADD KEY [MINID ~ TRIM] * FIELD VALUE ...`: adds `entry` with an ID
/// of the broker's clock, and lets the broker drop whole blocks of
/// entries older than `trim` (`~`: cheaply, so a few may stay a while).
fn xadd(key: &str, entry: &Entry, trim: Option<u64>) -> Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key);
    if let Some(trim) = trim {
        cmd.arg("MINID").arg("~").arg(trim);
    }
    cmd.arg("*");
    for (field, value) in entry.fields() {
        cmd.arg(field).arg(value);
    }
    cmd
}

/// Adds one `event` of an operator's command to the stream and returns its
/// entry ID; any failure is the command's. Numbered by the wall clock's
/// milliseconds, under an origin of its own (`HOST/cli`).
pub async fn publish_once(settings: &StreamSettings, event: Event) -> Result<String> {
    let client = link::client(settings)?;
    let mut conn = link::connect(&client, RESPONSE_TIMEOUT)
        .await
        .map_err(|e| link::explain(e, settings))?;
    let entry = Entry {
        event,
        origin: format!("{}/cli", host_name()),
        seq: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    xadd(&settings.key, &entry, None)
        .query_async(&mut conn)
        .await
        .map_err(|e| link::explain(e, settings))
}

/// This host's name, as entries give their origin.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: a writable buffer of the stated length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use smtpgate_common::SynBudget;

    use super::*;
    use crate::gate::owners::Source;

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it() {
        let dir = std::env::temp_dir().join(format!("smtpgate-publish-{}", std::process::id()));
        let state = Arc::new(StateStore::open(&dir).unwrap());
        let settings = StreamSettings {
            url: "redis://192.0.2.20:6379/0".into(),
            key: "smtpgate:grants".into(),
            ca: None,
            credentials: None,
        };
        let metrics = StreamMetrics::default();
        let ttl = Duration::from_secs(600);
        let publisher = Publisher::new(settings, 64, ttl, metrics.clone(), state);
        let terms = Terms {
            ttl,
            budget: SynBudget::UNLIMITED,
        };
        // One /64 each: 2001:db8:0:N::.
        let base = u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap());
        let ip = |n: usize| IpAddr::V6((base + ((n as u128) << 64)).into());
        let grant = |n: usize| {
            let owner = Owner::now(ip(n), Some("u"), "imap", Source::Log);
            publisher.grant(ip(n), terms, &owner).unwrap()
        };
        for n in 0..=BUFFER {
            assert_eq!(grant(n), ttl);
        }
        assert_eq!(metrics.dropped.get(), 1);
        let pending = publisher.pending.lock().unwrap();
        assert_eq!(pending.queue.len(), BUFFER);
        let (oldest, _) = pending.queue.front().unwrap();
        assert_eq!(oldest.seq, 2, "the oldest was not the one dropped");
        drop(pending);
        // The dropped grant was never sent: its next login publishes again;
        // one still queued does not.
        assert_eq!(grant(0), ttl);
        assert_eq!(metrics.dropped.get(), 2);
        assert!(grant(BUFFER) < ttl);
        std::fs::remove_dir_all(&dir).ok();
    }
}
