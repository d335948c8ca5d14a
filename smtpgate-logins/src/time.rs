//! Time stamps at the start of log lines.
//!
//! Scanning a stamp only checks its shape and reads its digits; turning it
//! into a [`Timestamp`] (which needs the time zone, and for year-less stamps
//! the current time) is left to [`Stamp::resolve`], so that only lines that
//! grant pay for it.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

/// How far ahead of `now` a login may be stamped and still grant.
///
/// Clocks of hosts that log to one collector drift by a few seconds, so a
/// stamp slightly ahead is a login that just happened. Anything further
/// ahead is refused rather than granted from now: such a line is either a
/// year-less stamp from last year's part of a log that is never rotated (a
/// first start reads whole files), whose login is long over, or a clock or
/// `--timezone` that is wrong, which the refusal's reason points out. Granting
/// it would replay an old login; refusing it costs a customer one retry
/// after the clock is fixed.
pub(crate) const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);

/// How far ahead of `now` a year-less stamp read as this year's is taken
/// to be this year's and refused, rather than last year's.
const AHEAD_AND_AMBIGUOUS: SignedDuration = SignedDuration::from_hours(24);

/// Why a stamp names no usable instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StampError {
    /// A date no calendar has (`Feb 30`, `Dec 32`).
    Impossible,
    /// Later than `now` plus [`FUTURE_TOLERANCE`].
    Future,
}

/// Why a login stamped too far ahead of now does not grant.
pub const FUTURE_STAMP: &str =
    "time stamp in the future (a year-less stamp from last year, or a wrong clock or --timezone)";
/// Why a login stamped on a day no calendar has does not grant.
pub const IMPOSSIBLE_STAMP: &str = "impossible time stamp";

impl StampError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            StampError::Impossible => IMPOSSIBLE_STAMP,
            StampError::Future => FUTURE_STAMP,
        }
    }
}

/// Refuses an instant later than `now` plus [`FUTURE_TOLERANCE`].
pub(crate) fn not_in_future(instant: Timestamp, now: Timestamp) -> Result<Timestamp, StampError> {
    let latest = now
        .checked_add(FUTURE_TOLERANCE)
        .map_err(|_| StampError::Future)?;
    if instant > latest {
        return Err(StampError::Future);
    }
    Ok(instant)
}

/// A time stamp as written at the start of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// RFC 3164 and `journalctl -o short`: month, day and time of day, without
    /// year or offset.
    YearLess { month: i8, day: i8, time: Time },
    /// ISO 8601 / RFC 3339 with or without an offset.
    Civil {
        datetime: DateTime,
        offset: Option<Offset>,
    },
}

