//! Splitting a line into its prefix (time stamp, host, program tag) and the
//! message that the program wrote.

use std::fmt;
use std::str::FromStr;

use memchr::memchr;

use crate::error::Error;
use crate::time::{scan_iso, scan_year_less, Stamp};

/// The shape of the lines fed to a [`Parser`](crate::Parser).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Recognise each line's shape by itself (the default).
    #[default]
    Auto,
    /// `Nov 22 20:25:01 host prog[pid]: msg` or with an ISO 8601 stamp
    /// (rsyslog's high-precision format), optionally led by `<PRI>`.
    Syslog,
    /// `<PRI>1 2026-11-22T20:25:01Z host prog pid msgid [sd] msg`.
    Rfc5424,
    /// `journalctl -o short`, `short-precise`, `short-iso` and
    /// `short-iso-precise`: the syslog shapes.
    Journal,
    /// Dovecot's `log_path`: `Nov 22 20:25:01 pop3-login: Info: msg` or
    /// `2026-11-22 20:25:01 pop3-login: Info: msg`, without a host.
    DovecotFile,
    /// Just `prog[pid]: msg`, without time stamp or host.
    Bare,
}

impl Format {
    /// The name [`Format::from_str`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Syslog => "syslog",
            Format::Rfc5424 => "rfc5424",
            Format::Journal => "journal",
            Format::DovecotFile => "dovecot-file",
            Format::Bare => "bare",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Accepts the names of [`Format::as_str`] (any case), and `dovecot` for
    /// `dovecot-file`.
    fn from_str(s: &str) -> Result<Format, Error> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Format::Auto,
            "syslog" => Format::Syslog,
            "rfc5424" => Format::Rfc5424,
            "journal" => Format::Journal,
            "dovecot-file" | "dovecot" => Format::DovecotFile,
            "bare" => Format::Bare,
            _ => return Err(Error::UnknownFormat(s.to_owned())),
        })
    }
}

/// A line taken apart: who wrote the message, where, and when.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub stamp: Option<Stamp>,
    /// The host field of syslog and RFC 5424 lines.
    pub host: Option<&'a [u8]>,
    /// The program tag without `[pid]` and `:`.
    pub program: &'a [u8],
    /// The `pid` of a `prog[pid]` tag, or RFC 5424's PROCID.
    pub pid: Option<&'a [u8]>,
    pub message: &'a [u8],
    pub shape: Shape,
}

/// The kind of prefix a line has. One daemon writes every line of a log
/// file with the same kind, so a line of another kind in it is not the
/// daemon's: see [`crate::Stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A time stamp, a host field if `host`, and a program tag.
    Stamped { host: bool },
    /// RFC 5424.
    Rfc5424,
    /// Just a program tag.
    Bare,
}

impl Shape {
    /// How [`crate::Stream`]'s refusals name the shape.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Shape::Stamped { host: true } => "time stamp and host",
            Shape::Stamped { host: false } => "time stamp without host",
            Shape::Rfc5424 => "RFC 5424 header",
            Shape::Bare => "no time stamp",
        }
    }
}

/// Why a line has no recognisable prefix.
pub(crate) const UNRECOGNISED: &str = "unrecognised line format";

/// Whether a host name stands between the time stamp and the program tag.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Host {
    Present,
    Absent,
    /// Decided per line: a first word ending in `:` is the tag, a first word
    /// that can be a host name is the host.
    Either,
}

/// Takes `line` apart as `format` says.
pub(crate) fn split(format: Format, line: &[u8]) -> Result<Envelope<'_>, &'static str> {
    let envelope = match format {
        Format::Auto => auto(line),
        Format::Syslog => {
            let line = skip_priority(line).map_or(line, |(_, rest)| rest);
            stamped(line, Host::Present, false)
        }
        Format::Journal => stamped(line, Host::Present, false),
        Format::DovecotFile => stamped(line, Host::Absent, true),
        Format::Rfc5424 => skip_priority(line).and_then(|(_, rest)| rfc5424(rest)),
        Format::Bare => tagged(line, None, None),
    };
    envelope.ok_or(UNRECOGNISED)
}

