//! Courier-IMAP's POP3 and IMAP servers.
//!
//! The login and server processes write to standard error, which
//! `courierlogger` passes to syslog under the daemon's name (`pop3d`,
//! `imapd`, `pop3d-ssl`, `imapd-ssl`; older releases `courierpop3login`,
//! `imaplogin`), one syslog message per line. Newer releases lead the text
//! with a level (`INFO: `), which `courierlogger` strips; a journal that
//! takes standard error directly keeps it.
//!
//! * success: `LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[51234]`,
//!   since 4.x followed by `, protocol=IMAP` and, over TLS, by `, stls=1`
//!   (POP3) or `, starttls=1` (IMAP); releases before 4.x write neither
//!   `port` nor (POP3) `protocol`: `LOGIN, user=alice, ip=[192.0.2.10]`;
//! * failure: `LOGIN FAILED, user=alice, ip=[…]` (and `method=` variants).
//!
//! The user name stands before the address. A success line must hold
//! exactly one `, ip=[` and must end with the fields that follow the address
//! in the server's format. A failed login's user name cannot carry a line
//! break: POP3 reads it from one command line, IMAP `LOGIN` takes atoms and
//! quoted strings only, and newer releases escape control characters.
//!
//! # Cut lines
//!
//! `courierlogger` reads standard error with `fgets` into a 512-byte buffer
//! and throws away the rest of a longer line (`liblog/logger.c`), so a line
//! a client padded to that length (a failure's user name holds what the
//! client typed) loses whatever followed. See [`MAX_MESSAGE`].

use memchr::memmem;

use super::fields::{bracketed_ip, is_number};
use super::outcome::Outcome;
use crate::Service;

const SERVER: &str = "courier";

const TAGS: [&[u8]; 8] = [
    b"pop3d",
    b"pop3d-ssl",
    b"imapd",
    b"imapd-ssl",
    b"courierpop3login",
    b"courierpop3d",
    b"pop3login",
    b"imaplogin",
];

/// The longest message a success line is taken from.
///
/// Stops lines that `courierlogger` cut: it keeps 511 bytes of a line, 505
/// once it has stripped `INFO: `, so every cut line is at least 505 bytes
/// long, and what the server wrote after the cut (the real address of a
/// padded failure, say) is gone. It cannot refuse a real login: one that
/// long needs a user name of over 400 bytes, which no mail account has.
pub(crate) const MAX_MESSAGE: usize = 504;

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    if !TAGS.contains(&program) {
        return None;
    }
    let message = message.strip_prefix(b"INFO: ").unwrap_or(message);
    if message.starts_with(b"LOGIN FAILED") {
        return Some(Outcome::Refused("courier: login failed"));
    }
    let fields = message.strip_prefix(b"LOGIN, user=")?;
    if message.len() > MAX_MESSAGE {
        return Some(Outcome::Refused(
            "courier: longer than courierlogger keeps (a cut line)",
        ));
    }
    Some(login(program, fields).unwrap_or(Outcome::Refused("courier: malformed login line")))
}

