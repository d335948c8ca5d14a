//! Watching for logins and turning them into grants.
//!
//! Each source (a followed log file, standard input, the journal, the Unix
//! socket) runs as its own task: it reads a line, parses it, and when it is
//! a successful login writes the grant into the kernel map right there, so a
//! customer's SMTP connection a moment after the POP3 login finds the grant
//! in place. Only after that does the source record its position, so a crash
//! can repeat a line (harmless: grants only extend) but never skip one.

mod files;
mod journal;
mod socket;
pub mod state;
mod stdin;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use jiff::Timestamp;
use smtpgate_logins::{Login, Parser, Service, Verdict};

use crate::{commands::format_secs, maps::Grants, metrics::Metrics, settings::WatchSettings};

pub use state::StateStore;

/// What every source shares.
pub struct Watch {
    grants: Arc<Mutex<Grants>>,
    parser: Parser,
    /// Which services' logins grant.
    services: Vec<Service>,
    ttl: Duration,
    metrics: Metrics,
    state: Arc<StateStore>,
}

/// A login that no longer grants anything: it is older than the TTL.
const STALE: &str = "older than the TTL";

impl Watch {
    pub fn new(settings: &WatchSettings, grants: Arc<Mutex<Grants>>, metrics: Metrics, state: Arc<StateStore>) -> Result<Self> {
        let parser = Parser::new(settings.parser.clone()).map_err(|e| anyhow::anyhow!("pattern: {e}"))?;
        Ok(Self { grants, parser, services: settings.parser.services.clone(), ttl: settings.ttl, metrics, state })
    }

    /// Starts a task for every configured source.
    pub fn spawn_sources(self: &Arc<Self>, settings: &WatchSettings) -> Result<()> {
        for path in &settings.logs {
            let start = self.state.file_start(path);
            tokio::spawn(files::follow(self.clone(), path.clone(), start));
        }
        if settings.stdin {
            tokio::spawn(stdin::read(self.clone()));
        }
        if let Some(units) = &settings.journal {
            tokio::spawn(journal::follow(self.clone(), units.clone()));
        }
        if let Some(socket) = &settings.socket {
            let listener = socket::bind(socket)?;
            tokio::spawn(socket::serve(self.clone(), listener));
        }
        Ok(())
    }

    /// Parses one log line and grants its login, if it is one.
    fn handle_line(&self, line: &[u8], source: &'static str) {
        if let Verdict::Grant(login) = self.parser.parse(line, Timestamp::now()) {
            self.grant_login(&login, source);
        }
    }

    /// Grants `login.ip` for what is left of the TTL counted from the line's
    /// own time stamp: a login read back after a restart gets only its
    /// remaining lifetime, and nothing ever lasts beyond now + TTL.
    fn grant_login(&self, login: &Login, source: &'static str) {
        let ttl = match login.time {
            Some(logged) => {
                let age = Timestamp::now().duration_since(logged);
                let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
                match self.ttl.checked_sub(age) {
                    Some(left) if !left.is_zero() => left,
                    _ => {
                        tracing::debug!(ip = %login.ip, "login {STALE}; not granted");
                        return;
                    }
                }
            }
            None => self.ttl,
        };
        let _ = self.grant(login.ip, login.service, &login.user, ttl, source);
    }

    /// Writes one grant and says so.
    fn grant(&self, ip: IpAddr, service: Service, user: &str, ttl: Duration, source: &'static str) -> Result<Duration> {
        let result = self.grants.lock().expect("grant map lock").grant(ip, ttl);
        match result {
            Ok(expiry) => {
                let left = crate::clock::remaining(expiry);
                tracing::info!(%ip, service = service.as_str(), user, source, expires_in = %format_secs(left), "granted");
                self.metrics.record_grant(source, service.as_str());
                Ok(left)
            }
            Err(e) => {
                tracing::error!(%ip, "could not write the grant: {e:#}");
                Err(e)
            }
        }
    }
}