fn auto(line: &[u8]) -> Option<Envelope<'_>> {
    if line.starts_with(b"<") {
        let (_, rest) = skip_priority(line)?;
        return if rest.starts_with(b"1 ") {
            rfc5424(rest)
        } else {
            stamped(rest, Host::Present, false)
        };
    }
    stamped(line, Host::Either, true).or_else(|| tagged(line, None, None))
}

/// Skips an RFC 3164/5424 `<PRI>`, returning the priority and the rest.
fn skip_priority(line: &[u8]) -> Option<(u8, &[u8])> {
    let rest = line.strip_prefix(b"<")?;
    let end = memchr(b'>', rest).filter(|&end| (1..=3).contains(&end))?;
    let digits = &rest[..end];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let priority = std::str::from_utf8(digits).ok()?.parse::<u8>().ok()?;
    (priority <= 191).then_some((priority, &rest[end + 1..]))
}

/// `STAMP [HOST] TAG: MESSAGE`, the stamp either year-less or ISO 8601
/// (`space_iso` also admits Dovecot's `YYYY-MM-DD hh:mm:ss`).
fn stamped(line: &[u8], host: Host, space_iso: bool) -> Option<Envelope<'_>> {
    let (stamp, len) = scan_year_less(line)
        .or_else(|| scan_iso(line, false))
        .or_else(|| space_iso.then(|| scan_iso(line, true)).flatten())?;
    let rest = line[len..].strip_prefix(b" ")?;
    let first_word = &rest[..memchr(b' ', rest).unwrap_or(rest.len())];
    let has_host = match host {
        Host::Present => true,
        Host::Absent => false,
        // A Dovecot `log_path` line starts with its process, which ends in
        // `:`; one of a post-login process (`imap(user)<pid><session>:`)
        // whose user name holds a space must not pass for host and tag, and
        // a host name holds no `(`.
        Host::Either if first_word.ends_with(b":") => false,
        Host::Either if is_host_field(first_word) => true,
        Host::Either => return None,
    };
    let (host, rest) = if has_host {
        (
            Some(first_word),
            rest[first_word.len()..].strip_prefix(b" ")?,
        )
    } else {
        (None, rest)
    };
    tagged(rest, Some(stamp), host)
}

/// A syslog host field: a host name or an address, as collectors write it.
fn is_host_field(word: &[u8]) -> bool {
    !word.is_empty()
        && word
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// `TAG: MESSAGE` where the tag is `prog`, `prog[pid]` and the message may
/// be empty.
fn tagged<'a>(
    text: &'a [u8],
    stamp: Option<Stamp>,
    host: Option<&'a [u8]>,
) -> Option<Envelope<'a>> {
    let word_end = memchr(b' ', text).unwrap_or(text.len());
    let tag = text[..word_end].strip_suffix(b":")?;
    let message = text.get(word_end + 1..).unwrap_or_default();
    let (program, pid) = split_tag(tag)?;
    Some(Envelope {
        shape: match stamp {
            Some(_) => Shape::Stamped {
                host: host.is_some(),
            },
            None => Shape::Bare,
        },
        stamp,
        host,
        program,
        pid,
        message,
    })
}

/// `prog[pid]` or `prog` to the program and the pid.
pub(crate) fn split_tag(tag: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (program, pid) = match tag.strip_suffix(b"]") {
        Some(with_pid) => {
            let open = memchr::memrchr(b'[', with_pid)?;
            let pid = &with_pid[open + 1..];
            if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
                return None;
            }
            (&with_pid[..open], Some(pid))
        }
        None => (tag, None),
    };
    let valid = !program.is_empty() && !program.iter().any(|&b| matches!(b, b'[' | b']' | b':'));
    valid.then_some((program, pid))
}

