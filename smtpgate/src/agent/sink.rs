//! Where the grants of logins go. `run` writes them into the kernel map
//! ([`KernelSink`]); `watch` on a POP host publishes them to the relays
//! (`stream::Publisher`). The login watcher judges and logs each login the
//! same way for both and only hands the grant to its sink.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Result};

use crate::agent::{metrics::Metrics, throttle::Throttle};
use crate::gate::{
    clock,
    maps::{Grants, Terms},
    owners::{Cooldowns, Owner},
};

/// Takes the grants of logins.
pub trait GrantSink: Send + Sync {
    /// What is left of `user`'s quota cooldown, if one runs where this sink
    /// grants.
    fn cooldown_left(&self, user: &str) -> Option<Duration>;

    /// Grants `ip` on `terms`, earned by `owner`; returns how long the
    /// grant lasts from now.
    fn grant(&self, ip: IpAddr, terms: Terms, owner: &Owner) -> Result<Duration>;
}

/// The local gate: the pinned grant map, and the cooldowns of the users
/// the policy service caught over a quota.
pub struct KernelSink {
    pub grants: Arc<Mutex<Grants>>,
    pub cooldowns: Arc<Mutex<Cooldowns>>,
    pub metrics: Metrics,
    /// A full map warns at most once a minute.
    pub full_map_warnings: Mutex<Throttle>,
}

impl GrantSink for KernelSink {
    fn cooldown_left(&self, user: &str) -> Option<Duration> {
        self.cooldowns.lock().expect("cooldowns lock").left(user)
    }

    fn grant(&self, ip: IpAddr, terms: Terms, owner: &Owner) -> Result<Duration> {
        let mut grants = self.grants.lock().expect("grant map lock");
        // Asked again under the grant lock: the policy service starts a
        // cooldown before it revokes, so a grant written here either sees
        // the cooldown or is written before the revoke takes it.
        if let Some(left) = owner
            .user
            .as_deref()
            .and_then(|user| self.cooldown_left(user))
        {
            bail!(
                "the user went over a quota a moment ago ({} of cooldown left)",
                clock::format_secs(left)
            );
        }
        let evictions = grants.evictions();
        let expiry = grants.grant_for(ip, terms, owner)?;
        if grants.evictions() > evictions {
            self.metrics.grants_evicted.inc();
            if let Some(held_back) = self
                .full_map_warnings
                .lock()
                .expect("throttle lock")
                .allow()
            {
                tracing::warn!(
                    capacity = grants.capacity(),
                    evictions_since_last_warning = held_back + 1,
                    "the grant map is full: a fresh grant evicted the grant used least recently; raise --max-grants"
                );
            }
        }
        Ok(clock::remaining(expiry))
    }
}
