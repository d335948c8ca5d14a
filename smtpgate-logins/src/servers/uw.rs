//! The University of Washington `imapd` and `ipop3d` (UW IMAP 2007).
//!
//! Both log `KIND user=%.80s host=%.80s` where the host is `tcp_clienthost()`:
//! `name [ip]`, or `[ip]` without reverse DNS.
//!
//! * imapd: `Login user=… host=…`, `Authenticated user=… host=…` (2007:
//!   ` mech=…` follows);
//! * ipop3d: `Login user=… host=… nmsgs=n/m` (`Admin Login` for admin
//!   logins), `Auth user=…` and `APOP user=…` likewise; with ` no mailbox`
//!   instead of `nmsgs` the mailbox could not be opened, which does not
//!   grant;
//! * failures: `Login failed user=…`, `Login failure user=…`,
//!   `AUTHENTICATE … failure host=…`.
//!
//! The user name comes first. UW logins are system accounts, whose names
//! have no spaces, so a user name with a space is refused, and the line must
//! end right after the host or with the daemon's own trailer.
//!
//! UW cuts every field to 80 bytes (`%.80s`), so its lines stay far below
//! any syslog daemon's limit and are never cut or split. It does write a
//! failed login's user and authentication names as the client sent them,
//! line breaks included (an IMAP literal), and the failure line then ends
//! exactly as a success line does (` host=NAME [CLIENT]`): only the syslog
//! daemon keeps such a line break out of the file (rsyslog writes `#012`),
//! and [`crate::Stream`] refuses the second line if it lacks the log's
//! time stamp.

use super::fields::{host_and_ip, is_number, word};
use super::outcome::Outcome;
use crate::Service;

const SERVER: &str = "uw-imap";

const TAGS: [&[u8]; 4] = [b"imapd", b"imapsd", b"ipop3d", b"ipop3sd"];

const KINDS: [&[u8]; 5] = [
    b"Login user=",
    b"Admin Login user=",
    b"Authenticated user=",
    b"Auth user=",
    b"APOP user=",
];

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    if !TAGS.contains(&program) {
        return None;
    }
    if message.starts_with(b"Login fail") || message.starts_with(b"AUTHENTICATE ") {
        return Some(Outcome::Refused("uw-imap: login failed"));
    }
    let fields = KINDS.iter().find_map(|kind| message.strip_prefix(*kind))?;
    let service = Service::from_name(program)?;
    Some(login(service, fields).unwrap_or(Outcome::Refused("uw-imap: malformed login line")))
}

/// `USER host=HOST [TRAILER]`
fn login(service: Service, fields: &[u8]) -> Option<Outcome<'_>> {
    let (user, rest) = word(fields);
    let (ip, trailer) = host_and_ip(rest.strip_prefix(b"host=")?, false)?;
    if user.is_empty() || !is_trailer(trailer) {
        return None;
    }
    Some(Outcome::Login {
        ip,
        service,
        user,
        server: SERVER,
    })
}

/// Nothing, ` mech=NAME` (imapd) or ` nmsgs=N/M` (ipop3d).
fn is_trailer(trailer: &[u8]) -> bool {
    if trailer.is_empty() {
        return true;
    }
    if let Some(mechanism) = trailer.strip_prefix(b" mech=") {
        return !mechanism.is_empty()
            && mechanism
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    }
    trailer
        .strip_prefix(b" nmsgs=")
        .and_then(|counts| {
            let slash = memchr::memchr(b'/', counts)?;
            Some(is_number(&counts[..slash]) && is_number(&counts[slash + 1..]))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes() {
        for (program, message, service) in [
            (
                &b"imapd"[..],
                &b"Login user=alice host=host.example [192.0.2.10]"[..],
                Service::Imap,
            ),
            (
                b"imapd",
                b"Authenticated user=alice host=[192.0.2.10] mech=PLAIN",
                Service::Imap,
            ),
            (
                b"ipop3d",
                b"Login user=alice host=host.example [192.0.2.10] nmsgs=3/5",
                Service::Pop3,
            ),
            (
                b"ipop3d",
                b"APOP user=alice host=[192.0.2.10] nmsgs=0/0",
                Service::Pop3,
            ),
        ] {
            assert_eq!(
                recognise(program, message),
                Some(Outcome::Login {
                    ip: "192.0.2.10".parse().unwrap(),
                    service,
                    user: b"alice",
                    server: SERVER,
                }),
                "{message:?}"
            );
        }
    }

    #[test]
    fn refusals() {
        for (program, message) in [
            (
                &b"imapd"[..],
                &b"Login failed user=alice auth=alice host=[192.0.2.10]"[..],
            ),
            (b"ipop3d", b"Login user=alice host=[192.0.2.10] no mailbox"),
            (
                b"imapd",
                b"Login user=y host=[6.6.6.6] auth=x host=host.example [192.0.2.10]",
            ),
            (b"imapd", b"Login user=a b host=[192.0.2.10]"),
            (
                b"imapd",
                b"Login user=alice host=a-very-long-name-that-got-cut [192.0",
            ),
        ] {
            assert!(
                matches!(recognise(program, message), Some(Outcome::Refused(_))),
                "{message:?}"
            );
        }
        assert_eq!(
            recognise(b"imapd", b"Logout user=alice host=[192.0.2.10]"),
            None
        );
    }
}
