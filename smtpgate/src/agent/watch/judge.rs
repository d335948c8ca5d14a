//! How the lines of a log are judged: one code path for `run` and for
//! `check-log`, so that a log checked beforehand is judged exactly as the
//! agent will judge it.

use jiff::Timestamp;
use smtpgate_logins::{Parser, Stream, Verdict};

/// Why a cut line is not a login.
pub const CUT: &str = "line longer than 64 KiB, cut: its end is lost";

/// Judges the lines of one log in order, as read with the 64 KiB bound of
/// `smtpgate_tail` (a follower, or `ReadLines`).
pub struct LogJudge {
    stream: Stream,
}

impl LogJudge {
    pub fn new(parser: &Parser) -> Self {
        Self {
            stream: parser.stream(),
        }
    }

    /// The verdict on the log's next line, read at `now`. A line the reader
    /// `cut` is never a login: what it said after the cut (the address of a
    /// format that ends with one, the rest of a custom pattern's match) is
    /// gone, so its start alone proves nothing. A real login line is a few
    /// hundred bytes.
    pub fn judge(&mut self, bytes: &[u8], cut: bool, now: Timestamp) -> Verdict {
        if cut {
            return Verdict::NoGrant(CUT.into());
        }
        self.stream.judge(bytes, now)
    }

    /// The prefix this log's lines have, once a line has shown it.
    pub fn prefix(&self) -> Option<&'static str> {
        self.stream.prefix()
    }
}
