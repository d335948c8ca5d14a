//! Cyrus IMAP's `imapd` and `pop3d`.
//!
//! Cyrus logs under the service name from `cyrus.conf` (`imap`, `imaps`,
//! `pop3`, `pop3s`), by default after the `syslog_prefix` (`cyrus/imap`):
//!
//! `login: CLIENTHOST USER[+MAGIC] MECH[+TLS] User logged in[ SESSIONID=<…>]`
//!
//! where CLIENTHOST is `name [ip]`, `[ip]`, or in older releases `name[ip]`.
//! Failures are `badlogin: …`. The address stands before the user name, so
//! the user cannot move it; the user name and mechanism are single words,
//! and the line must end with `User logged in` and at most a session id.
//! Cyrus passes client text through `beautify_string()`, which writes
//! control characters as `^X`, so no line of Cyrus is split by a client;
//! and it writes its lines with `syslog()`, whose messages it keeps short.
//!
//! An anonymous login (`login: CLIENTHOST anonymous PASSWORD`, where
//! `allowanonymouslogin` is on) proves no password, and the "password" is
//! any text the client chose, `PLAIN User logged in` included: it never
//! grants. No account can be named `anonymous`, which Cyrus reserves.

use super::fields::{host_and_ip, word};
use super::outcome::Outcome;
use crate::Service;

const SERVER: &str = "cyrus";

const SERVICES: [&[u8]; 6] = [b"imap", b"imaps", b"pop3", b"pop3s", b"imapd", b"pop3d"];

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    let service_name = match memchr::memrchr(b'/', program) {
        Some(slash) => &program[slash + 1..],
        None => program,
    };
    if !SERVICES.contains(&service_name) {
        return None;
    }
    if message.starts_with(b"badlogin: ") {
        return Some(Outcome::Refused("cyrus: login failed"));
    }
    let rest = message.strip_prefix(b"login: ")?;
    let service = Service::from_name(service_name)?;
    Some(login(service, rest).unwrap_or(Outcome::Refused("cyrus: malformed login line")))
}

fn login(service: Service, text: &[u8]) -> Option<Outcome<'_>> {
    let (ip, rest) = host_and_ip(text, true)?;
    let (user, rest) = word(rest.strip_prefix(b" ")?);
    let (mechanism, rest) = word(rest);
    if user.is_empty() || mechanism.is_empty() {
        return None;
    }
    if user.eq_ignore_ascii_case(b"anonymous") {
        return Some(Outcome::Refused("cyrus: anonymous login"));
    }
    let tail = rest.strip_prefix(b"User logged in")?;
    if !(tail.is_empty() || is_session_id(tail)) {
        return None;
    }
    Some(Outcome::Login {
        ip,
        service,
        user,
        server: SERVER,
    })
}

/// ` SESSIONID=<cyrus-1234-1606075501-1-123>`
fn is_session_id(tail: &[u8]) -> bool {
    tail.strip_prefix(b" SESSIONID=<")
        .and_then(|id| id.strip_suffix(b">"))
        .is_some_and(|id| {
            id.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes() {
        let got = recognise(
            b"cyrus/pop3",
            b"login: host.example [192.0.2.10] alice plaintext+TLS User logged in SESSIONID=<cyrus-1-2-3>",
        );
        assert_eq!(
            got,
            Some(Outcome::Login {
                ip: "192.0.2.10".parse().unwrap(),
                service: Service::Pop3,
                user: b"alice",
                server: SERVER,
            })
        );
        let got = recognise(
            b"pop3",
            b"login: host.example[192.0.2.10] alice plaintext User logged in",
        );
        assert!(matches!(got, Some(Outcome::Login { .. })));
        let got = recognise(b"imaps", b"login: [2001:db8::1] bob PLAIN User logged in");
        assert!(matches!(
            got,
            Some(Outcome::Login {
                service: Service::Imap,
                ..
            })
        ));
    }

    #[test]
    fn refusals() {
        for message in [
            &b"badlogin: host.example [192.0.2.10] plaintext alice SASL(-13): authentication failure"[..],
            b"login: [6.6.6.6] y plaintext User logged in SASL(-13): authentication failure: checkpass failed",
            b"login: host.example [192.0.2.10] two words plaintext User logged in",
            b"login: h\"x [192.0.2.10] alice plaintext User logged in",
            b"login: [192.0.2.10] alice plaintext User logged in SESSIONID=<a b>",
            b"login: host.example [192.0.2.10] anonymous PLAIN User logged in",
            b"login: host.example  [192.0.2.10] alice plaintext User logged in",
            b"login:  [192.0.2.10] alice plaintext User logged in",
        ] {
            assert!(matches!(recognise(b"imap", message), Some(Outcome::Refused(_))), "{message:?}");
        }
        assert_eq!(
            recognise(b"smtpd", b"login: [192.0.2.10] a b User logged in"),
            None
        );
    }
}
