//! The error of the parser's configuration: its options and the names they
//! are given in.

use std::error::Error as StdError;
use std::fmt;

/// What [`Parser::new`](crate::Parser::new) and the `FromStr` implementations reject.
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
    /// Not a [`Format`](crate::Format) name.
    UnknownFormat(String),
    /// Not a [`Service`](crate::Service) name.
    UnknownService(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidPattern { pattern, source } => {
                // The regex crate draws the pattern and a caret over several
                // lines, then names the problem on the last one.
                let text = source.to_string();
                let last = text.lines().last().unwrap_or_default();
                let problem = last.strip_prefix("error: ").unwrap_or(last);
                write!(f, "invalid custom pattern {pattern:?}: {problem}")
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
