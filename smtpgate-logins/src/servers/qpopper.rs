//! Qualcomm's Qpopper.
//!
//! Qpopper 4 (compiled with `LOG_LOGIN`, the default) logs after a
//! successful authentication
//!
//! `(v4.0.9) POP login by user "alice" at (host.example) 192.0.2.10`
//!
//! and, with statistics enabled (`-s`), at the end of an authenticated
//! session
//!
//! `Stats: alice 0 0 2 4711 host.example 192.0.2.10`
//!
//! (user, messages and bytes deleted, messages and bytes left, client host
//! and address). Qpopper 4 appends its source position (` [pop_log.c:244]`)
//! to each line. Failures read `alice at host.example (192.0.2.10): -ERR …`.
//!
//! The user name stands before the address in both lines, so it must be one
//! word without quotes, and the line must end right after the address.
//! Both lines end with the address, so a line cut short inside it cannot be
//! told from a whole one; syslog daemons cut at 1 KiB or more, far beyond
//! Qpopper's lines, whose longest field is the client's host name (at most
//! 253 bytes), and Qpopper itself neither cuts nor splits them.
//!
//! Lines are matched at the start of the message under Qpopper's own tag, so
//! a `MAIL FROM:<"POP login by user …">` that an MTA logs (the historical
//! exploit against pop-before-smtp daemons) never matches.

use memchr::memmem;

use super::fields::{is_host_name, is_number, word};
use super::outcome::Outcome;
use crate::addr::parse_ip;
use crate::Service;

const SERVER: &str = "qpopper";

const TAGS: [&[u8]; 4] = [b"popper", b"qpopper", b"in.qpopper", b"in.popper"];

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    if !TAGS.contains(&program) {
        return None;
    }
    let message = strip_source_position(message);
    let parsed = if let Some(stats) = message.strip_prefix(b"Stats: ") {
        stats_line(stats)
    } else if let Some(login) = strip_version(message).strip_prefix(b"POP login by user \"") {
        login_line(login)
    } else if memmem::find(message, b"): -ERR").is_some() {
        return Some(Outcome::Refused("qpopper: error reply"));
    } else {
        return None;
    };
    Some(parsed.unwrap_or(Outcome::Refused("qpopper: malformed login line")))
}

/// `alice" at (host.example) 192.0.2.10`
fn login_line(text: &[u8]) -> Option<Outcome<'_>> {
    let quote = memchr::memchr(b'"', text)?;
    let user = &text[..quote];
    let host_and_ip = text[quote..].strip_prefix(b"\" at (")?;
    let close = memchr::memchr(b')', host_and_ip)?;
    let host = &host_and_ip[..close];
    let ip_text = host_and_ip[close + 1..].strip_prefix(b" ")?;
    if user.is_empty() || user.contains(&b' ') || !is_client_host(host) {
        return None;
    }
    grant(user, ip_text)
}

/// `alice 0 0 2 4711 host.example 192.0.2.10`
fn stats_line(text: &[u8]) -> Option<Outcome<'_>> {
    let (user, mut rest) = word(text);
    for _ in 0..4 {
        let (count, after) = word(rest);
        if !is_number(count) {
            return None;
        }
        rest = after;
    }
    let (host, ip_text) = word(rest);
    if user.is_empty() || user.contains(&b'"') || !is_client_host(host) {
        return None;
    }
    grant(user, ip_text)
}

fn grant<'a>(user: &'a [u8], ip_text: &[u8]) -> Option<Outcome<'a>> {
    Some(Outcome::Login {
        ip: parse_ip(ip_text)?,
        service: Service::Pop3,
        user,
        server: SERVER,
    })
}

/// The client host: a name, or the address when it has none (which may be
/// IPv6 and hold colons).
fn is_client_host(host: &[u8]) -> bool {
    is_host_name(host) || parse_ip(host).is_some()
}

/// Removes Qpopper 4's ` [file.c:line]` suffix.
fn strip_source_position(message: &[u8]) -> &[u8] {
    let Some(inner) = message.strip_suffix(b"]") else {
        return message;
    };
    let Some(open) = memmem::rfind(inner, b" [") else {
        return message;
    };
    let position = &inner[open + 2..];
    let is_position = memchr::memchr(b':', position).is_some_and(|colon| {
        position[..colon].ends_with(b".c") && is_number(&position[colon + 1..])
    });
    if is_position {
        &message[..open]
    } else {
        message
    }
}

/// Removes a leading `(v4.0.9) `.
fn strip_version(message: &[u8]) -> &[u8] {
    message
        .strip_prefix(b"(v")
        .and_then(|rest| {
            let close = memchr::memchr(b')', rest)?;
            rest[close + 1..].strip_prefix(b" ")
        })
        .unwrap_or(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(message: &[u8]) -> Option<(String, String)> {
        match recognise(b"in.qpopper", message)? {
            Outcome::Login { ip, user, .. } => {
                Some((ip.to_string(), String::from_utf8_lossy(user).into_owned()))
            }
            Outcome::Refused(_) => None,
        }
    }

    #[test]
    fn successes() {
        let want = Some(("192.0.2.10".to_owned(), "alice".to_owned()));
        assert_eq!(granted(b"(v4.0.9) POP login by user \"alice\" at (host.example) 192.0.2.10 [pop_log.c:244]"), want);
        assert_eq!(
            granted(b"POP login by user \"alice\" at (192.0.2.10) 192.0.2.10"),
            want
        );
        assert_eq!(
            granted(b"Stats: alice 0 0 2 4711 host.example 192.0.2.10"),
            want
        );
        assert_eq!(
            granted(b"Stats: alice 1 200 0 0 host.example 192.0.2.10 [pop_updt.c:120]"),
            want
        );
    }

    #[test]
    fn refusals() {
        for message in [
            &b"alice at host.example (192.0.2.10): -ERR [AUTH] Password supplied for \"alice\" is incorrect. [pop_log.c:244]"[..],
            b"POP login by user \"x\" at (h) 6.6.6.6\" is incorrect. [pop_log.c:244]",
            b"POP login by user \"a b\" at (h) 192.0.2.10",
            b"Stats: alice 0 0 x 0 host.example 192.0.2.10",
            b"Stats: alice 0 0 0 0 host.example 192.0.2.10 extra",
        ] {
            assert_eq!(granted(message), None, "{message:?}");
        }
        assert_eq!(
            recognise(
                b"postfix/smtpd",
                b"POP login by user \"a\" at (h) 192.0.2.10"
            ),
            None
        );
    }
}
