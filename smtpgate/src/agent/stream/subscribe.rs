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
//!
//! Beside the stream it reads the relays' own, `KEY:revokes`, where a relay
//! whose quota caught a user publishes the revoke and the cooldown: the
//! user is then shut out of every relay, not only the one that counted.
//! Only revocations and pardons are taken from it. Grants of a user whose
//! cooldown runs here are held back, as a local login's would be.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
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
        owners::{Cooldowns, Owner, Source},
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
/// How often a publisher of another IPv6 prefix is warned about.
const OTHER_PREFIX_WARNINGS: Duration = Duration::from_secs(3600);

/// A relay's reader of the stream.
pub struct Subscriber {
    settings: StreamSettings,
    client: Client,
    grants: Arc<Mutex<Grants>>,
    cooldowns: Arc<Mutex<Cooldowns>>,
    policy: GrantPolicy,
    state: Arc<StateStore>,
    metrics: StreamMetrics,
    malformed: Throttle,
    /// Publishers whose IPv6 prefix differs from this relay's are warned
    /// about this often: the relay grants its own prefix.
    other_prefix: Throttle,
}

/// The two streams a relay reads: the POP hosts' and operators' entries,
/// then the relays' own quota revocations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Grants,
    Revokes,
}

impl Subscriber {
    pub fn new(
        settings: StreamSettings,
        client: Client,
        (grants, cooldowns): (Arc<Mutex<Grants>>, Arc<Mutex<Cooldowns>>),
        policy: GrantPolicy,
        state: Arc<StateStore>,
        metrics: StreamMetrics,
    ) -> Self {
        Self {
            settings,
            client,
            grants,
            cooldowns,
            policy,
            state,
            metrics,
            malformed: Throttle::new(MALFORMED_WARNINGS),
            other_prefix: Throttle::new(OTHER_PREFIX_WARNINGS),
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

    /// Where reading `key` starts: after the last entry applied, or one TTL
    /// (and the trimming margin) back by the broker's clock.
    fn start_of(&self, key: &str, broker: &BrokerClock) -> String {
        self.state.stream_position(key).unwrap_or_else(|| {
            let back = self.policy.longest_ttl() + TRIM_MARGIN;
            let start = broker
                .broker_ms_at(clock::monotonic_ns())
                .saturating_sub(back.as_millis() as u64);
            tracing::info!(
                "no entry of {key} applied yet: reading from {} back by the broker's clock",
                format_secs(back)
            );
            format!("{start}-0")
        })
    }

    /// Reads the broker's clock, then reads and applies entries of both
    /// streams until the connection fails; returns how.
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
        let keys = [self.settings.key.clone(), self.settings.revokes_key()];
        let mut from = keys.clone().map(|key| self.start_of(&key, &broker));
        tracing::info!(
            stream = %keys[0],
            revokes = %keys[1],
            from = %from[0],
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
                .arg(&keys[..])
                .arg(&from[..])
                .query_async(&mut conn)
                .await
            {
                Ok(reply) => reply,
                Err(e) => return e,
            };
            let mut entries = Vec::new();
            for stream in reply.into_iter().flat_map(|reply| reply.keys) {
                let origin = match stream.key == keys[0] {
                    true => Origin::Grants,
                    false => Origin::Revokes,
                };
                if let Some(last) = stream.ids.last() {
                    from[origin as usize] = last.id.clone();
                }
                entries.extend(stream.ids.into_iter().map(|raw| (origin, raw)));
            }
            if entries.is_empty() {
                continue;
            }
            // One order for both streams, the broker's: a cooldown and its
            // pardon apply as they were made.
            entries.sort_by_key(|(_, raw)| raw.id.parse::<EntryId>().ok());
            self.apply(&entries, &broker);
            for (key, position) in keys.iter().zip(&from) {
                self.state.record_stream_position(key, position.clone());
            }
        }
    }

    /// Applies `entries` in order, under one hold of the grant lock.
    fn apply(&mut self, entries: &[(Origin, StreamId)], broker: &BrokerClock) {
        let (grants, cooldowns) = (self.grants.clone(), self.cooldowns.clone());
        let mut grants = grants.lock().expect("grant map lock");
        for (origin, raw) in entries {
            let parsed = raw.id.parse::<EntryId>().and_then(|id| {
                let entry = Entry::parse(|name| {
                    raw.map
                        .get(name)
                        .and_then(|value| String::from_redis_value(value.clone()).ok())
                })?;
                if *origin == Origin::Revokes && !entry.event.only_closes() {
                    bail!(
                        "a {} on {}, where relays publish only revocations",
                        entry.event.kind(),
                        self.settings.revokes_key()
                    );
                }
                Ok((id, entry))
            });
            match parsed {
                Ok((id, entry)) => {
                    let kind = entry.event.kind();
                    self.warn_of_other_prefix(&entry);
                    let mut cooldowns = cooldowns.lock().expect("cooldowns lock");
                    let applying = Applying {
                        grants: &mut grants,
                        cooldowns: &mut cooldowns,
                        policy: &self.policy,
                        broker,
                    };
                    match applying.apply(id, &entry) {
                        Ok(true) => self.metrics.record_applied(kind),
                        Ok(false) => self.metrics.record_applied("cooling"),
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

    /// Warns now and then of a publisher whose IPv6 grants cover another
    /// prefix than this relay's: its customers' neighbours get in here, or
    /// its customers' other addresses do not.
    fn warn_of_other_prefix(&mut self, entry: &Entry) {
        let Event::Grant {
            ip: IpAddr::V6(_),
            prefix,
            ..
        } = entry.event
        else {
            return;
        };
        if prefix != self.policy.ipv6_prefix {
            if let Some(held_back) = self.other_prefix.allow() {
                tracing::warn!(
                    origin = %entry.origin,
                    similar_since = held_back,
                    "{} publishes IPv6 grants of /{prefix}; this relay grants /{} (--ipv6-grant-prefix): give every host the same",
                    entry.origin,
                    self.policy.ipv6_prefix
                );
            }
        }
    }
}

/// What applying an entry touches.
struct Applying<'a> {
    grants: &'a mut Grants,
    cooldowns: &'a mut Cooldowns,
    policy: &'a GrantPolicy,
    broker: &'a BrokerClock,
}

impl Applying<'_> {
    /// Applies one entry, added at `id` by the broker's clock; false for a
    /// grant held back by its user's cooldown.
    fn apply(self, id: EntryId, entry: &Entry) -> Result<bool> {
        let Applying {
            grants,
            cooldowns,
            policy,
            broker,
        } = self;
        let added_wall = clock::wall_time_at(broker.monotonic_at(id.ms));
        let now = clock::monotonic_ns();
        // A time `after` the entry's, on this relay's monotonic clock, never
        // beyond `after` from now whatever the clocks say.
        let from_entry = |after: Duration| {
            let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
            broker
                .monotonic_at(id.ms.saturating_add(after.as_millis() as u64))
                .min(now.saturating_add(after_ns))
        };
        match &entry.event {
            Event::Grant {
                ip,
                ttl,
                user,
                service,
                ..
            } => {
                let expiry = from_entry(*ttl);
                if expiry <= now {
                    return Ok(true);
                }
                if let Some(user) = user.as_deref().filter(|u| cooldowns.left(u).is_some()) {
                    tracing::debug!(%ip, user, "a grant from the stream held back: the user is cooling down");
                    return Ok(false);
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
            Event::RevokeUser { user, cooldown } => {
                if let Some(cooldown) = cooldown {
                    let until = from_entry(*cooldown);
                    let left = Duration::from_nanos(until.saturating_sub(now));
                    if cooldowns.left(user).unwrap_or_default() < left {
                        cooldowns.start(user, left)?;
                        tracing::info!(user, origin = %entry.origin, cooldown = %format_secs(left), "a relay caught the user over a quota: their logins grant nothing until the cooldown ends");
                    }
                }
                let revoked = grants.revoke_user_older(user, Some(added_wall))?;
                if !revoked.is_empty() {
                    tracing::info!(user, count = revoked.len(), origin = %entry.origin, "revoked the user's grants from the stream");
                }
            }
            Event::Pardon { user } => {
                if cooldowns.pardon(user)? {
                    tracing::info!(user, origin = %entry.origin, "pardoned from the stream");
                }
            }
        }
        Ok(true)
    }
}
