//! The parser: prefix, built-in servers, custom patterns, service, host and
//! time checks.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::addr::customer_address;
use crate::custom::{self, Pattern};
use crate::error::Error;
use crate::prefix::{self, split_tag, Envelope, Format, Shape};
use crate::servers::{self, Outcome};
use crate::time::{self, StampError};
use crate::{Login, Reason, Service, Verdict};

/// How a [`Parser`] reads lines.
#[derive(Clone, Debug)]
pub struct ParserOptions {
    /// The shape of the lines; [`Format::Auto`] recognises it per line.
    pub format: Format,
    /// Regular expressions with a named `ip` group (optional `user` and
    /// `service` groups), each matched against a whole `TAG: MESSAGE` of
    /// lines that no built-in parser recognised.
    pub custom_patterns: Vec<String>,
    /// The zone of time stamps that carry no offset (syslog, journalctl
    /// `short`, Dovecot's `log_path`).
    pub timezone: TimeZone,
    /// The services whose logins grant.
    pub services: Vec<Service>,
    /// If not empty, only lines whose host field names one of these hosts
    /// (in any case) grant; lines without a host field do not.
    pub trusted_hosts: Vec<String>,
}

impl Default for ParserOptions {
    /// Auto-detected format, no custom patterns, the system time zone, both
    /// services, any host.
    fn default() -> ParserOptions {
        ParserOptions {
            format: Format::Auto,
            custom_patterns: Vec::new(),
            timezone: TimeZone::system(),
            services: vec![Service::Pop3, Service::Imap],
            trusted_hosts: Vec::new(),
        }
    }
}

/// A journal entry, whose fields the journal keeps apart.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// `SYSLOG_IDENTIFIER`, which may carry a `[pid]`.
    pub identifier: &'a str,
    /// `MESSAGE`.
    pub message: &'a [u8],
    /// When the entry was logged.
    pub time: Option<Timestamp>,
    /// `_HOSTNAME`.
    pub host: Option<&'a str>,
}

/// Turns log lines into [`Verdict`]s. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct Parser {
    format: Format,
    patterns: Vec<Pattern>,
    timezone: TimeZone,
    pop3: bool,
    imap: bool,
    /// Lower-case.
    trusted_hosts: Vec<Vec<u8>>,
}

impl Parser {
    /// Compiles the options; fails on an invalid custom pattern or one
    /// without an `ip` group.
    pub fn new(options: ParserOptions) -> Result<Parser, Error> {
        let patterns = options
            .custom_patterns
            .iter()
            .map(|pattern| Pattern::new(pattern))
            .collect::<Result<_, _>>()?;
        Ok(Parser {
            format: options.format,
            patterns,
            timezone: options.timezone,
            pop3: options.services.contains(&Service::Pop3),
            imap: options.services.contains(&Service::Imap),
            trusted_hosts: options
                .trusted_hosts
                .iter()
                .map(|host| host.to_ascii_lowercase().into_bytes())
                .collect(),
        })
    }

    /// What is risky about the options, one sentence each: custom patterns
    /// that can match a line of another program.
    pub fn warnings(&self) -> Vec<String> {
        self.patterns
            .iter()
            .filter_map(Pattern::foreign_lines_warning)
            .collect()
    }

    /// Judges one line on its own (a trailing `\n` or `\r\n` is ignored).
    /// `now` is the time the line is read, from which year-less stamps get
    /// their year. The lines of a log are better judged by a [`Stream`](crate::Stream),
    /// which also knows what the log's other lines look like.
    pub fn parse(&self, line: &[u8], now: Timestamp) -> Verdict {
        match prefix::split(self.format, strip_line_end(line)) {
            Ok(envelope) => self.judge(&envelope, now),
            Err(reason) => Verdict::NoGrant(reason.into()),
        }
    }