/// `USER, ip=[IP][, port=[PORT]][, protocol=IMAP|POP3][, stls=1|, starttls=1]`
fn login<'a>(program: &[u8], fields: &'a [u8]) -> Option<Outcome<'a>> {
    const IP: &[u8] = b", ip=";
    let ip_at = memmem::find(fields, IP)?;
    let after_ip = &fields[ip_at + IP.len()..];
    if memmem::find(after_ip, IP).is_some() {
        return None;
    }
    let (ip, mut rest) = bracketed_ip(after_ip)?;
    let tail = rest;
    if let Some(port) = rest.strip_prefix(b", port=[") {
        let port_end = memchr::memchr(b']', port)?;
        if !is_number(&port[..port_end]) {
            return None;
        }
        rest = &port[port_end + 1..];
    }
    let mut service = Service::from_name(program);
    if let Some(after) = rest.strip_prefix(b", protocol=") {
        let end = memchr::memchr(b',', after).unwrap_or(after.len());
        service = Some(match &after[..end] {
            b"IMAP" => Service::Imap,
            b"POP3" => Service::Pop3,
            _ => return None,
        });
        rest = &after[end..];
    }
    if !matches!(rest, b"" | b", stls=1" | b", starttls=1") {
        return None;
    }
    // An IMAP failure whose user name carried a line break (an IMAP literal,
    // where a release takes one) leaves a second line ending `…, ip=[CLIENT]`;
    // an IMAP success line must carry what that one cannot, a port or the
    // protocol. Every IMAP release writes one of them (the oldest lines end
    // `, protocol=IMAP`); a POP3 user name cannot carry a line break.
    if service == Some(Service::Imap) && tail.is_empty() {
        return None;
    }
    Some(Outcome::Login {
        ip,
        service: service?,
        user: &fields[..ip_at],
        server: SERVER,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login_ip(program: &[u8], message: &[u8]) -> Option<(String, Service, String)> {
        match recognise(program, message)? {
            Outcome::Login {
                ip, service, user, ..
            } => Some((
                ip.to_string(),
                service,
                String::from_utf8_lossy(user).into_owned(),
            )),
            Outcome::Refused(_) => None,
        }
    }

    #[test]
    fn successes() {
        assert_eq!(
            login_ip(
                b"pop3d",
                b"LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[51234]"
            ),
            Some(("192.0.2.10".into(), Service::Pop3, "alice".into()))
        );
        assert_eq!(
            login_ip(
                b"imapd-ssl",
                b"INFO: LOGIN, user=bob@example.org, ip=[2001:db8::5], port=[4711], protocol=IMAP"
            ),
            Some((
                "2001:db8::5".into(),
                Service::Imap,
                "bob@example.org".into()
            ))
        );
        assert_eq!(
            login_ip(
                b"pop3d",
                b"LOGIN, user=c, ip=[192.0.2.11], port=[1], protocol=POP3, stls=1"
            ),
            Some(("192.0.2.11".into(), Service::Pop3, "c".into()))
        );
        assert_eq!(
            login_ip(
                b"imapd-ssl",
                b"LOGIN, user=d, ip=[::ffff:192.0.2.12], port=[4712], protocol=IMAP, starttls=1"
            ),
            Some(("192.0.2.12".into(), Service::Imap, "d".into()))
        );
        for (program, message, service) in [
            (
                &b"courierpop3login"[..],
                &b"LOGIN, user=e, ip=[192.0.2.13]"[..],
                Service::Pop3,
            ),
            (
                b"imapd",
                b"LOGIN, user=e, ip=[192.0.2.13], protocol=IMAP",
                Service::Imap,
            ),
            (
                b"imaplogin",
                b"LOGIN, user=e, ip=[192.0.2.13], protocol=IMAP",
                Service::Imap,
            ),
        ] {
            assert_eq!(
                login_ip(program, message),
                Some(("192.0.2.13".into(), service, "e".into())),
                "{message:?}"
            );
        }
    }

    #[test]
    fn lines_courierlogger_cut() {
        let mut padded = b"LOGIN, user=".to_vec();
        padded.resize(480, b'x');
        padded.extend_from_slice(b", ip=[198.51.100.9], port=[1], protocol=IMAPP");
        padded.truncate(505);
        assert_eq!(
            recognise(b"imapd", &padded),
            Some(Outcome::Refused(
                "courier: longer than courierlogger keeps (a cut line)"
            ))
        );
    }

    #[test]
    fn refusals() {
        for message in [
            &b"LOGIN FAILED, user=alice, ip=[::ffff:192.0.2.10]"[..],
            b"LOGIN, user=y, ip=[6.6.6.6], port=[1], protocol=IMAP, ip=[::ffff:192.0.2.66]",
            b"LOGIN, user=y, ip=[192.0.2.10]",
            b"LOGIN, user=y, ip=[192.0.2.10], port=[x]",
            b"LOGIN, user=y, ip=[192.0.2.10], port=[1], protocol=IMAPS",
            b"LOGIN, user=y, ip=[192.0.2.10], starttls=2",
            b"LOGIN, user=y, ip=[192.0.2.10], port=[1], extra",
        ] {
            assert!(
                matches!(recognise(b"imapd", message), Some(Outcome::Refused(_))),
                "{message:?}"
            );
        }
        assert_eq!(
            recognise(b"imapd", b"Connection, ip=[::ffff:192.0.2.10]"),
            None
        );
        assert_eq!(
            recognise(b"postfix/smtpd", b"LOGIN, user=a, ip=[192.0.2.1], port=[1]"),
            None
        );
    }
}
