//! The parser: prefix, built-in servers, custom patterns, service filter.

use std::error::Error as StdError;
use std::fmt;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::custom::{self, Pattern};
use crate::prefix::{self, program_name, Envelope, Format};
use crate::servers::{self, Outcome};
use crate::time::Stamp;
use crate::{Login, Service, Verdict};

/// What [`Parser::new`] and the `FromStr` implementations reject.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A custom pattern is not a valid regular expression.
    InvalidPattern {
        pattern: String,
        source: Box<dyn StdError + Send + Sync>,
    },
    /// A custom pattern has no named group `ip`.
    PatternWithoutIp { pattern: String },
    /// Not a [`Format`] name.
    UnknownFormat(String),
    /// Not a [`Service`] name.
    UnknownService(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidPattern { pattern, source } => {
                write!(f, "invalid custom pattern {pattern:?}: {source}")
            }
            Error::PatternWithoutIp { pattern } => write!(
                f,
                "custom pattern {pattern:?} has no named group `ip` (write it as (?P<ip>…))"
            ),
            Error::UnknownFormat(name) => write!(
                f,
                "unknown log format {name:?} (expected auto, syslog, rfc5424, journal, dovecot-file or bare)"
            ),
            Error::UnknownService(name) => {
                write!(f, "unknown service {name:?} (expected pop3 or imap)")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::InvalidPattern { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// How a [`Parser`] reads lines.
#[derive(Clone, Debug)]
pub struct ParserOptions {
    /// The shape of the lines; [`Format::Auto`] recognises it per line.
    pub format: Format,
    /// Regular expressions with a named `ip` group (optional `user` and
    /// `service` groups), tried against `PROGRAM: MESSAGE` on lines that no
    /// built-in parser recognised.
    pub custom_patterns: Vec<String>,
    /// The zone of time stamps that carry no offset (syslog, journalctl
    /// `short`, Dovecot's `log_path`).
    pub timezone: TimeZone,
    /// The services whose logins grant.
    pub services: Vec<Service>,
}

impl Default for ParserOptions {
    /// Auto-detected format, no custom patterns, the system time zone, both
    /// services.
    fn default() -> ParserOptions {
        ParserOptions {
            format: Format::Auto,
            custom_patterns: Vec::new(),
            timezone: TimeZone::system(),
            services: vec![Service::Pop3, Service::Imap],
        }
    }
}

/// Turns log lines into [`Verdict`]s. Cheap to share between threads.
#[derive(Clone, Debug)]
pub struct Parser {
    format: Format,
    patterns: Vec<Pattern>,
    timezone: TimeZone,
    pop3: bool,
    imap: bool,
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
        })
    }

    /// Judges one log line (a trailing `\n` or `\r\n` is ignored). `now` is
    /// the time the line is read, from which year-less stamps get their year.
    pub fn parse(&self, line: &[u8], now: Timestamp) -> Verdict {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match prefix::split(self.format, line) {
            Ok(envelope) => self.judge(&envelope, |stamp| {
                stamp.and_then(|stamp| stamp.resolve(&self.timezone, now))
            }),
            Err(reason) => Verdict::NoGrant(reason.into()),
        }
    }

    /// Judges a message whose program and time are known apart from it, as
    /// in journal entries (`SYSLOG_IDENTIFIER`, `MESSAGE`, the entry's time).
    /// `program` may carry a `[pid]`.
    pub fn parse_message(&self, program: &str, message: &[u8], time: Option<Timestamp>) -> Verdict {
        let Some(program) = program_name(program.as_bytes()) else {
            return Verdict::NoGrant(prefix::UNRECOGNISED.into());
        };
        let envelope = Envelope {
            stamp: None,
            program,
            message,
        };
        self.judge(&envelope, |_| time)
    }

    /// Runs the built-in parsers, then the custom patterns, then the service
    /// filter. `time` turns the envelope's stamp into the login's time; it is
    /// called for grants only, so other lines cost no time-zone work.
    fn judge(
        &self,
        envelope: &Envelope<'_>,
        time: impl FnOnce(Option<Stamp>) -> Option<Timestamp>,
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
        Verdict::Grant(Login {
            ip,
            service,
            user,
            server,
            time: time(envelope.stamp),
        })
    }

    /// The first custom pattern that matches `PROGRAM: MESSAGE`.
    fn custom(&self, envelope: &Envelope<'_>) -> Option<custom::Match> {
        if self.patterns.is_empty() {
            return None;
        }
        let text = [envelope.program, b": ", envelope.message].concat();
        self.patterns.iter().find_map(|pattern| pattern.find(&text))
    }

    fn grants(&self, service: Service) -> bool {
        match service {
            Service::Pop3 => self.pop3,
            Service::Imap => self.imap,
        }
    }
}
