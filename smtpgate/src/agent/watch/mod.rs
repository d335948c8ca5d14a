//! Watching for logins and turning them into grants.
//!
//! Each source (a followed log file, standard input, the journal, the Unix
//! socket) runs as its own task: it reads a line, parses it, and when it is
//! a successful login hands the grant to the sink right there (the kernel
//! map for `run`, the stream to the relays for `watch`), so a customer's
//! SMTP connection a moment after the POP3 login finds the grant in place.
//! Only after that does the source record its position, so a crash can
//! repeat a line (harmless: grants only extend) but never skip one.

mod files;
mod journal;
pub mod judge;
pub mod socket;
pub mod state;
mod stdin;

use std::{net::IpAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use jiff::Timestamp;
use smtpgate_logins::{
    Entry, Login, Parser, Report, Service, Verdict, FUTURE_STAMP, OTHER_SHAPE, UNSTAMPED,
};
use smtpgate_tail::Position;

use crate::{
    agent::{
        metrics::Metrics,
        settings::{GrantPolicy, WatchSettings},
        sink::GrantSink,
        throttle::Throttle,
    },
    gate::{
        clock::format_secs,
        owners::{Owner, Source},
    },
};

pub use judge::LogJudge;
pub use state::StateStore;

/// What every source shares. The sources use it through its methods.
pub struct Watch {
    sink: Arc<dyn GrantSink>,
    parser: Parser,
    /// Which services' logins grant.
    services: Vec<Service>,
    policy: GrantPolicy,
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

impl Watch {
    pub fn new(
        settings: &WatchSettings,
        policy: &GrantPolicy,
        sink: Arc<dyn GrantSink>,
        metrics: Metrics,
        state: Arc<StateStore>,
    ) -> Self {
        let parser = settings.parser.parser().clone();
        for warning in parser.warnings() {
            tracing::warn!("{warning}");
        }
        Self {
            sink,
            parser,
            services: settings.parser.services().to_vec(),
            policy: policy.clone(),
            metrics,
            state,
        }
    }

    /// Starts a task for every configured source; the login socket, when
    /// one is configured, is bound beforehand ([`socket::bind_configured`]).
    pub fn spawn_sources(
        self: &Arc<Self>,
        settings: &WatchSettings,
        login_socket: Option<tokio::net::UnixListener>,
    ) -> Result<()> {
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
        if let Some(listener) = login_socket {
            tokio::spawn(socket::serve(self.clone(), listener));
        }
        Ok(())
    }

    /// How far back a login may still grant: the longest TTL of any network.
    fn longest_ttl(&self) -> Duration {
        self.policy.longest_ttl()
    }

    /// Starts reading a log; `name` names it in warnings.
    fn open_log(&self, name: String) -> LogSource {
        LogSource {
            name,
            judge: LogJudge::new(&self.parser),
            warnings: Throttle::new(LOG_WARNINGS),
        }
    }

    /// Starts judging `log` anew: it is another file now (rotation), whose
    /// lines may have another prefix.
    fn restart_log(&self, log: &mut LogSource) {
        log.judge = LogJudge::new(&self.parser);
    }

    /// Notes that the log file at `path` has been read up to `position`.
    fn record_file(&self, path: &Path, position: Position) {
        self.state.record_file(path, position);
    }

    /// Where the last run stopped reading the journal, if it read it.
    fn journal_cursor(&self) -> Option<String> {
        self.state.journal_cursor()
    }

    /// Notes that the journal has been read up to `cursor`.
    fn record_journal_cursor(&self, cursor: String) {
        self.state.record_journal_cursor(cursor);
    }

    /// Judges the next line of `log` and grants its login, if it is one.
    /// Tells the operator, now and then, of lines that suggest the log is
    /// read wrongly: lines unlike the log's own, and logins stamped in the
    /// future.
    fn handle_line(&self, log: &mut LogSource, bytes: &[u8], cut: bool, source: Source) {
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

    /// Judges a journal entry, with the same parser as log lines, and
    /// grants its login, if it is one.
    fn handle_entry(&self, entry: &Entry<'_>) {
        if let Verdict::Grant(login) = self.parser.parse_entry(entry, Timestamp::now()) {
            self.grant_login(&login, Source::Journal);
        }
    }

    /// Grants the login of a report on the socket, reported by `uid`, for
    /// the whole TTL, if logins of its service grant here. Returns how long
    /// the grant lasts.
    fn grant_report(&self, report: &Report, uid: u32) -> Result<Duration> {
        if !self.services.contains(&report.service) {
            bail!("{} logins do not grant here", report.service);
        }
        self.grant(
            report.ip,
            report.service,
            &report.user,
            Duration::ZERO,
            Source::Socket,
            Some(uid),
        )
    }

    /// Grants `login.ip` for what is left of its TTL counted from the line's
    /// own time stamp: a login read back after a restart gets only its
    /// remaining lifetime, and nothing ever lasts beyond now + TTL (the
    /// parser refuses stamps more than a minute ahead).
    fn grant_login(&self, login: &Login, source: Source) {
        let age = login.time.map_or(Duration::ZERO, |logged| {
            let age = Timestamp::now().duration_since(logged);
            Duration::try_from(age).unwrap_or(Duration::ZERO)
        });
        let _ = self.grant(login.ip, login.service, &login.user, age, source, None);
    }

    /// Writes the grant of a login `age` ago, on the terms of the network
    /// `ip` is in, unless the user is in a quota's cooldown; says so, with
    /// the uid of the process that reported the login, where a process did.
    /// Returns how long the grant lasts.
    fn grant(
        &self,
        ip: IpAddr,
        service: Service,
        user: &str,
        age: Duration,
        source: Source,
        reporter_uid: Option<u32>,
    ) -> Result<Duration> {
        let limits = self.policy.limits_for(ip);
        let Some(ttl) = limits.ttl.checked_sub(age).filter(|left| !left.is_zero()) else {
            tracing::debug!(%ip, "login {STALE}; not granted");
            bail!("the login is {STALE}");
        };
        let user = (!user.is_empty()).then_some(user);
        if let Some(left) = user.and_then(|user| self.sink.cooldown_left(user)) {
            tracing::info!(%ip, user, cooldown_left = %format_secs(left), "not granted: the user went over a quota");
            self.metrics.record_cooldown_refusal();
            bail!(
                "{} is over a quota for another {}",
                user.unwrap_or_default(),
                format_secs(left)
            );
        }
        let owner = Owner::now(ip, user, service.as_str(), source);
        match self.sink.grant(ip, limits.terms(ttl), &owner) {
            Ok(left) => {
                tracing::info!(%ip, service = service.as_str(), user, source = source.as_str(), reporter_uid, expires_in = %format_secs(left), "granted");
                self.metrics.record_grant(source.as_str(), service.as_str());
                Ok(left)
            }
            Err(e) => {
                tracing::error!(%ip, "could not write the grant: {e:#}");
                Err(e)
            }
        }
    }
}
