//! What the supported servers write about a client, with the fields a
//! client controls filled from fuzzer input: the lines the login parser
//! must judge. Each server's format string, and what the server and the
//! syslog daemon do to client text before it reaches the file, are modelled
//! from their sources (see `smtpgate-logins`' server modules).

use std::net::{IpAddr, Ipv4Addr};

/// The client every line is about: the address a server writes in its
/// client-address field, and the only one any grant may name.
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));

/// The lines one server wrote, and whether they record a successful login.
pub struct Written {
    pub lines: Vec<Vec<u8>>,
    pub success: bool,
}

/// A server's message about [`CLIENT`], in one of its real formats.
enum Template {
    DovecotLogin,
    DovecotFailure,
    /// An IMAP `ID` before logging in, with `imap_id_log = *`.
    DovecotId,
    UwLogin,
    UwFailure,
    CyrusLogin,
    CyrusAnonymous,
    CyrusBadLogin,
    CourierLogin,
    CourierFailure,
    QpopperLogin,
    QpopperFailure,
}

const TEMPLATES: [Template; 12] = [
    Template::DovecotLogin,
    Template::DovecotFailure,
    Template::DovecotId,
    Template::UwLogin,
    Template::UwFailure,
    Template::CyrusLogin,
    Template::CyrusAnonymous,
    Template::CyrusBadLogin,
    Template::CourierLogin,
    Template::CourierFailure,
    Template::QpopperLogin,
    Template::QpopperFailure,
];

/// How the log file writes a line's prefix.
#[derive(Clone, Copy)]
enum Prefix {
    YearLess,
    Iso,
    Rfc5424,
    /// Dovecot's own `log_path` file (Dovecot's templates only).
    DovecotFile,
}

