//! Dovecot's login processes (`pop3-login`, `imap-login`).
//!
//! A login process logs `MESSAGE: ELEMENTS`, where ELEMENTS is the expansion
//! of `login_log_format_elements`, by default
//! `user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>`
//! (2.4: `user=<%{user}> method=%{mechanism} rip=%{remote_ip} …`), each
//! non-empty element joined by `, `. A successful login's MESSAGE is `Login`
//! (1.x–2.3) or `Logged in` (2.4); everything else (`Disconnected (auth
//! failed, …)`, `Aborted login (…)`, 2.4's `Login aborted: …`, proxy and
//! referral lines) does not grant.
//!
//! Through syslog the tag is `dovecot` and the message starts with the
//! process name (`dovecot: imap-login: Login: …`); in Dovecot's own
//! `log_path` file the process name is the tag and the level follows
//! (`imap-login: Info: Login: …`).
//!
//! Dovecot passes user names through `str_sanitize()` (control characters
//! become `?`), so a user name cannot break a line, but it may contain `>`,
//! `, ` and `rip=`. The client address is therefore read from the one and
//! only `, rip=` element; a line with two is ambiguous and refused.

use memchr::memmem;

use super::Outcome;
use crate::addr::parse_ip;
use crate::Service;

const SERVER: &str = "dovecot";

pub(super) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    let (process, body) = match program {
        b"dovecot" => split_process(message)?,
        // log_path: the process is the tag, and its level leads the message.
        process if process.ends_with(b"-login") => (process, message.strip_prefix(b"Info: ")?),
        _ => return None,
    };
    let service = match process {
        b"pop3-login" => Service::Pop3,
        b"imap-login" => Service::Imap,
        _ if process.ends_with(b"-login") => {
            return Some(Outcome::Refused("dovecot: not a pop3/imap login process"))
        }
        _ => return None,
    };
    if let Some(elements) = body
        .strip_prefix(b"Login: ")
        .or_else(|| body.strip_prefix(b"Logged in: "))
    {
        return Some(login(service, elements));
    }
    refusal(body).map(Outcome::Refused)
}

/// `imap-login: REST` to (`imap-login`, `REST`).
fn split_process(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', message)?;
    Some((&message[..colon], message[colon + 1..].strip_prefix(b" ")?))
}

/// Reads the elements of a successful login.
fn login(service: Service, elements: &[u8]) -> Outcome<'_> {
    const RIP: &[u8] = b", rip=";
    let Some(user_and_more) = elements.strip_prefix(b"user=<") else {
        return Outcome::Refused("dovecot: login line without user element");
    };
    let Some(rip_at) = memmem::find(user_and_more, RIP) else {
        return Outcome::Refused("dovecot: login line without rip element");
    };
    let after_rip = &user_and_more[rip_at + RIP.len()..];
    if memmem::find(after_rip, RIP).is_some() {
        return Outcome::Refused("dovecot: ambiguous rip element");
    }
    // `rip` is never the last element of a genuine line (`lip` follows), so
    // demanding a following element also refuses lines cut short.
    let Some(rip_end) = memmem::find(after_rip, b", ") else {
        return Outcome::Refused("dovecot: login line ends at rip");
    };
    let Some(ip) = parse_ip(&after_rip[..rip_end]) else {
        return Outcome::Refused("dovecot: malformed rip element");
    };
    // The user element closes with the last `>` before `rip` (`method=` and
    // its value, which stand between them, contain none).
    let Some(user_end) = memchr::memrchr(b'>', &user_and_more[..rip_at]) else {
        return Outcome::Refused("dovecot: malformed user element");
    };
    Outcome::Login {
        ip,
        service,
        user: &user_and_more[..user_end],
        server: SERVER,
    }
}

/// Classifies the messages of a login process that do not grant.
fn refusal(body: &[u8]) -> Option<&'static str> {
    let starts = |prefix: &[u8]| body.starts_with(prefix);
    if starts(b"proxy(") {
        return Some("dovecot: proxy hand-off (the backend logs the login)");
    }
    if starts(b"Login with referral") {
        return Some("dovecot: login referred to another server");
    }
    let ended = [
        &b"Disconnected"[..],
        b"Aborted login",
        b"Login aborted",
        b"Login failed",
        b"Connection closed",
        b"Remote closed connection",
        b"Client has quit the connection",
    ];
    if !ended.iter().any(|prefix| starts(prefix)) {
        return None;
    }
    Some(if memmem::find(body, b"(auth failed").is_some() {
        "dovecot: authentication failed"
    } else if memmem::find(body, b"(no auth attempts").is_some() {
        "dovecot: no authentication attempt"
    } else {
        "dovecot: login aborted or disconnected"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> std::net::IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn syslog_and_log_path_successes() {
        let tail = b"user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=4242, TLS, session=<abc>";
        let want = |service| Outcome::Login {
            ip: ip("192.0.2.10"),
            service,
            user: b"alice",
            server: SERVER,
        };
        let syslog = [b"pop3-login: Login: ".as_slice(), tail].concat();
        assert_eq!(recognise(b"dovecot", &syslog), Some(want(Service::Pop3)));
        let v24 = [b"imap-login: Logged in: ".as_slice(), tail].concat();
        assert_eq!(recognise(b"dovecot", &v24), Some(want(Service::Imap)));
        let file = [b"Info: Login: ".as_slice(), tail].concat();
        assert_eq!(recognise(b"imap-login", &file), Some(want(Service::Imap)));
    }

    #[test]
    fn user_names_with_markup() {
        let line = b"imap-login: Login: user=<a>b, c>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1";
        let Some(Outcome::Login { user, .. }) = recognise(b"dovecot", line) else {
            panic!()
        };
        assert_eq!(user, b"a>b, c");
        let forged = b"imap-login: Login: user=<x>, rip=6.6.6.6, lip=1.1.1.1>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1";
        assert_eq!(
            recognise(b"dovecot", forged),
            Some(Outcome::Refused("dovecot: ambiguous rip element"))
        );
    }

    #[test]
    fn non_pop_imap_processes_and_others() {
        let line =
            b"submission-login: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1";
        assert!(matches!(
            recognise(b"dovecot", line),
            Some(Outcome::Refused(_))
        ));
        assert_eq!(
            recognise(b"dovecot", b"imap(alice)<1><s>: Logged out in=1 out=2"),
            None
        );
        assert_eq!(recognise(b"dovecot", b"auth: Warning: something"), None);
    }

    #[test]
    fn failures() {
        for (body, reason) in [
            (&b"Disconnected (auth failed, 1 attempts in 2 secs): user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1"[..], "dovecot: authentication failed"),
            (b"Login aborted: Logged out (auth failed, 3 attempts in 5 secs): user=<a>, rip=192.0.2.10, lip=192.0.2.1", "dovecot: authentication failed"),
            (b"Aborted login (no auth attempts in 0 secs): user=<>, rip=192.0.2.10, lip=192.0.2.1", "dovecot: no authentication attempt"),
        ] {
            let line = [b"pop3-login: ".as_slice(), body].concat();
            assert_eq!(recognise(b"dovecot", &line), Some(Outcome::Refused(reason)));
        }
    }
}