    /// Judges a journal entry, whose identifier, host and time the journal
    /// keeps apart from the message.
    pub fn parse_entry(&self, entry: &Entry<'_>, now: Timestamp) -> Verdict {
        let Some((program, pid)) = split_tag(entry.identifier.as_bytes()) else {
            return Verdict::NoGrant(prefix::UNRECOGNISED.into());
        };
        let envelope = Envelope {
            stamp: None,
            host: entry.host.map(str::as_bytes),
            program,
            pid,
            message: entry.message,
            shape: Shape::Bare,
        };
        self.judge_with(&envelope, || {
            entry
                .time
                .map(|time| time::not_in_future(time, now))
                .transpose()
        })
    }

    pub(crate) fn format(&self) -> Format {
        self.format
    }

    /// Judges a line taken apart, whose stamp is read against `now`.
    pub(crate) fn judge(&self, envelope: &Envelope<'_>, now: Timestamp) -> Verdict {
        self.judge_with(envelope, || {
            envelope
                .stamp
                .map(|stamp| stamp.resolve(&self.timezone, now))
                .transpose()
        })
    }

    /// Runs the built-in parsers, then the custom patterns, then the service,
    /// host and time checks. `time` gives the login's time; it is called for
    /// logins only, so other lines cost no time-zone work.
    fn judge_with(
        &self,
        envelope: &Envelope<'_>,
        time: impl FnOnce() -> Result<Option<Timestamp>, StampError>,
    ) -> Verdict {
        let (ip, service, user, server) =
            match servers::recognise(envelope.program, envelope.message) {
                Some(Outcome::Login {
                    ip,
                    service,
                    user,
                    server,
                }) => (
                    ip,
                    service,
                    String::from_utf8_lossy(user).into_owned(),
                    server,
                ),
                Some(Outcome::Refused(reason)) => return Verdict::NoGrant(reason.into()),
                None => match self.custom(envelope) {
                    Some(custom::Match::Login { ip, service, user }) => (
                        ip,
                        service,
                        String::from_utf8_lossy(&user).into_owned(),
                        "custom",
                    ),
                    Some(custom::Match::Unusable(reason)) => {
                        return Verdict::NoGrant(reason.into())
                    }
                    None => return Verdict::NoGrant("not a login line".into()),
                },
            };
        if !self.grants(service) {
            return Verdict::NoGrant(
                match service {
                    Service::Pop3 => "service pop3 not granting",
                    Service::Imap => "service imap not granting",
                }
                .into(),
            );
        }
        if let Err(reason) = customer_address(ip) {
            return Verdict::NoGrant(reason.into());
        }
        if let Some(reason) = self.untrusted_host(envelope.host) {
            return Verdict::NoGrant(reason);
        }
        match time() {
            Ok(time) => Verdict::Grant(Login {
                ip,
                service,
                user,
                server,
                time,
            }),
            Err(error) => Verdict::NoGrant(error.reason().into()),
        }
    }

    /// Why a login from `host` does not grant, if trusted hosts are set and
    /// it is none of them.
    fn untrusted_host(&self, host: Option<&[u8]>) -> Option<Reason> {
        if self.trusted_hosts.is_empty() {
            return None;
        }
        let Some(host) = host else {
            return Some("no host field, and only trusted hosts grant".into());
        };
        let trusted = self
            .trusted_hosts
            .iter()
            .any(|name| name.eq_ignore_ascii_case(host));
        (!trusted).then(|| {
            format!(
                "host {} is not a trusted host",
                String::from_utf8_lossy(host)
            )
            .into()
        })
    }

    /// The first custom pattern that matches the line.
    fn custom(&self, envelope: &Envelope<'_>) -> Option<custom::Match> {
        self.patterns
            .iter()
            .find_map(|pattern| pattern.find(envelope.program, envelope.pid, envelope.message))
    }

    fn grants(&self, service: Service) -> bool {
        match service {
            Service::Pop3 => self.pop3,
            Service::Imap => self.imap,
        }
    }
}

/// `line` without a trailing `\n` or `\r\n`.
pub(crate) fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
