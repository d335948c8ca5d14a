//! Operator-supplied patterns for servers without a built-in parser.

use regex::bytes::Regex;

use crate::addr::parse_ip;
use crate::parser::Error;
use crate::Service;

/// A compiled custom pattern with a named `ip` group and optional `user`
/// and `service` groups.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    regex: Regex,
}

/// What a matching custom pattern found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Match {
    Login {
        ip: std::net::IpAddr,
        service: Service,
        user: Vec<u8>,
    },
    /// The pattern matched, but its `ip` or `service` text is unusable.
    Unusable(&'static str),
}

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Result<Pattern, Error> {
        let regex = Regex::new(pattern).map_err(|source| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            source: Box::new(source),
        })?;
        if !regex.capture_names().flatten().any(|name| name == "ip") {
            return Err(Error::PatternWithoutIp {
                pattern: pattern.to_owned(),
            });
        }
        Ok(Pattern { regex })
    }

    /// Matches `text` (`PROGRAM: MESSAGE`). The service defaults to POP3; a
    /// `service` group naming `pop…` or `imap…` (any case) chooses it.
    pub(crate) fn find(&self, text: &[u8]) -> Option<Match> {
        let captures = self.regex.captures(text)?;
        let group = |name| captures.name(name).map(|m| m.as_bytes());
        let Some(ip) = group("ip").and_then(parse_ip) else {
            return Some(Match::Unusable(
                "custom: matched, but the ip group is no address",
            ));
        };
        let service = match group("service") {
            None => Service::Pop3,
            Some(name) => match Service::from_name(name) {
                Some(service) => service,
                None => {
                    return Some(Match::Unusable(
                        "custom: matched, but the service group names neither pop3 nor imap",
                    ))
                }
            },
        };
        Some(Match::Login {
            ip,
            service,
            user: group("user").unwrap_or_default().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        let pattern = Pattern::new(
            r"^teapop: Successful login for (?P<user>\S+) .+ \[(?P<ip>[0-9a-f.:]+)\]$",
        )
        .unwrap();
        assert_eq!(
            pattern.find(b"teapop: Successful login for alice@example.org (x) [::ffff:192.0.2.10]"),
            Some(Match::Login {
                ip: "192.0.2.10".parse().unwrap(),
                service: Service::Pop3,
                user: b"alice@example.org".to_vec(),
            })
        );
        assert_eq!(
            pattern.find(b"postfix: Successful login for a b [192.0.2.10]"),
            None
        );
    }

    #[test]
    fn service_group() {
        let pattern = Pattern::new(r"^(?P<service>\w+): ok (?P<ip>\S+)$").unwrap();
        let service = |text: &[u8]| match pattern.find(text) {
            Some(Match::Login { service, .. }) => Some(service),
            _ => None,
        };
        assert_eq!(service(b"imaps: ok 192.0.2.1"), Some(Service::Imap));
        assert_eq!(service(b"POP3: ok 192.0.2.1"), Some(Service::Pop3));
        assert!(matches!(
            pattern.find(b"smtp: ok 192.0.2.1"),
            Some(Match::Unusable(_))
        ));
        assert!(matches!(
            pattern.find(b"imap: ok nowhere"),
            Some(Match::Unusable(_))
        ));
    }

    #[test]
    fn invalid_patterns() {
        let err = Pattern::new(r"login from (\S+)").unwrap_err();
        assert!(matches!(err, Error::PatternWithoutIp { .. }));
        assert!(err.to_string().contains("named group `ip`"), "{err}");
        let err = Pattern::new(r"login from (?P<ip>\S+").unwrap_err();
        assert!(matches!(err, Error::InvalidPattern { .. }));
        assert!(
            err.to_string().starts_with("invalid custom pattern"),
            "{err}"
        );
    }
}
