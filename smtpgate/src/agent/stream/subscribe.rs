//! Subscribing: a relay applies every entry of the stream to its own gate.
//!
//! It reads with `XREAD BLOCK` from the last entry it applied, which it
//! saves in the state directory, so a relay that was stopped, cut off or
//! left without a broker for a while reads on from there and misses
//! nothing. A relay that never read the stream starts one TTL (plus the
//! trimming margin) back by the broker's clock: every grant still live is
//! in that window. Meanwhile the gate enforces with the grants it has.
//!
//! Entries are idempotent: a grant only ever extends, to an expiry fixed by
//! the entry itself, so reading one twice changes nothing; a revoke removes
//! only grants made before it, so a login the relay saw after the revoke
//! keeps its grant even when the revoke is read late.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use redis::{
    aio::MultiplexedConnection,
    streams::{StreamId, StreamReadReply},
    Client, FromRedisValue,
};

use super::{
    broker_clock::BrokerClock,
    entry::{Entry, EntryId, Event},
    link::{self, Link},
    publish::TRIM_MARGIN,
};
use crate::{
    agent::{
        metrics::StreamMetrics, settings::GrantPolicy, settings::StreamSettings,
        throttle::Throttle, watch::StateStore,
    },
    gate::{
        clock::{self, format_secs},
        maps::Grants,
        owners::{Owner, Source},
    },
};

/// Entries read per round trip.
const BATCH: usize = 1000;
/// How long one read waits for new entries.
const BLOCK: Duration = Duration::from_secs(5);
/// How long a reply may take: the read's wait, plus the network's.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the broker's clock is read again, so that drift between the
/// two clocks never adds up.
const CLOCK_READING_AGE: Duration = Duration::from_secs(300);
/// How often a malformed entry is warned about.
const MALFORMED_WARNINGS: Duration = Duration::from_secs(60);

/// A relay's reader of the stream.
pub struct Subscriber {
    settings: StreamSettings,
    client: Client,
    grants: Arc<Mutex<Grants>>,
    policy: GrantPolicy,
    state: Arc<StateStore>,
    metrics: StreamMetrics,
    malformed: Throttle,
}

impl Subscriber {
    pub fn new(
        settings: StreamSettings,
        client: Client,
        grants: Arc<Mutex<Grants>>,
        policy: GrantPolicy,
        state: Arc<StateStore>,
        metrics: StreamMetrics,
    ) -> Self {
        Self {
            settings,
            client,
            grants,
            policy,
            state,
            metrics,
            malformed: Throttle::new(MALFORMED_WARNINGS),
        }
    }

    /// Reads and applies the stream for as long as the agent runs; `conn`
    /// is the connection made at start, if one was.
    pub async fn run(mut self, mut conn: Option<MultiplexedConnection>) {
        let mut link = Link::new(&self.settings, self.metrics.clone());
        let consequence = "the gate keeps enforcing the grants it has";
        loop {
            let open = match conn.take() {
                Some(open) => open,
                None => match link::connect(&self.client, RESPONSE_TIMEOUT).await {
                    Ok(open) => open,
                    Err(e) => {
                        link.down("to connect", &e, consequence);
                        link.pause().await;
                        continue;
                    }
                },
            };
            let e = self.follow(open, &mut link).await;
            link.down("a read", &e, consequence);
            link.pause().await;
        }
    }

