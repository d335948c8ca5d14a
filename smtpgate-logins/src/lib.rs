//! Turns mail-log lines into POP-before-SMTP verdicts.
//!
//! smtpgate grants a client address SMTP access for a while after that
//! address proved a mailbox password over POP3 or IMAP. This crate reads the
//! evidence: given one line of a mail log (a syslog file, the systemd journal,
//! Dovecot's own log file, stdin) it answers either [`Verdict::Grant`] with
//! the client address of a *successful* login, or [`Verdict::NoGrant`] with a
//! short reason; the lines of one log are judged in order by a [`Stream`].
//! It also reads a login hook's [`Report`]. It is pure and synchronous: no
//! I/O, no threads, no clock.
//!
//! ```
//! use smtpgate_logins::{Parser, ParserOptions, Verdict};
//!
//! let parser = Parser::new(ParserOptions::default()).unwrap();
//! let line = b"Nov 22 20:25:01 mailhost dovecot: pop3-login: Login: user=<alice>, \
//!              method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=4242, TLS, session=<abc>";
//! match parser.parse(line, jiff::Timestamp::now()) {
//!     Verdict::Grant(login) => assert_eq!(login.ip.to_string(), "192.0.2.10"),
//!     Verdict::NoGrant(reason) => panic!("{reason}"),
//! }
//! ```
//!
//! # Line shapes
//!
//! A line is split into a prefix (time stamp, host, program tag) and the
//! message, see [`Format`]:
//!
//! * classic syslog (RFC 3164) `Nov 22 20:25:01 host dovecot[1234]: …`, with
//!   an optional `<PRI>`; the year is the latest that puts the stamp before
//!   `now` (plus a minute of clock drift), and [`ParserOptions::timezone`]
//!   supplies the offset;
//! * rsyslog's high-precision stamps `2026-11-22T20:25:01.123456+01:00 host
//!   dovecot[1234]: …` and RFC 5424 `<22>1 2026-11-22T20:25:01Z host dovecot
//!   1234 - - …` (structured data is skipped, a BOM before the message too);
//! * `journalctl -o short`, `short-precise`, `short-iso`,
//!   `short-iso-precise`, which have the shapes above (`+0100` offsets too);
//! * Dovecot's `log_path` file, `Nov 22 20:25:01 pop3-login: Info: …` or
//!   `2026-11-22 20:25:01 pop3-login: Info: …` (no host);
//! * a bare message `dovecot[1234]: …`; journal readers that hold the
//!   identifier and the message apart call [`Parser::parse_message`].
//!
//! # Servers and their successful-login lines
//!
//! Each server parser is anchored at its program tag and at the start of the
//! message, and checks the line's structure to its very end, so that text a
//! client chose (a user name) cannot pose as a field the server wrote.
//!
//! | server | tags | success lines | source of the format |
//! |---|---|---|---|
//! | Dovecot 1.x–2.3 | `dovecot`, or `pop3-login`/`imap-login` in `log_path` | `pop3-login: Login: user=<…>, method=…, rip=…, …` | `src/login-common/client-common*.c` (`client_get_log_str`, `login_log_format_elements`) in dovecot/core |
//! | Dovecot 2.4 | as above | `imap-login: Logged in: user=<…>, …, rip=…, …` | 2.4 `login-settings.c` defaults and logs of 2.4.1 |
//! | Courier-IMAP | `pop3d`, `pop3d-ssl`, `imapd`, `imapd-ssl`, `courierpop3login`, `courierpop3d`, `pop3login`, `imaplogin` | `LOGIN, user=…, ip=[…]` (`, port=[…]`, `, protocol=…`, `, stls=1` or `, starttls=1`) | `pop3dserver.c`, `imaplogin.c`, `pop3login.c`, `imaptoken.c` in courier-imap, `liblog/logger.c` in courier-libs |
//! | Cyrus IMAP 2.x/3.x | `imap`, `imaps`, `pop3`, `pop3s`, `imapd`, `pop3d`, any of them after `prefix/` (`cyrus/imap`) | `login: host [ip] user mech User logged in` (` SESSIONID=<…>`; older `host[ip]`) | `imap/imapd.c`, `imap/pop3d.c`, `imap/global.c` in cyrus-imapd |
//! | UW imapd / ipop3d | `imapd`, `imapsd`, `ipop3d`, `ipop3sd` | `Login user=… host=… [ip]`, `Authenticated user=… host=… [ip]` (` mech=…`); ipop3d `Login`/`Auth`/`APOP user=… host=… [ip] nmsgs=n/m` | `src/imapd/imapd.c`, `src/ipop3d/ipop3d.c`, `tcp_unix.c` in UW IMAP 2007 |
//! | Qpopper | `popper`, `qpopper`, `in.qpopper`, `in.popper` | `(v4.0.9) POP login by user "u" at (host) ip`, `Stats: u 0 0 0 0 host ip` | `pop_init.c` (`pLog_login`), `pop_updt.c` in qpopper, and the patterns of pop-before-smtp |
//!
//! Failed, aborted and disconnected logins never grant. Dovecot's
//! `submission-login` and `managesieve-login` are not POP3/IMAP and never
//! grant either; nor do Dovecot proxy hand-offs (`proxy(…): started
//! proxying`), whose backend logs the login with the client's `rip`.
//!
//! Servers that log a successful login without the client address on the
//! same line (GNU pop3d, popa3d, older vm-pop3d and Solid POP3 without
//! `--enable-logextend`) cannot be served by a one-line parser. For daemons
//! whose one-line formats are known only second-hand (teapop, Solid POP3
//! with `--enable-logextend`, perdition, newer vm-pop3d) use a custom
//! pattern, e.g. `^teapop: Successful login for \S+ .+ \[(?P<ip>[0-9.]+)\]$`.
//!
//! # Custom patterns
//!
//! [`ParserOptions::custom_patterns`] are regular expressions (the `regex`
//! crate's syntax) with a named group `ip` and optional groups `user` and
//! `service`. They are tried on lines no built-in parser recognised, against
//! the text `PROGRAM: MESSAGE` (the tag without `[pid]`, then `": "`, then the
//! message). The service defaults to POP3; a `service` group starting with
//! `pop` or `imap` (any case) selects the service. Anchor custom patterns
//! with `^…$`: an unanchored pattern also matches text that another program
//! copied from a client into its own log line.
//!
//! # Threats this parser is built against
//!
//! * User names carrying field syntax (`, rip=6.6.6.6`, `ip=[6.6.6.6]`,
//!   brackets, quotes, spaces): every format is parsed by its structure, a
//!   marker that may occur only once must occur exactly once, and user names
//!   of formats that delimit them by spaces may not contain spaces.
//! * Lines of other programs quoting a login line (the historical
//!   `MAIL FROM:<"POP login by user "admin" at (h) h@example.org>` exploit
//!   against pop-before-smtp): messages are matched at their start, under the
//!   server's own tag.
//! * A user name with a line break that a server or syslog daemon wrote
//!   unescaped: the second physical line ends with the rest of the server's
//!   (failure) format, which no success format accepts. A client that could
//!   smuggle a *complete* forged line cannot be told apart by any parser;
//!   rsyslog escapes control characters by default (`#012`), Dovecot
//!   sanitises user names, and journal readers keep messages whole.
//! * Local users can write any tag to syslog (`logger -t dovecot`). Only the
//!   log source can prevent that (journald's trusted `_COMM`/`_UID` fields).
//!
//! When in doubt the answer is [`Verdict::NoGrant`].

