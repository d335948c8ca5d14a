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
pub mod judge;
mod socket;
pub mod state;
mod stdin;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use jiff::Timestamp;
use smtpgate_logins::{Login, Parser, Service, Verdict, FUTURE_STAMP, OTHER_SHAPE, UNSTAMPED};

use crate::{
    agent::{metrics::Metrics, settings::WatchSettings, throttle::Throttle},
    gate::{
        clock::{self, format_secs},
        maps::Grants,
    },
};

pub use judge::LogJudge;
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

/// How often one log may warn about lines the operator should know of.
const LOG_WARNINGS: Duration = Duration::from_secs(60);

/// One log the agent reads (a file, standard input): how its lines are
/// judged, and how often it may warn about them.
struct LogSource {
    /// The log, in warnings.
    name: String,
    judge: LogJudge,
    warnings: Throttle,
}

impl LogSource {
    fn new(name: String, parser: &Parser) -> Self {
        Self {
            name,
            judge: LogJudge::new(parser),
            warnings: Throttle::new(LOG_WARNINGS),
        }
    }

    /// Starts judging anew: the log is another file now (rotation), whose
    /// lines may have another prefix.
    fn restart(&mut self, parser: &Parser) {
        self.judge = LogJudge::new(parser);
    }
}

impl Watch {
    pub fn new(
        settings: &WatchSettings,
        grants: Arc<Mutex<Grants>>,
        metrics: Metrics,
        state: Arc<StateStore>,
    ) -> Self {
        let parser = settings.parser.parser().clone();
        for warning in parser.warnings() {
            tracing::warn!("{warning}");
        }
        Self {
            grants,
            parser,
            services: settings.parser.services().to_vec(),
            ttl: settings.ttl,
            metrics,
            state,
        }
    }

    /// Starts a task for every configured source.
    pub fn spawn_sources(self: &Arc<Self>, settings: &WatchSettings) -> Result<()> {
        for path in &settings.logs {
            let start = self.state.file_start(path);
            tokio::spawn(files::follow(self.clone(), path.clone(), start));
        }
        if settings.stdin {
            stdin::spawn(self.clone()).context("starting to read standard input")?;
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

    /// Judges the next line of `log` and grants its login, if it is one.
    /// Tells the operator, now and then, of lines that suggest the log is
    /// read wrongly: lines unlike the log's own, and logins stamped in the
    /// future.
    fn handle_line(&self, log: &mut LogSource, bytes: &[u8], cut: bool, source: &'static str) {
        match log.judge.judge(bytes, cut, Timestamp::now()) {
            Verdict::Grant(login) => self.grant_login(&login, source),
            Verdict::NoGrant(reason) => {
                let hint = match reason.as_str() {
                    OTHER_SHAPE => "if the log's format changed, restart smtpgate",
                    UNSTAMPED => "for a log without time stamps give --log-format bare",
                    FUTURE_STAMP => "check the clocks and --timezone",
                    _ => return,
                };
                if let Some(held_back) = log.warnings.allow() {
                    let prefix = log.judge.prefix().unwrap_or("not known yet");
                    tracing::warn!(
                        log = %log.name, lines_prefix = prefix, similar_lines_since = held_back,
                        "a line was not judged a login: {reason}; {hint}"
                    );
                }
            }
        }
    }

    /// Grants `login.ip` for what is left of the TTL counted from the line's
    /// own time stamp: a login read back after a restart gets only its
    /// remaining lifetime, and nothing ever lasts beyond now + TTL (the
    /// parser refuses stamps more than a minute ahead).
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
        let _ = self.grant(login.ip, login.service, &login.user, ttl, source, None);
    }

    /// Writes one grant and says so, with the uid of the process that
    /// reported the login, where a process did.
    fn grant(
        &self,
        ip: IpAddr,
        service: Service,
        user: &str,
        ttl: Duration,
        source: &'static str,
        reporter_uid: Option<u32>,
    ) -> Result<Duration> {
        let result = self.grants.lock().expect("grant map lock").grant(ip, ttl);
        match result {
            Ok(expiry) => {
                let left = clock::remaining(expiry);
                tracing::info!(%ip, service = service.as_str(), user, source, reporter_uid, expires_in = %format_secs(left), "granted");
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