    /// Reads the broker's clock, then reads and applies entries until the
    /// connection fails; returns how.
    async fn follow(
        &mut self,
        mut conn: MultiplexedConnection,
        link: &mut Link,
    ) -> redis::RedisError {
        let mut broker = match BrokerClock::measure(&mut conn).await {
            Ok(reading) => reading,
            Err(e) => return e,
        };
        let mut read_at = Instant::now();
        link.up();
        let mut from = self
            .state
            .stream_position(&self.settings.key)
            .unwrap_or_else(|| {
                let back = self.policy.longest_ttl() + TRIM_MARGIN;
                let start = broker
                    .broker_ms_at(clock::monotonic_ns())
                    .saturating_sub(back.as_millis() as u64);
                tracing::info!(
                    "no entry of {} applied yet: reading from {} back by the broker's clock",
                    self.settings.key,
                    format_secs(back)
                );
                format!("{start}-0")
            });
        tracing::info!(
            stream = %self.settings.key,
            from = %from,
            round_trip_ms = broker.round_trip.as_secs_f64() * 1000.0,
            "reading grants from Redis at {}",
            self.settings.url
        );
        loop {
            if read_at.elapsed() >= CLOCK_READING_AGE {
                broker = match BrokerClock::measure(&mut conn).await {
                    Ok(reading) => reading,
                    Err(e) => return e,
                };
                read_at = Instant::now();
            }
            let reply: Option<StreamReadReply> = match redis::cmd("XREAD")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.settings.key)
                .arg(&from)
                .query_async(&mut conn)
                .await
            {
                Ok(reply) => reply,
                Err(e) => return e,
            };
            let entries: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids)
                .collect();
            if let Some(last) = entries.last() {
                from = last.id.clone();
                self.apply(&entries, &broker);
                self.state
                    .record_stream_position(&self.settings.key, from.clone());
            }
        }
    }

    /// Applies `entries` in order, under one hold of the grant lock.
    fn apply(&mut self, entries: &[StreamId], broker: &BrokerClock) {
        let mut grants = self.grants.lock().expect("grant map lock");
        for raw in entries {
            let parsed = raw.id.parse::<EntryId>().and_then(|id| {
                let entry = Entry::parse(|name| {
                    raw.map
                        .get(name)
                        .and_then(|value| String::from_redis_value(value.clone()).ok())
                })?;
                Ok((id, entry))
            });
            match parsed {
                Ok((id, entry)) => {
                    let kind = entry.event.kind();
                    match apply_one(&mut grants, &self.policy, broker, id, &entry) {
                        Ok(()) => self.metrics.record_applied(kind),
                        Err(e) => tracing::error!(id = %raw.id, "applying a {kind}: {e:#}"),
                    }
                    let lag_ms = broker
                        .broker_ms_at(clock::monotonic_ns())
                        .saturating_sub(id.ms);
                    self.metrics.lag_seconds.set(lag_ms as f64 / 1000.0);
                }
                Err(e) => {
                    self.metrics.record_applied("malformed");
                    if let Some(held_back) = self.malformed.allow() {
                        tracing::warn!(id = %raw.id, similar_since = held_back, "a stream entry was not applied: {e:#}");
                    }
                }
            }
        }
    }
}

/// Applies one entry, added at `id` by the broker's clock.
fn apply_one(
    grants: &mut Grants,
    policy: &GrantPolicy,
    broker: &BrokerClock,
    id: EntryId,
    entry: &Entry,
) -> Result<()> {
    let added = broker.monotonic_at(id.ms);
    let added_wall = clock::wall_time_at(added);
    match &entry.event {
        Event::Grant {
            ip,
            ttl,
            user,
            service,
            ..
        } => {
            let now = clock::monotonic_ns();
            let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
            // Never beyond a TTL from now, whatever the clocks say.
            let expiry = broker
                .monotonic_at(id.ms.saturating_add(ttl.as_millis() as u64))
                .min(now.saturating_add(ttl_ns));
            if expiry <= now {
                return Ok(());
            }
            let owner = Owner {
                address: *ip,
                user: user.clone(),
                service: service.clone(),
                source: Some(Source::Stream),
                granted_at: added_wall,
            };
            // A later login's record of who holds the grant stays.
            let newer = grants
                .owner_of(*ip)
                .is_some_and(|held| held.granted_at > added_wall);
            let budget = policy.limits_for(*ip).syn_budget;
            grants.grant_until(*ip, expiry, budget, (!newer).then_some(&owner))?;
            tracing::debug!(%ip, user, origin = %entry.origin, seq = entry.seq, expires_in = %format_secs(clock::remaining(expiry)), "granted from the stream");
        }
        Event::Revoke { ip, .. } => {
            if grants.revoke_older(*ip, Some(added_wall))? {
                tracing::info!(%ip, origin = %entry.origin, "revoked from the stream");
            }
        }
        Event::RevokeUser { user } => {
            let revoked = grants.revoke_user_older(user, Some(added_wall))?;
            if !revoked.is_empty() {
                tracing::info!(user, count = revoked.len(), origin = %entry.origin, "revoked the user's grants from the stream");
            }
        }
    }
    Ok(())
}