mod addr;
mod custom;
mod error;
mod parser;
mod prefix;
mod report;
mod servers;
mod stream;
mod time;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

pub use addr::customer_address;
pub use error::Error;
pub use parser::{Entry, Parser, ParserOptions};
pub use prefix::Format;
pub use report::{Report, ReportError, MAX_REPORT};
pub use stream::{Stream, OTHER_SHAPE, UNSTAMPED};
pub use time::{FUTURE_STAMP, IMPOSSIBLE_STAMP};

/// The mail-retrieval protocol a client logged in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Pop3,
    Imap,
}

impl Service {
    /// The lower-case protocol name: `"pop3"` or `"imap"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Pop3 => "pop3",
            Service::Imap => "imap",
        }
    }

    /// Classifies a daemon or service name such as `ipop3d`, `pop3s`,
    /// `imapd-ssl` or `IMAP` by the protocol it names; `None` if it names
    /// neither or both.
    pub(crate) fn from_name(name: &[u8]) -> Option<Service> {
        let has = |needle: &[u8]| {
            name.windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        };
        match (has(b"pop"), has(b"imap")) {
            (true, false) => Some(Service::Pop3),
            (false, true) => Some(Service::Imap),
            _ => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = Error;

    /// Accepts `pop3`, `pop` and `imap`, in any case.
    fn from_str(s: &str) -> Result<Service, Error> {
        match s.to_ascii_lowercase().as_str() {
            "pop3" | "pop" => Ok(Service::Pop3),
            "imap" => Ok(Service::Imap),
            _ => Err(Error::UnknownService(s.to_owned())),
        }
    }
}

/// A successful POP3 or IMAP login read from a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The client address; `::ffff:a.b.c.d` is normalised to IPv4.
    pub ip: IpAddr,
    pub service: Service,
    /// The user name as logged (lossily decoded); empty if the format has none.
    pub user: String,
    /// Which parser recognised the line: `"dovecot"`, `"courier"`, `"cyrus"`,
    /// `"uw-imap"`, `"qpopper"` or `"custom"`.
    pub server: &'static str,
    /// When the line was logged, if it carries a time stamp.
    pub time: Option<jiff::Timestamp>,
}

/// What a log line means for SMTP access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A successful login: grant `Login::ip`.
    Grant(Login),
    /// Anything else, with a short human reason such as
    /// `"dovecot: authentication failed"` or `"not a login line"`.
    NoGrant(Reason),
}

impl Verdict {
    /// The login, if this verdict grants.
    pub fn grant(&self) -> Option<&Login> {
        match self {
            Verdict::Grant(login) => Some(login),
            Verdict::NoGrant(_) => None,
        }
    }
}

/// Why a line does not grant.
///
/// Almost all reasons are fixed texts, so a line that is not a login costs no
/// allocation; the type derefs to `str` and displays as its text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reason(Cow<'static, str>);

impl Reason {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Reason {
    fn from(text: &'static str) -> Reason {
        Reason(Cow::Borrowed(text))
    }
}

impl From<String> for Reason {
    fn from(text: String) -> Reason {
        Reason(Cow::Owned(text))
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> String {
        reason.0.into_owned()
    }
}

impl std::ops::Deref for Reason {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Reason {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