/// RFC 5424 after `<PRI>`:
/// `1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`.
fn rfc5424(text: &[u8]) -> Option<Envelope<'_>> {
    let mut fields = text.strip_prefix(b"1 ")?;
    let mut next_field = || {
        let end = memchr(b' ', fields)?;
        let field = &fields[..end];
        fields = &fields[end + 1..];
        (!field.is_empty()).then_some(field)
    };
    let stamp_field = next_field()?;
    let host = next_field()?;
    let app_name = next_field()?;
    let procid = next_field()?;
    let _msgid = next_field()?;
    let stamp = match stamp_field {
        b"-" => None,
        field => match scan_iso(field, false)? {
            (stamp, len) if len == field.len() => Some(stamp),
            _ => return None,
        },
    };
    let after_sd = skip_structured_data(fields)?;
    let message = match after_sd {
        [] => after_sd,
        [b' ', message @ ..] => message,
        _ => return None,
    };
    let message = message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message);
    let program = match app_name {
        b"-" => return None,
        name => name,
    };
    Some(Envelope {
        stamp,
        host: (host != b"-").then_some(host),
        program,
        pid: (procid != b"-").then_some(procid),
        message,
        shape: Shape::Rfc5424,
    })
}

/// Skips `-` or a run of `[id param="value" …]` elements, honouring the
/// `\"`, `\\` and `\]` escapes inside values.
fn skip_structured_data(text: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = text.strip_prefix(b"-") {
        return Some(rest);
    }
    let mut pos = 0;
    while text.get(pos) == Some(&b'[') {
        let mut quoted = false;
        pos += 1;
        loop {
            match *text.get(pos)? {
                b'\\' if quoted => pos += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            pos += 1;
        }
        pos += 1;
    }
    (pos > 0).then(|| &text[pos..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(format: Format, line: &str) -> Option<(bool, String, String)> {
        let envelope = split(format, line.as_bytes()).ok()?;
        Some((
            envelope.stamp.is_some(),
            String::from_utf8_lossy(envelope.program).into_owned(),
            String::from_utf8_lossy(envelope.message).into_owned(),
        ))
    }

    fn expect(format: Format, line: &str, stamped: bool, program: &str, message: &str) {
        assert_eq!(
            parts(format, line),
            Some((stamped, program.to_owned(), message.to_owned())),
            "{format} {line}"
        );
    }

    #[test]
    fn classic_syslog() {
        for format in [Format::Auto, Format::Syslog, Format::Journal] {
            expect(
                format,
                "Nov 22 20:25:01 mailhost dovecot: imap-login: x",
                true,
                "dovecot",
                "imap-login: x",
            );
            expect(
                format,
                "Nov  2 20:25:01 mailhost dovecot[1234]: m",
                true,
                "dovecot",
                "m",
            );
            expect(
                format,
                "2026-11-22T20:25:01.123456+01:00 mx cyrus/imap[7]: m",
                true,
                "cyrus/imap",
                "m",
            );
            expect(
                format,
                "2026-11-22T20:25:01+0100 mx imapd[7]: m",
                true,
                "imapd",
                "m",
            );
        }
        expect(
            Format::Syslog,
            "<22>Nov 22 20:25:01 mx popper[9]: m",
            true,
            "popper",
            "m",
        );
        expect(
            Format::Auto,
            "<22>Nov 22 20:25:01 mx popper[9]: m",
            true,
            "popper",
            "m",
        );
    }

    #[test]
    fn dovecot_log_path() {
        for format in [Format::Auto, Format::DovecotFile] {
            expect(
                format,
                "Nov 22 20:25:01 pop3-login: Info: Login: x",
                true,
                "pop3-login",
                "Info: Login: x",
            );
            expect(
                format,
                "2026-11-22 20:25:01 imap-login: Info: x",
                true,
                "imap-login",
                "Info: x",
            );
        }
        assert_eq!(
            parts(Format::Syslog, "2026-11-22 20:25:01 imap-login: Info: x"),
            None
        );
    }

    #[test]
    fn rfc5424_lines() {
        for format in [Format::Auto, Format::Rfc5424] {
            expect(
                format,
                "<22>1 2026-11-22T20:25:01Z mx dovecot 1234 - - imap-login: x",
                true,
                "dovecot",
                "imap-login: x",
            );
            expect(
                format,
                r#"<22>1 2026-11-22T20:25:01Z mx dovecot - ID1 [a b="c \"] d"][e@1 f="g"] msg"#,
                true,
                "dovecot",
                "msg",
            );
            expect(
                format,
                "<22>1 - mx dovecot - - - \u{feff}msg",
                false,
                "dovecot",
                "msg",
            );
        }
        assert_eq!(
            parts(Format::Rfc5424, "<22>1 2026-11-22T20:25:01Z mx - - - - msg"),
            None
        );
        assert_eq!(
            parts(
                Format::Rfc5424,
                "<22>1 2026-11-22T20:25:01Z mx dovecot - - [open msg"
            ),
            None
        );
    }

    #[test]
    fn bare() {
        for format in [Format::Auto, Format::Bare] {
            expect(
                format,
                "dovecot[12]: imap-login: x",
                false,
                "dovecot",
                "imap-login: x",
            );
            expect(format, "dovecot:", false, "dovecot", "");
        }
    }

    #[test]
    fn rejected() {
        for line in [
            "",
            "Nov 22 20:25:01",
            "Nov 22 20:25:01 host",
            "dovecot[x]: m",
            "[12]: m",
            "no tag here",
        ] {
            assert_eq!(parts(Format::Auto, line), None, "{line}");
        }
    }

    #[test]
    fn host_fields_and_shapes() {
        let host_and_shape = |format, line: &str| {
            let envelope = split(format, line.as_bytes()).unwrap();
            (
                envelope
                    .host
                    .map(|h| String::from_utf8_lossy(h).into_owned()),
                envelope.shape,
            )
        };
        let with_host = Shape::Stamped { host: true };
        assert_eq!(
            host_and_shape(Format::Auto, "Nov 22 20:25:01 mx.example dovecot: m"),
            (Some("mx.example".into()), with_host)
        );
        assert_eq!(
            host_and_shape(Format::Auto, "Nov 22 20:25:01 2001:db8::5 imapd[1]: m"),
            (Some("2001:db8::5".into()), with_host)
        );
        assert_eq!(
            host_and_shape(Format::Auto, "Nov 22 20:25:01 pop3-login: Info: m"),
            (None, Shape::Stamped { host: false })
        );
        assert_eq!(
            host_and_shape(
                Format::Auto,
                "<22>1 2026-11-22T20:25:01Z mx dovecot 7 - - m"
            ),
            (Some("mx".into()), Shape::Rfc5424)
        );
        assert_eq!(
            host_and_shape(Format::Auto, "<22>1 2026-11-22T20:25:01Z - dovecot - - - m"),
            (None, Shape::Rfc5424)
        );
        assert_eq!(
            host_and_shape(Format::Auto, "dovecot: m"),
            (None, Shape::Bare)
        );
    }

    #[test]
    fn a_post_login_tag_with_a_spaced_user_is_no_host() {
        // Dovecot's log_path: the process `imap(x pop3-login:` with a user
        // name holding spaces, not the host `imap(x` and the tag `pop3-login`.
        let line = "Nov 22 20:25:01 imap(x pop3-login: Info: Login: user=<y>, rip=192.0.2.9, lip=192.0.2.1)<7><s>: Info: Logged out";
        assert_eq!(parts(Format::Auto, line), None);
    }

    #[test]
    fn format_names_round_trip() {
        for format in [
            Format::Auto,
            Format::Syslog,
            Format::Rfc5424,
            Format::Journal,
            Format::DovecotFile,
            Format::Bare,
        ] {
            assert_eq!(format.as_str().parse::<Format>().unwrap(), format);
        }
        assert_eq!("Dovecot".parse::<Format>().unwrap(), Format::DovecotFile);
        assert!("csv".parse::<Format>().is_err());
    }
}