/// Decodes `input` as: a template, a prefix, the width of the server
/// process's pid, then up to three client fields separated by NUL (which no
/// C string holds). `None` for input too short to say.
pub fn written(input: &[u8]) -> Option<Written> {
    let [template, prefix, pid_digits, fields @ ..] = input else {
        return None;
    };
    let template = &TEMPLATES[*template as usize % TEMPLATES.len()];
    let prefix = [
        Prefix::YearLess,
        Prefix::Iso,
        Prefix::Rfc5424,
        Prefix::DovecotFile,
    ][*prefix as usize % 4];
    let pid = "7".repeat(1 + *pid_digits as usize % 7);
    let mut fields = fields.split(|&b| b == 0);
    let mut field = || fields.next().unwrap_or_default();
    let (f0, f1) = (field(), field());
    Some(match template {
        Template::DovecotLogin => dovecot(
            prefix,
            &pid,
            "imap-login",
            &elements_of(&dovecot_sanitize(f0, 80), true, "TLS, session=<aBcD3fGh>"),
            true,
        ),
        Template::DovecotFailure => dovecot(
            prefix,
            &pid,
            "pop3-login",
            &[
                b"Disconnected (auth failed, 1 attempts in 2 secs): ".as_slice(),
                &elements_of(&dovecot_sanitize(f0, 80), true, "session=<aBcD3fGh>")
                    ["Login: ".len()..],
            ]
            .concat(),
            false,
        ),
        Template::DovecotId => {
            let mut text = b"ID sent: ".to_vec();
            // Keys and values alternate, separated by 0x01 in the input.
            for (i, item) in f0.split(|&b| b == 1).enumerate() {
                match i % 2 {
                    0 if i > 0 => text.extend_from_slice(b", "),
                    0 => {}
                    _ => text.push(b'='),
                }
                text.extend(dovecot_sanitize(item, if i % 2 == 0 { 30 } else { 80 }));
            }
            // The client's own elements: a user name if it tried one.
            let user = dovecot_sanitize(f1, 80);
            text.extend_from_slice(b": ");
            text.extend(
                &elements_of(&user, !user.is_empty(), "session=<aBcD3fGh>")["Login: ".len()..],
            );
            dovecot(prefix, &pid, "imap-login", &text, false)
        }
        Template::UwLogin => syslog(
            prefix,
            "imapd",
            &[
                b"Login user=".as_slice(),
                cut(f0, 80),
                b" host=",
                &uw_host(f1),
            ]
            .concat(),
            true,
        ),
        Template::UwFailure => syslog(
            prefix,
            "imapd",
            &[
                b"Login failed user=".as_slice(),
                cut(f0, 80),
                b" auth=",
                cut(f1, 80),
                b" host=",
                &uw_host(b""),
            ]
            .concat(),
            false,
        ),
        Template::CyrusLogin => syslog(
            prefix,
            "cyrus/imap",
            &[
                b"login: ".as_slice(),
                &cyrus_host(f0),
                b" ",
                &beautify(f1),
                b" plaintext User logged in SESSIONID=<cyrus-1-2-3>",
            ]
            .concat(),
            true,
        ),
        Template::CyrusAnonymous => {
            let mut password = beautify(f1);
            password.truncate(500);
            syslog(
                prefix,
                "cyrus/imap",
                &[
                    b"login: ".as_slice(),
                    &cyrus_host(f0),
                    b" anonymous ",
                    &password,
                ]
                .concat(),
                false,
            )
        }
        Template::CyrusBadLogin => syslog(
            prefix,
            "cyrus/pop3",
            &[
                b"badlogin: ".as_slice(),
                &cyrus_host(f0),
                b" plaintext ",
                &beautify(f1),
                b" SASL(-13): authentication failure: checkpass failed",
            ]
            .concat(),
            false,
        ),
        Template::CourierLogin => courier(
            prefix,
            &[
                b"INFO: LOGIN, user=".as_slice(),
                &one_line(f0),
                b", ip=[::ffff:",
                CLIENT.to_string().as_bytes(),
                b"], port=[4711], protocol=IMAP",
            ]
            .concat(),
            true,
        ),
        Template::CourierFailure => courier(
            prefix,
            &[
                b"INFO: LOGIN FAILED, user=".as_slice(),
                &one_line(f0),
                b", ip=[::ffff:",
                CLIENT.to_string().as_bytes(),
                b"]",
            ]
            .concat(),
            false,
        ),
        Template::QpopperLogin => syslog(
            prefix,
            "in.qpopper",
            &[
                b"(v4.0.9) POP login by user \"".as_slice(),
                f0,
                b"\" at (",
                &host_or_client(f1),
                b") ",
                CLIENT.to_string().as_bytes(),
                b" [pop_log.c:244]",
            ]
            .concat(),
            true,
        ),
        Template::QpopperFailure => syslog(
            prefix,
            "in.qpopper",
            &[
                f0,
                b" at ",
                &host_or_client(f1),
                b" (",
                CLIENT.to_string().as_bytes(),
                b"): -ERR [AUTH] Password supplied for \"",
                f0,
                b"\" is incorrect. [pop_log.c:244]",
            ]
            .concat(),
            false,
        ),
    })
}

/// `Login: user=<USER>[, method=PLAIN], rip=CLIENT, lip=192.0.2.1, TAIL`.
fn elements_of(user: &[u8], method: bool, tail: &str) -> Vec<u8> {
    let method = if method { ", method=PLAIN" } else { "" };
    [
        b"Login: user=<".as_slice(),
        user,
        format!(">{method}, rip={CLIENT}, lip=192.0.2.1, mpid=4242, {tail}").as_bytes(),
    ]
    .concat()
}

/// Dovecot's `str_sanitize`: control characters become `?`, and text
/// beyond `max` bytes is replaced by `...`.
fn dovecot_sanitize(text: &[u8], max: usize) -> Vec<u8> {
    let mut out: Vec<u8> = text
        .iter()
        .map(|&b| if b < 0x20 || b == 0x7f { b'?' } else { b })
        .collect();
    if out.len() > max {
        out.truncate(max - 3);
        out.extend_from_slice(b"...");
    }
    out
}

/// A Dovecot message as it reaches the log: the log process writes each
/// piece of at most `PIPE_BUF` (4096) bytes, less the write's header
/// (`\x01`, the level, the pid and a space), as a line of its own.
fn dovecot(prefix: Prefix, pid: &str, process: &str, text: &[u8], success: bool) -> Written {
    let piece = 4096 - 1 - (3 + pid.len());
    let lines = text
        .chunks(piece)
        .map(|piece| match prefix {
            Prefix::DovecotFile => [
                format!("Dec 01 16:24:33 {process}: Info: ").as_bytes(),
                piece,
            ]
            .concat(),
            other => line(
                other,
                "dovecot",
                &[format!("{process}: ").as_bytes(), piece].concat(),
            ),
        })
        .collect();
    Written { lines, success }
}

