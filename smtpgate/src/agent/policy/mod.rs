//! The Postfix policy service (`--policy-listen`). Postfix asks it about
//! each recipient (`check_policy_service` in `smtpd_recipient_restrictions`)
//! and it counts the recipient against the quotas of the address sending
//! and of the user whose login granted that address.
//!
//! A user over quota loses every grant they hold and earns none until their
//! cooldown ends (`smtpgate pardon` ends it sooner); an address over quota
//! is only deferred, since many customers may share it. Everything else is
//! `DUNNO`: the service never lets mail through that Postfix would refuse,
//! it only holds some back.
//!
//! The counts are in memory and start afresh with the agent (see
//! [`ledger`]); revoked grants and cooldowns are in the kernel's pinned
//! maps and outlive it.

mod conversation;
mod ledger;
pub mod listen;
mod revoked;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::{sync::Semaphore, time::MissedTickBehavior};

use self::{
    conversation::Action,
    ledger::{Ledger, Verdict},
    listen::Listener,
    revoked::Revoked,
};
use crate::{
    agent::{
        accept::AcceptErrors,
        metrics::Metrics,
        policy_protocol::{Malformed, Request},
        quota::Quota,
        settings::{GrantPolicy, PolicySettings},
        stream::{entry::Event, publish::Publisher},
        throttle::Throttle,
    },
    gate::{addr, clock::format_secs, maps::Grants, owners::Cooldowns},
};

/// Connections served at once. Each smtpd process holds at most one, and
/// Postfix runs at most `default_process_limit` (100) of them, so a stock
/// Postfix never waits for a slot; a flood of idle connections holds this
/// many descriptors at most, for [`conversation::IDLE`].
const MAX_CLIENTS: usize = 128;
/// How often the counts of senders quiet for a whole window are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often a malformed request may be logged.
const MALFORMED_WARNINGS: Duration = Duration::from_secs(60);

/// What every connection shares.
struct Service {
    policy: GrantPolicy,
    cooldown: Duration,
    grants: Arc<Mutex<Grants>>,
    cooldowns: Arc<Mutex<Cooldowns>>,
    metrics: Metrics,
    /// The origin of the monotonic time the counts are kept in.
    started: Instant,
    /// In memory only, so lost on a restart; safe, since the revokes and
    /// cooldowns it led to are in pinned maps and survive.
    ledger: Mutex<Ledger>,
    revoked: Mutex<Revoked>,
    malformed: Mutex<Throttle>,
    /// Where a user over quota is made known to the other relays, if this
    /// one reads a stream.
    publisher: Option<Arc<Publisher>>,
}

/// The gate's state the service acts on.
pub struct Gate {
    pub grants: Arc<Mutex<Grants>>,
    pub cooldowns: Arc<Mutex<Cooldowns>>,
    pub metrics: Metrics,
    pub publisher: Option<Arc<Publisher>>,
}

/// Starts serving on `listener`, bound beforehand (so that a taken port or
/// a bad path fails the agent's start), and pruning the counts.
pub fn spawn(listener: Listener, settings: &PolicySettings, policy: &GrantPolicy, gate: Gate) {
    let shown = |quota: Option<Quota>| quota.map_or_else(|| "off".to_string(), |q| q.to_string());
    tracing::info!(
        user_quota = shown(policy.default.user_quota),
        address_quota = shown(policy.default.address_quota),
        cooldown = %format_secs(settings.cooldown),
        "counting recipients against quotas"
    );
    let service = Arc::new(Service {
        policy: policy.clone(),
        cooldown: settings.cooldown,
        grants: gate.grants,
        cooldowns: gate.cooldowns,
        metrics: gate.metrics,
        started: Instant::now(),
        ledger: Mutex::default(),
        revoked: Mutex::default(),
        malformed: Mutex::new(Throttle::new(MALFORMED_WARNINGS)),
        publisher: gate.publisher,
    });
    tokio::spawn(serve(service.clone(), listener));
    tokio::spawn(prune(service));
}