impl Stamp {
    /// The instant this stamp denotes, if it is no later than `now` plus
    /// [`FUTURE_TOLERANCE`]. Offset-less stamps are read in `tz`. A year-less
    /// stamp gets the latest year that puts it no later than that (a `Dec 31`
    /// line read on `Jan 1` is last year's), unless this year's reading is
    /// ahead by less than a day: that is either last year's line or a wrong
    /// clock, and neither grants.
    pub(crate) fn resolve(self, tz: &TimeZone, now: Timestamp) -> Result<Timestamp, StampError> {
        match self {
            Stamp::Civil {
                datetime,
                offset: Some(offset),
            } => not_in_future(
                offset
                    .to_timestamp(datetime)
                    .map_err(|_| StampError::Impossible)?,
                now,
            ),
            Stamp::Civil {
                datetime,
                offset: None,
            } => not_in_future(
                tz.to_ambiguous_timestamp(datetime)
                    .compatible()
                    .map_err(|_| StampError::Impossible)?,
                now,
            ),
            Stamp::YearLess { month, day, time } => {
                let this_year = tz.to_datetime(now).year();
                // Eight years back reaches a leap year for any `Feb 29`.
                let mut readings = (this_year - 8..=this_year + 1).rev().filter_map(|year| {
                    let datetime = Date::new(year, month, day).ok()?.to_datetime(time);
                    tz.to_ambiguous_timestamp(datetime).compatible().ok()
                });
                let mut earliest_ahead = None;
                let latest_past = readings.find(|&instant| {
                    let past = not_in_future(instant, now).is_ok();
                    if !past {
                        earliest_ahead = Some(instant);
                    }
                    past
                });
                let ambiguous = earliest_ahead
                    .is_some_and(|ahead| ahead.duration_since(now) < AHEAD_AND_AMBIGUOUS);
                match latest_past {
                    _ if ambiguous => Err(StampError::Future),
                    Some(instant) => Ok(instant),
                    None if earliest_ahead.is_some() => Err(StampError::Future),
                    None => Err(StampError::Impossible),
                }
            }
        }
    }
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Scans `Nov 22 20:25:01`, `Nov  2 20:25:01`, `Nov 02 20:25:01` and the
/// same with a fraction (`20:25:01.123456`, journalctl's `short-precise`).
/// Returns the stamp and its length.
pub(crate) fn scan_year_less(text: &[u8]) -> Option<(Stamp, usize)> {
    let month = MONTHS.iter().position(|m| text.starts_with(&m[..]))? as i8 + 1;
    let mut cur = Cursor { text, pos: 3 };
    cur.byte(b' ')?;
    // Syslog pads single-digit days with a space, journalctl with a zero.
    if cur.peek() == Some(b' ') {
        cur.pos += 1;
    }
    let day = cur.digits(1, 2)? as i8;
    cur.byte(b' ')?;
    let time = cur.time_of_day()?;
    Some((Stamp::YearLess { month, day, time }, cur.pos))
}

/// Scans an ISO 8601 stamp: `2026-11-22T20:25:01`, an optional fraction, and
/// an optional offset (`Z`, `+01:00`, `+0100`, `+01`). With `space_separated`
/// the date and time are separated by a space instead of `T` (Dovecot's
/// `log_timestamp = "%Y-%m-%d %H:%M:%S "`). Returns the stamp and its length.
pub(crate) fn scan_iso(text: &[u8], space_separated: bool) -> Option<(Stamp, usize)> {
    let mut cur = Cursor { text, pos: 0 };
    let year = cur.digits(4, 4)? as i16;
    cur.byte(b'-')?;
    let month = cur.digits(2, 2)? as i8;
    cur.byte(b'-')?;
    let day = cur.digits(2, 2)? as i8;
    cur.byte(if space_separated { b' ' } else { b'T' })?;
    let time = cur.time_of_day()?;
    let offset = cur.offset()?;
    let datetime = Date::new(year, month, day).ok()?.to_datetime(time);
    Some((Stamp::Civil { datetime, offset }, cur.pos))
}

/// A reading position in a stamp.
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn byte(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.pos += 1)
    }

    /// Reads `min..=max` ASCII digits as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<i32> {
        let run = self.text[self.pos..]
            .iter()
            .take(max)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if run < min {
            return None;
        }
        let value = self.text[self.pos..self.pos + run]
            .iter()
            .fold(0, |acc, &d| acc * 10 + i32::from(d - b'0'));
        self.pos += run;
        Some(value)
    }

    /// `hh:mm:ss` with an optional fraction of up to nine digits.
    fn time_of_day(&mut self) -> Option<Time> {
        let hour = self.digits(2, 2)? as i8;
        self.byte(b':')?;
        let minute = self.digits(2, 2)? as i8;
        self.byte(b':')?;
        let second = self.digits(2, 2)? as i8;
        let mut nanos = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let start = self.pos;
            let fraction = self.digits(1, 9)?;
            nanos = fraction * 10i32.pow((9 - (self.pos - start)) as u32);
        }
        Time::new(hour, minute, second, nanos).ok()
    }

    /// An optional UTC offset: `Z`, `±hh:mm`, `±hhmm` or `±hh`.
    /// The outer `None` means a malformed offset.
    fn offset(&mut self) -> Option<Option<Offset>> {
        let sign = match self.peek() {
            Some(b'Z') | Some(b'z') => {
                self.pos += 1;
                return Some(Some(Offset::UTC));
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Some(None),
        };
        self.pos += 1;
        let hours = self.digits(2, 2)?;
        if self.peek() == Some(b':') {
            self.pos += 1;
        }
        let minutes = self.digits(2, 2).unwrap_or(0);
        Offset::from_seconds(sign * (hours * 3600 + minutes * 60))
            .ok()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn year_less(text: &str) -> Stamp {
        let (stamp, len) = scan_year_less(text.as_bytes()).unwrap();
        assert_eq!(len, text.len());
        stamp
    }

    #[test]
    fn dec_31_read_on_jan_1_is_last_year() {
        let stamp = year_less("Dec 31 23:59:58");
        let got = stamp.resolve(&TimeZone::UTC, ts("2027-01-01T00:00:05Z"));
        assert_eq!(got, Ok(ts("2026-12-31T23:59:58Z")));
    }

    #[test]
    fn jan_1_read_on_dec_31_is_next_year_within_a_day() {
        let stamp = year_less("Jan  1 00:00:10");
        let got = stamp.resolve(&TimeZone::UTC, ts("2026-12-31T23:59:50Z"));
        assert_eq!(got, Ok(ts("2027-01-01T00:00:10Z")));
    }

    #[test]
    fn a_stamp_two_days_ahead_is_last_year() {
        let stamp = year_less("Nov 24 12:00:00");
        let got = stamp.resolve(&TimeZone::UTC, ts("2026-11-22T12:00:00Z"));
        assert_eq!(got, Ok(ts("2025-11-24T12:00:00Z")));
    }

    #[test]
    fn feb_29_finds_the_last_leap_year() {
        let stamp = year_less("Feb 29 10:00:00");
        let got = stamp.resolve(&TimeZone::UTC, ts("2027-03-01T00:00:00Z"));
        assert_eq!(got, Ok(ts("2024-02-29T10:00:00Z")));
    }

    #[test]
    fn year_less_stamps_use_the_time_zone() {
        let tz = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let winter = year_less("Nov 22 20:25:01").resolve(&tz, ts("2026-11-23T00:00:00Z"));
        assert_eq!(winter, Ok(ts("2026-11-22T19:25:01Z")));
        let summer = year_less("Jul  2 20:25:01").resolve(&tz, ts("2026-11-23T00:00:00Z"));
        assert_eq!(summer, Ok(ts("2026-07-02T18:25:01Z")));
    }

    #[test]
    fn year_inference_uses_the_local_year() {
        // At 23:30 UTC on Dec 31 it is already Jan 1 in UTC+2.
        let tz = TimeZone::fixed(Offset::from_hours(2).unwrap());
        let stamp = year_less("Jan  1 01:00:00");
        let got = stamp.resolve(&tz, ts("2026-12-31T23:30:00Z"));
        assert_eq!(got, Ok(ts("2026-12-31T23:00:00Z")));
    }

    #[test]
    fn day_padding_and_fractions() {
        assert_eq!(year_less("Nov  2 20:25:01"), year_less("Nov 02 20:25:01"));
        let Stamp::YearLess { time, .. } = year_less("Nov 22 20:25:01.123456") else {
            panic!()
        };
        assert_eq!(time.subsec_nanosecond(), 123_456_000);
    }

    #[test]
    fn iso_offsets() {
        let tz = TimeZone::UTC;
        let now = ts("2030-01-01T00:00:00Z");
        for (text, want) in [
            ("2026-11-22T20:25:01Z", "2026-11-22T20:25:01Z"),
            ("2026-11-22T20:25:01.5+01:00", "2026-11-22T19:25:01.5Z"),
            ("2026-11-22T20:25:01+0100", "2026-11-22T19:25:01Z"),
            ("2026-11-22T20:25:01-05", "2026-11-23T01:25:01Z"),
        ] {
            let (stamp, len) = scan_iso(text.as_bytes(), false).unwrap();
            assert_eq!(len, text.len(), "{text}");
            assert_eq!(stamp.resolve(&tz, now), Ok(ts(want)), "{text}");
        }
    }

    #[test]
    fn iso_without_offset_uses_the_time_zone() {
        let tz = TimeZone::fixed(Offset::from_hours(-3).unwrap());
        let (stamp, _) = scan_iso(b"2026-11-22 20:25:01", true).unwrap();
        let got = stamp.resolve(&tz, ts("2030-01-01T00:00:00Z"));
        assert_eq!(got, Ok(ts("2026-11-22T23:25:01Z")));
    }

    #[test]
    fn malformed_stamps() {
        for text in [
            "Nov 22 20:25",
            "Nox 22 20:25:01",
            "Nov 22 25:25:01",
            "Nov x 20:25:01",
        ] {
            assert!(scan_year_less(text.as_bytes()).is_none(), "{text}");
        }
        for text in [
            "2026-13-01T00:00:00Z",
            "2026-11-22T20:25:01+1",
            "2026-11-22 20:25:01",
        ] {
            assert!(scan_iso(text.as_bytes(), false).is_none(), "{text}");
        }
    }
}