/// A message passed to `syslog()`, as rsyslog writes it (control characters
/// escaped as `#ooo`, its default).
fn syslog(prefix: Prefix, tag: &str, message: &[u8], success: bool) -> Written {
    Written {
        lines: vec![line(prefix, tag, message)],
        success,
    }
}

/// The file's line: the prefix, then the message with control characters
/// escaped.
fn line(prefix: Prefix, tag: &str, message: &[u8]) -> Vec<u8> {
    let mut line = match prefix {
        Prefix::YearLess | Prefix::DovecotFile => format!("Dec  1 16:24:33 mailhost {tag}[1234]: "),
        Prefix::Iso => format!("2026-12-01T16:24:33.123456+00:00 mailhost {tag}[1234]: "),
        Prefix::Rfc5424 => format!("<22>1 2026-12-01T16:24:33Z mailhost {tag} 1234 - - "),
    }
    .into_bytes();
    for &b in message {
        if b < 0x20 || b == 0x7f {
            line.extend_from_slice(format!("#{b:03o}").as_bytes());
        } else {
            line.push(b);
        }
    }
    line
}

/// A Courier process's standard error through `courierlogger`: one syslog
/// message per line, each cut to the 511 bytes its `fgets` buffer holds,
/// with a leading level (`INFO:`) and the spaces after it stripped.
fn courier(prefix: Prefix, text: &[u8], success: bool) -> Written {
    let lines = text
        .split(|&b| b == b'\n')
        .map(|line_text| {
            let kept = &line_text[..line_text.len().min(511)];
            let message = kept.strip_prefix(b"INFO:").unwrap_or(kept);
            let start = message.iter().take_while(|&&b| b == b' ').count();
            line(prefix, "imapd", &message[start..])
        })
        .collect();
    Written { lines, success }
}

/// A Courier user name: POP3 reads it from one command line and IMAP
/// `LOGIN` from an atom or a quoted string, neither of which holds a line
/// feed.
fn one_line(text: &[u8]) -> Vec<u8> {
    text.iter().copied().filter(|&b| b != b'\n').collect()
}

/// C's `%.Ns`: at most `max` bytes.
fn cut(text: &[u8], max: usize) -> &[u8] {
    &text[..text.len().min(max)]
}

/// A reverse-DNS name as the resolver hands it out: glibc refuses names
/// with other characters than letters, digits, `-`, `.` and `_`.
fn host_name(text: &[u8]) -> Vec<u8> {
    text.iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        .take(253)
        .collect()
}

/// UW's `tcp_clienthost()`, `name [ip]` or `[ip]`, cut by `host=%.80s`.
fn uw_host(name: &[u8]) -> Vec<u8> {
    let name = host_name(name);
    let host = if name.is_empty() {
        format!("[{CLIENT}]").into_bytes()
    } else {
        [&name[..], format!(" [{CLIENT}]").as_bytes()].concat()
    };
    cut(&host, 80).to_vec()
}

/// Cyrus's client host, `name [ip]` or `[ip]`.
fn cyrus_host(name: &[u8]) -> Vec<u8> {
    let name = host_name(name);
    match name.is_empty() {
        true => format!("[{CLIENT}]").into_bytes(),
        false => [&name[..], format!(" [{CLIENT}]").as_bytes()].concat(),
    }
}

/// Qpopper's host: the name, or the address without one.
fn host_or_client(name: &[u8]) -> Vec<u8> {
    let name = host_name(name);
    if name.is_empty() {
        CLIENT.to_string().into_bytes()
    } else {
        name
    }
}

/// Cyrus's `beautify_string()`: control characters as `^X`.
fn beautify(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if b < 0x20 || b == 0x7f {
            out.extend_from_slice(&[b'^', b ^ 0x40]);
        } else {
            out.push(b);
        }
    }
    out
}