async fn serve(service: Arc<Service>, listener: Listener) {
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut errors = AcceptErrors::new("policy service");
    loop {
        let slot = clients
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        match listener.accept().await {
            Ok((stream, peer)) => {
                let service = service.clone();
                tokio::spawn(async move {
                    let respond = |read| service.respond(read, &peer);
                    if let Err(e) = conversation::converse(stream, respond).await {
                        tracing::debug!(peer, "policy connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            Err(e) => errors.failed(e).await,
        }
    }
}

async fn prune(service: Arc<Service>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        service.prune();
    }
}

impl Service {
    /// The answer to one request from `peer`, counted in the metrics.
    fn respond(&self, read: Result<Request, Malformed>, peer: &str) -> Action {
        let action = match read {
            Ok(request) => self.judge(&request),
            Err(why) => {
                self.metrics.record_policy_malformed();
                if let Some(held_back) = self.malformed.lock().expect("throttle lock").allow() {
                    tracing::warn!(
                        peer,
                        similar_since = held_back,
                        "a malformed policy request, answered DUNNO: {why}"
                    );
                }
                Action::Dunno
            }
        };
        self.metrics.record_policy_answer(action.label());
        action
    }

    /// Counts a recipient of a granted address; anything else is `DUNNO`.
    fn judge(&self, request: &Request) -> Action {
        if request.get("request") != Some("smtpd_access_policy")
            || request.get("protocol_state") != Some("RCPT")
        {
            return Action::Dunno;
        }
        let Some(ip) = request
            .get("client_address")
            .and_then(|text| text.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
        else {
            return Action::Dunno;
        };
        let address = self.covered(ip);
        let owner = self.grants.lock().expect("grant map lock").owner_of(ip);
        let Some(owner) = owner else {
            return self.without_grant(address);
        };
        let user = owner.user.as_deref();
        let verdict = self.ledger.lock().expect("ledger lock").count(
            address,
            user,
            self.policy.limits_for(ip),
            self.started.elapsed(),
        );
        match (verdict, user) {
            (Verdict::OverUser { total, quota }, Some(user)) => {
                self.over_user(user, ip, address, total, quota)
            }
            (
                Verdict::OverAddress {
                    total,
                    quota,
                    first,
                },
                user,
            ) => self.over_address(ip, user, total, quota, first),
            _ => Action::Dunno,
        }
    }

    /// Defers a recipient of an address over quota; says so when it is the
    /// `first` over, not for each one after it.
    fn over_address(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        total: u64,
        quota: Quota,
        first: bool,
    ) -> Action {
        if first {
            tracing::warn!(
                %ip, user, recipients = total, quota = %quota,
                "over the address quota: its recipients are deferred until the window has room"
            );
            self.metrics.record_quota_exceeded("address");
        }
        Action::DeferIfPermit(format!(
            "4.7.1 smtpgate: {ip} sent more than {}",
            recipients(quota)
        ))
    }

    /// Ends what `user` can send: starts their cooldown, revokes every
    /// grant they hold, and defers the recipient.
    fn over_user(
        &self,
        user: &str,
        ip: IpAddr,
        address: IpAddr,
        total: u64,
        quota: Quota,
    ) -> Action {
        // The cooldown goes first: a login from now on grants nothing, so
        // none of the grants revoked below comes straight back.
        let started = self
            .cooldowns
            .lock()
            .expect("cooldowns lock")
            .start(user, self.cooldown);
        if let Err(e) = started {
            tracing::error!(user, "{e:#}");
        }
        let revoked = self
            .grants
            .lock()
            .expect("grant map lock")
            .revoke_user(user)
            .unwrap_or_else(|e| {
                tracing::error!(user, "revoking the grants: {e:#}");
                Vec::new()
            });
        self.ledger.lock().expect("ledger lock").forget_user(user);
        self.revoked
            .lock()
            .expect("revoked lock")
            .note(user, revoked.iter().copied().chain([address]));
        let list: Vec<String> = revoked.iter().map(IpAddr::to_string).collect();
        tracing::warn!(
            user, %ip, recipients = total, quota = %quota, revoked = list.join(" "),
            cooldown = %format_secs(self.cooldown),
            "over the user quota: the user's grants are revoked and their logins grant nothing until the cooldown ends"
        );
        self.metrics.record_quota_exceeded("user");
        if let Some(publisher) = &self.publisher {
            let event = Event::RevokeUser {
                user: user.to_string(),
                cooldown: Some(self.cooldown),
            };
            if let Err(e) = publisher.publish(event) {
                tracing::error!(user, "telling the other relays: {e:#}");
            }
        }
        Action::DeferIfPermit(format!(
            "4.7.1 smtpgate: {user} sent more than {}",
            recipients(quota)
        ))
    }

    /// The answer for an address without a grant: `DUNNO` (allowlisted,
    /// local), unless a user over quota lost its grant while a session of
    /// theirs may still be open.
    fn without_grant(&self, address: IpAddr) -> Action {
        let user = self
            .revoked
            .lock()
            .expect("revoked lock")
            .user_of(address)
            .map(str::to_string);
        match user {
            Some(user)
                if self
                    .cooldowns
                    .lock()
                    .expect("cooldowns lock")
                    .left(&user)
                    .is_some() =>
            {
                tracing::debug!(%address, user, "a recipient in a session of a user over quota");
                Action::DeferIfPermit(format!(
                    "4.7.1 smtpgate: {user} went over a recipient quota"
                ))
            }
            _ => Action::Dunno,
        }
    }

    /// What the grant covering `ip` covers: `ip`, or its IPv6 prefix.
    fn covered(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => IpAddr::V6(addr::v6_prefix_start(v6, self.policy.ipv6_prefix)),
            v4 => v4,
        }
    }

    /// Forgets the senders quiet for a whole window, and the revoked
    /// addresses of users whose cooldown has ended.
    fn prune(&self) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        ledger.prune(self.started.elapsed());
        let senders = ledger.keys();
        drop(ledger);
        let cooldowns = self.cooldowns.lock().expect("cooldowns lock");
        self.revoked
            .lock()
            .expect("revoked lock")
            .retain(|user| cooldowns.left(user).is_some());
        tracing::debug!(senders, "pruned the recipient counts");
    }
}

/// `N recipients in WINDOW`, for the texts Postfix passes on.
fn recipients(quota: Quota) -> String {
    format!(
        "{} recipients in {}",
        quota.limit,
        humantime::format_duration(quota.window)
    )
}
