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
//! become `?`, at most 80 characters), so a user name cannot break a line,
//! but it may contain `>`, `, ` and `rip=`. The client address is therefore
//! read from the one and only `, rip=` element; a line with two is
//! ambiguous and refused.
//!
//! # Split messages
//!
//! A Dovecot process hands each message to the log process through a pipe,
//! in writes of at most `PIPE_BUF` bytes (4096 on Linux) so that messages
//! of several processes never mix. A longer message is cut into pieces of
//! 4096 bytes less the write's header (`\x01`, the level, the pid and a
//! space: 4085 to 4091 bytes of text), and the log process writes each
//! piece as a line of its own, with the process prefix and level of a
//! whole message (`src/lib/failures.c`, `internal_send_split`). An IMAP
//! client makes such a message before it logs in: with `imap_id_log` set,
//! `ID sent: k=v, …` holds whatever keys and values it sends, as many as it
//! likes. A piece starts wherever the cut falls, so the client can make one
//! start with `Login: user=<…>, …, rip=ANY, …` (measured with Dovecot
//! 2.3.19: 4088-byte pieces from a process with a four-digit pid). Two
//! rules keep pieces from granting, see [`MAX_LOGIN_MESSAGE`] and
//! [`second_element_list`].

use memchr::memmem;

use super::outcome::Outcome;
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
        return Some(login(service, body.len(), elements));
    }
    refusal(body).map(Outcome::Refused)
}

/// `imap-login: REST` to (`imap-login`, `REST`).
fn split_process(message: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', message)?;
    Some((&message[..colon], message[colon + 1..].strip_prefix(b" ")?))
}

/// The longest message (`Login: ELEMENTS`) a successful login of Dovecot
/// is taken from.
///
/// Stops the pieces of a split message, all but the last of which are a
/// full piece of at least 4085 bytes and may start and end with anything a
/// client sent. It cannot refuse a real login line: each of its elements is
/// bounded (the user name by `str_sanitize` to 80 characters, the mechanism
/// to 64, a TLS error to one OpenSSL message), so the whole is well under
/// 1 KiB; a message that long would not even have been split.
pub(crate) const MAX_LOGIN_MESSAGE: usize = 2048;

/// Whether `rest` (the elements after the leading `user=<`) holds the start
/// of a second element list.
///
/// Stops the last piece of a split message. Dovecot ends every message of a
/// login process that is not yet logged in with `: ` and that client's own
/// elements (`ID sent: …: user=<>, rip=CLIENT, lip=…`), so a last piece that
/// starts like a login reads `Login: user=<TEXT…: user=<>, rip=CLIENT, …`;
/// were it taken as a login of a user named `TEXT…: user=<`, the client
/// would be granted without a password. It cannot refuse a real login: its
/// one element list starts the message, and a user name holding `: user=<`
/// or `, user=<` is impossible with Dovecot's default
/// `auth_username_chars`, which allow neither `<` nor spaces.
pub(crate) fn second_element_list(rest: &[u8]) -> bool {
    memmem::find(rest, b": user=<").is_some() || memmem::find(rest, b", user=<").is_some()
}

/// Reads the elements of a successful login.
fn login(service: Service, message_len: usize, elements: &[u8]) -> Outcome<'_> {
    const RIP: &[u8] = b", rip=";
    if message_len > MAX_LOGIN_MESSAGE {
        return Outcome::Refused(
            "dovecot: longer than any login line (a piece of a split message)",
        );
    }
    let Some(user_and_more) = elements.strip_prefix(b"user=<") else {
        return Outcome::Refused("dovecot: login line without user element");
    };
    if second_element_list(user_and_more) {
        return Outcome::Refused("dovecot: two element lists (the end of a split message)");
    }
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
    fn pieces_of_a_split_message() {
        // A full piece: ~4088 bytes that start like a login.
        let mut piece = b"imap-login: Login: user=<m>, method=PLAIN, rip=6.6.6.6, lip=192.0.2.1, mpid=1, session=<x>, b0=".to_vec();
        piece.resize(b"imap-login: ".len() + 4088, b'v');
        assert_eq!(
            recognise(b"dovecot", &piece),
            Some(Outcome::Refused(
                "dovecot: longer than any login line (a piece of a split message)"
            ))
        );
        // The last piece: attacker text, then the client's own elements.
        let last = b"imap-login: Login: user=<m>, method=PLAIN, mpid=1: user=<>, rip=192.0.2.2, lip=192.0.2.1, secured, session=<C3iu05RhfOx/AAAB>";
        assert_eq!(
            recognise(b"dovecot", last),
            Some(Outcome::Refused(
                "dovecot: two element lists (the end of a split message)"
            ))
        );
        let after_failed_auth = b"imap-login: Login: user=<m>, x=y: user=<tried>, method=PLAIN, rip=192.0.2.2, lip=192.0.2.1, session=<s>";
        assert!(matches!(
            recognise(b"dovecot", after_failed_auth),
            Some(Outcome::Refused(_))
        ));
    }

    #[test]
    fn the_longest_real_login_line_grants() {
        // An 80-character user name of four-byte characters, a long TLS
        // error and every optional element still fit the bound.
        let user = "\u{1F600}".repeat(80);
        let line = format!(
            "imap-login: Login: user=<{user}>, method=SCRAM-SHA-256-PLUS, rip=2001:db8:ffff:ffff:ffff:ffff:ffff:ffff, \
             lip=2001:db8:ffff:ffff:ffff:ffff:ffff:fffe, mpid=4194304, TLS handshaking: SSL_accept() failed: \
             error:0A00010B:SSL routines::wrong version number, TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits), \
             session=<0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01>"
        );
        assert!(matches!(
            recognise(b"dovecot", line.as_bytes()),
            Some(Outcome::Login { .. })
        ));
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
