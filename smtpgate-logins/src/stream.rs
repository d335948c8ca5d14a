//! Judging the lines of one log in order.

use jiff::Timestamp;

use crate::parser::strip_line_end;
use crate::prefix::{self, Format, Shape};
use crate::{Parser, Verdict};

/// Judges the lines of one log (a file, standard input) in the order they
/// were written, as [`Parser::parse`] judges a line alone, and refuses
/// lines that cannot be the log's own.
///
/// A syslog daemon or Dovecot writes every line of a file with the same
/// prefix: a time stamp, and a host field or none. A line break that a
/// client smuggled into a message (a daemon that writes control characters
/// unescaped) or that a journal listing indents makes a line that starts
/// with whatever followed the break. So in a log read as [`Format::Auto`],
/// a line without a time stamp is never a login, and once the first line
/// has shown the log's prefix, a line with another one is not either. This
/// cannot refuse a real login: its line has the log's prefix. Logs without
/// time stamps are read as [`Format::Bare`]; when a log's daemon is
/// reconfigured to write other prefixes, its reader starts a new stream (the
/// agent does at each rotation and start).
#[derive(Clone, Debug)]
pub struct Stream {
    parser: Parser,
    /// The prefix of the log's lines, once a line has shown it.
    shape: Option<Shape>,
}

/// Why a line without time stamp is not a login in a log that has them.
pub const UNSTAMPED: &str = "no time stamp, unlike a log line (a continued or injected line)";
/// Why a line whose prefix differs from the log's is not a login.
pub const OTHER_SHAPE: &str =
    "prefix unlike this log's first line (a continued or injected line, or the log's format changed)";

impl Parser {
    /// A judge for the lines of one log, read in order.
    pub fn stream(&self) -> Stream {
        Stream::new(self.clone())
    }
}

impl Stream {
    fn new(parser: Parser) -> Stream {
        Stream {
            parser,
            shape: None,
        }
    }

    /// Judges the log's next line (a trailing `\n` or `\r\n` is ignored),
    /// read at `now`.
    pub fn judge(&mut self, line: &[u8], now: Timestamp) -> Verdict {
        let envelope = match prefix::split(self.parser.format(), strip_line_end(line)) {
            Ok(envelope) => envelope,
            Err(reason) => return Verdict::NoGrant(reason.into()),
        };
        if envelope.shape == Shape::Bare && self.parser.format() != Format::Bare {
            return Verdict::NoGrant(UNSTAMPED.into());
        }
        match self.shape {
            None => self.shape = Some(envelope.shape),
            Some(shape) if shape != envelope.shape => return Verdict::NoGrant(OTHER_SHAPE.into()),
            Some(_) => {}
        }
        self.parser.judge(&envelope, now)
    }

    /// The prefix the log's lines have, once known, as words.
    pub fn prefix(&self) -> Option<&'static str> {
        self.shape.map(Shape::describe)
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::ParserOptions;

    fn parser(format: Format) -> Parser {
        Parser::new(ParserOptions {
            format,
            timezone: TimeZone::UTC,
            ..ParserOptions::default()
        })
        .unwrap()
    }

    fn granted(stream: &mut Stream, line: &str) -> bool {
        let now = "2026-11-23T00:00:00Z".parse().unwrap();
        stream.judge(line.as_bytes(), now).grant().is_some()
    }

    const LOGIN: &str = "imapd[1]: Login user=alice host=h.example [192.0.2.10]";

    #[test]
    fn bare_lines_are_logins_only_in_bare_logs() {
        let auto = parser(Format::Auto);
        let mut stream = auto.stream();
        assert!(!granted(&mut stream, LOGIN));
        assert!(granted(&mut stream, &format!("Nov 22 20:25:01 mx {LOGIN}")));
        assert!(!granted(&mut stream, LOGIN));
        let bare = parser(Format::Bare);
        assert!(granted(&mut bare.stream(), LOGIN));
    }

    #[test]
    fn the_first_line_fixes_the_prefix() {
        let auto = parser(Format::Auto);
        let mut stream = auto.stream();
        assert_eq!(stream.prefix(), None);
        assert!(granted(&mut stream, &format!("Nov 22 20:25:01 mx {LOGIN}")));
        assert_eq!(stream.prefix(), Some("time stamp and host"));
        // An ISO stamp is the same prefix, a missing host is not.
        assert!(granted(
            &mut stream,
            &format!("2026-11-22T20:25:02Z mx {LOGIN}")
        ));
        assert!(!granted(&mut stream, &format!("Nov 22 20:25:03 {LOGIN}")));
        assert!(!granted(
            &mut stream,
            &format!("<22>1 2026-11-22T20:25:04Z mx imapd 1 - - {}", &LOGIN[10..])
        ));
        // A Dovecot log_path file has no host field.
        let mut file = auto.stream();
        let dovecot = "pop3-login: Info: Login: user=<a>, method=PLAIN, rip=192.0.2.11, lip=192.0.2.1, mpid=1";
        assert!(granted(&mut file, &format!("Nov 22 20:25:01 {dovecot}")));
        assert!(!granted(
            &mut file,
            &format!("Nov 22 20:25:01 mx dovecot: {dovecot}")
        ));
    }
}
