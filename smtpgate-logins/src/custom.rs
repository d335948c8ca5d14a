//! Operator-supplied patterns for servers without a built-in parser.

use regex::bytes::Regex;
use regex_syntax::hir::literal::Extractor;

use crate::addr::parse_ip;
use crate::error::Error;
use crate::Service;

/// A compiled custom pattern with a named `ip` group and optional `user`
/// and `service` groups, anchored at both ends: it must match a whole
/// `TAG: MESSAGE`, from the first byte of the program tag to the last of
/// the message. Unanchored, `from (?P<ip>\S+)` would also match the
/// client text that an MTA copies into its own line (`from=<… from
/// 6.6.6.6>`).
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    regex: Regex,
    /// The pattern as the operator wrote it, for messages.
    source: String,
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
        let invalid = |source| Error::InvalidPattern {
            pattern: pattern.to_owned(),
            source: Box::new(source),
        };
        // Compiled alone first, so that a stray `)` cannot close the
        // anchoring group early and still compile.
        let alone = Regex::new(pattern).map_err(invalid)?;
        if !alone.capture_names().flatten().any(|name| name == "ip") {
            return Err(Error::PatternWithoutIp {
                pattern: pattern.to_owned(),
            });
        }
        let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)?;
        Ok(Pattern {
            regex,
            source: pattern.to_owned(),
        })
    }

    /// Matches the line of `program` (whose tag was written `program[pid]`
    /// if `pid`): `PROGRAM[PID]: MESSAGE` first, as the line has it, then
    /// `PROGRAM: MESSAGE`. The service defaults to POP3; a `service` group
    /// naming `pop…` or `imap…` (any case) chooses it.
    pub(crate) fn find(&self, program: &[u8], pid: Option<&[u8]>, message: &[u8]) -> Option<Match> {
        let with_pid = pid.map(|pid| [program, b"[", pid, b"]: ", message].concat());
        let without = [program, b": ", message].concat();
        let captures = with_pid
            .as_deref()
            .and_then(|text| self.regex.captures(text))
            .or_else(|| self.regex.captures(&without))?;
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

    /// A warning if the pattern can match a line of a program it does not
    /// name: unless every text it matches starts with the same fixed
    /// program name and the `[` or `:` that ends it, some other program's
    /// line (`postfix/smtpd[…]: …` quoting a client) may match it too.
    pub(crate) fn foreign_lines_warning(&self) -> Option<String> {
        let names_program = regex_syntax::parse(&self.source).ok().is_some_and(|hir| {
            let prefixes = Extractor::new().extract(&hir);
            prefixes.literals().is_some_and(|literals| {
                !literals.is_empty()
                    && literals.iter().all(|literal| {
                        let bytes = literal.as_bytes();
                        bytes
                            .iter()
                            .position(|&b| matches!(b, b':' | b'['))
                            .is_some_and(|end| end > 0 && !bytes[..end].contains(&b' '))
                    })
            })
        });
        (!names_program).then(|| {
            format!(
                "custom pattern {:?} does not start with a fixed program name: it can match the line of \
                 another program (an MTA logging a client's text); start it with the program's tag, \
                 e.g. `mypopd\\[\\d+\\]: `",
                self.source
            )
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
            pattern.find(
                b"teapop",
                None,
                b"Successful login for alice@example.org (x) [::ffff:192.0.2.10]"
            ),
            Some(Match::Login {
                ip: "192.0.2.10".parse().unwrap(),
                service: Service::Pop3,
                user: b"alice@example.org".to_vec(),
            })
        );
        assert_eq!(
            pattern.find(b"postfix", None, b"Successful login for a b [192.0.2.10]"),
            None
        );
    }

    #[test]
    fn service_group() {
        let pattern = Pattern::new(r"^(?P<service>\w+): ok (?P<ip>\S+)$").unwrap();
        let find = |text: &[u8]| {
            let colon = text.iter().position(|&b| b == b':').unwrap();
            pattern.find(&text[..colon], None, &text[colon + 2..])
        };
        let service = |text: &[u8]| match find(text) {
            Some(Match::Login { service, .. }) => Some(service),
            _ => None,
        };
        assert_eq!(service(b"imaps: ok 192.0.2.1"), Some(Service::Imap));
        assert_eq!(service(b"POP3: ok 192.0.2.1"), Some(Service::Pop3));
        assert!(matches!(
            find(b"smtp: ok 192.0.2.1"),
            Some(Match::Unusable(_))
        ));
        assert!(matches!(
            find(b"imap: ok nowhere"),
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

    #[test]
    fn anchored_at_the_tag_and_the_end() {
        let pattern = Pattern::new(r"mypopd\[\d+\]: login ok .* from (?P<ip>\S+)").unwrap();
        let ip = |program: &[u8], pid: Option<&[u8]>, message: &[u8]| match pattern
            .find(program, pid, message)
        {
            Some(Match::Login { ip, .. }) => Some(ip.to_string()),
            _ => None,
        };
        assert_eq!(
            ip(
                b"mypopd",
                Some(b"812"),
                b"login ok user alice from 192.0.2.7"
            ),
            Some("192.0.2.7".into())
        );
        // Another program's line that quotes the text.
        assert_eq!(
            ip(
                b"postfix/smtpd",
                Some(b"9"),
                b"reject: from=<mypopd[1]: login ok x from 6.6.6.6>"
            ),
            None
        );
        // Text after the address is not skipped.
        assert_eq!(
            ip(b"mypopd", Some(b"812"), b"login ok x from 6.6.6.6 failed"),
            None
        );
        assert!(matches!(
            Pattern::new("a)(?P<ip>b"),
            Err(Error::InvalidPattern { .. })
        ));
    }

    #[test]
    fn patterns_that_do_not_name_their_program_are_warned_about() {
        let warns = |p: &str| Pattern::new(p).unwrap().foreign_lines_warning().is_some();
        assert!(!warns(r"mypopd\[\d+\]: login ok .* from (?P<ip>\S+)"));
        assert!(!warns(
            r"^teapop: Successful login for (?P<user>\S+) .+ \[(?P<ip>[0-9.]+)\]$"
        ));
        assert!(!warns(r"(?:pop|imap)d: ok (?P<ip>\S+)"));
        assert!(warns(r"login ok .* from (?P<ip>\S+)"));
        assert!(warns(r".*: from (?P<ip>\S+)"));
        assert!(warns(r"(?P<service>\w+): ok (?P<ip>\S+)"));
        assert!(warns(r"a.*: ok (?P<ip>\S+)"));
    }
}
