//! Grant expiries are nanoseconds on the kernel's monotonic clock, so wall
//! clock jumps (NTP steps, DST) never lengthen or shorten a grant.
//!
//! The program reads that clock either precisely (`bpf_ktime_get_ns`) or as
//! of the last tick (`bpf_ktime_get_coarse_ns`). The agent reads the coarse
//! one, CLOCK_MONOTONIC_COARSE: the same snapshot as the coarse helper, and
//! never ahead of the precise one. So once the agent calls a grant expired,
//! the program calls it expired too, on either clock; `list` never shows a
//! grant gone while the gate still lets its SYNs through.

use std::time::{Duration, SystemTime};

/// Nanoseconds on CLOCK_MONOTONIC_COARSE, as `bpf_ktime_get_coarse_ns`
/// returns them.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC_COARSE exists since 2.6.32.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The monotonic expiry of a grant that lasts `ttl` from now.
pub fn expiry_after(ttl: Duration) -> u64 {
    monotonic_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}

/// How long until `expiry`; zero once it has passed.
pub fn remaining(expiry: u64) -> Duration {
    Duration::from_nanos(expiry.saturating_sub(monotonic_ns()))
}

/// The wall-clock time at which the monotonic clock reads (or read)
/// `monotonic`, by this host's wall clock now.
pub fn wall_time_at(monotonic: u64) -> SystemTime {
    let now = monotonic_ns();
    let wall = SystemTime::now();
    if monotonic >= now {
        wall + Duration::from_nanos(monotonic - now)
    } else {
        wall - Duration::from_nanos(now - monotonic)
    }
}

/// Parses a human duration such as `90s`, `10m`, `1h` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("'{text}' is not a duration like 90s, 10m or 1h ({e})"))?;
    if d.is_zero() {
        return Err(format!("'{text}' is zero; a duration must be positive"));
    }
    Ok(d)
}

/// Parses `COUNT/DURATION`, such as `500/1h` or `10/1s`.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("'{text}' is not COUNT/DURATION (for example 500/1h)"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("'{count}' in '{text}' is not a whole number"))?;
    if count == 0 {
        return Err(format!(
            "'{text}' allows nothing; write off to have no limit"
        ));
    }
    Ok((count, parse_duration(per)?))
}

/// `1m05s`-style rendering of a whole number of seconds.
pub fn format_secs(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("'soon' is not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
    }

    #[test]
    fn expiry_is_ttl_ahead_of_now() {
        let before = monotonic_ns();
        let expiry = expiry_after(Duration::from_secs(600));
        assert!(expiry >= before + 600_000_000_000);
        assert!(remaining(expiry) <= Duration::from_secs(600));
        assert_eq!(remaining(before), Duration::ZERO);
    }

    #[test]
    fn seconds_render_compactly() {
        assert_eq!(format_secs(Duration::from_secs(7)), "7s");
        assert_eq!(format_secs(Duration::from_secs(65)), "1m05s");
        assert_eq!(format_secs(Duration::from_secs(3725)), "1h02m05s");
    }
}
