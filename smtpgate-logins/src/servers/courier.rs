//! Courier-IMAP's POP3 and IMAP servers.
//!
//! The login and server processes write to standard error, which
//! `courierlogger` passes to syslog under the daemon's name (`pop3d`,
//! `imapd`, `pop3d-ssl`, `imapd-ssl`; older releases `courierpop3login`,
//! `imaplogin`). Newer releases lead the text with a level (`INFO: `).
//!
//! * success: `LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[51234]`,
//!   since 4.x followed by `, protocol=IMAP` and for POP3 with STLS by
//!   `, stls=1`;
//! * failure: `LOGIN FAILED, user=alice, ip=[…]` (and `method=` variants).
//!
//! The user name is the client's text and stands before the address. A
//! success line must hold exactly one `, ip=[` and must end with the fields
//! that follow the address in the server's format; an IMAP literal with a
//! line break in a failed login's user name therefore yields lines that end
//! in `, ip=[…]` alone and are refused.

use memchr::memmem;

use super::{bracketed_ip, is_number, Outcome};
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

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    if !TAGS.contains(&program) {
        return None;
    }
    let message = message.strip_prefix(b"INFO: ").unwrap_or(message);
    if message.starts_with(b"LOGIN FAILED") {
        return Some(Outcome::Refused("courier: login failed"));
    }
    let fields = message.strip_prefix(b"LOGIN, user=")?;
    Some(login(program, fields).unwrap_or(Outcome::Refused("courier: malformed login line")))
}

/// `USER, ip=[IP], port=[PORT][, protocol=NAME][, stls=1]`
fn login<'a>(program: &[u8], fields: &'a [u8]) -> Option<Outcome<'a>> {
    const IP: &[u8] = b", ip=";
    let ip_at = memmem::find(fields, IP)?;
    let after_ip = &fields[ip_at + IP.len()..];
    if memmem::find(after_ip, IP).is_some() {
        return None;
    }
    let (ip, rest) = bracketed_ip(after_ip)?;
    let port = rest.strip_prefix(b", port=[")?;
    let port_end = memchr::memchr(b']', port)?;
    if !is_number(&port[..port_end]) {
        return None;
    }
    let mut rest = &port[port_end + 1..];
    let mut protocol = None;
    if let Some(after) = rest.strip_prefix(b", protocol=") {
        let end = memchr::memchr(b',', after).unwrap_or(after.len());
        protocol = Some(&after[..end]);
        rest = &after[end..];
    }
    if !matches!(rest, b"" | b", stls=1") {
        return None;
    }
    let service = protocol
        .and_then(Service::from_name)
        .or_else(|| Service::from_name(program))?;
    Some(Outcome::Login {
        ip,
        service,
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
    }

    #[test]
    fn refusals() {
        for message in [
            &b"LOGIN FAILED, user=alice, ip=[::ffff:192.0.2.10]"[..],
            b"LOGIN, user=y, ip=[6.6.6.6], port=[1], protocol=IMAP, ip=[::ffff:192.0.2.66]",
            b"LOGIN, user=y, ip=[192.0.2.10]",
            b"LOGIN, user=y, ip=[192.0.2.10], port=[x]",
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
