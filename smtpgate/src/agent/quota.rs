//! Recipient quotas over sliding windows: `--user-quota 500/1h` allows a
//! user 500 recipients in any hour.
//!
//! A window is kept as [`SLOTS`] counts of equal length, so memory per
//! counted user or address is fixed and the window slides in steps of
//! 1/[`SLOTS`] of its length: a recipient leaves the count between
//! `window - window/SLOTS` and `window` after it was counted, never earlier.

use std::{collections::HashMap, fmt, hash::Hash, str::FromStr, time::Duration};

use crate::gate::clock::parse_rate;

/// Steps a window slides in.
pub const SLOTS: u64 = 60;

/// At most `limit` recipients in any `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

impl FromStr for Quota {
    type Err = String;

    /// `COUNT/DURATION`, e.g. `500/1h`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (limit, window) = parse_rate(text)?;
        if window < Duration::from_secs(SLOTS) {
            return Err(format!("'{text}': the window must be at least {SLOTS} s"));
        }
        Ok(Self { limit, window })
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }
}

/// One key's counts: `(slot number, recipients)` for the slots of the
/// current window that saw any, oldest first.
#[derive(Debug, Default)]
struct Window {
    slots: Vec<(u64, u32)>,
}

impl Window {
    /// Drops slots older than the window that ends in slot `now`.
    fn slide(&mut self, now: u64) {
        self.slots.retain(|&(slot, _)| slot + SLOTS > now);
    }

    fn total(&self) -> u64 {
        self.slots.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    fn add(&mut self, now: u64, count: u32) {
        match self.slots.last_mut() {
            Some((slot, n)) if *slot == now => *n = n.saturating_add(count),
            _ => self.slots.push((now, count)),
        }
    }
}

/// Recipients counted per key (a user, an address) against one [`Quota`].
#[derive(Debug)]
pub struct Counts<K> {
    quota: Quota,
    windows: HashMap<K, Window>,
}

/// What counting one more recipient found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// Recipients in the window, this one included.
    pub total: u64,
    pub over: bool,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            windows: HashMap::new(),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn slot_of(&self, now: Duration) -> u64 {
        let slot_ns = (self.quota.window.as_nanos() / u128::from(SLOTS)).max(1);
        (now.as_nanos() / slot_ns) as u64
    }

    /// Counts a recipient for `key` at `now` (any monotonic time).
    pub fn count(&mut self, key: &K, now: Duration) -> Counted {
        let slot = self.slot_of(now);
        let window = self.windows.entry(key.clone()).or_default();
        window.slide(slot);
        window.add(slot, 1);
        let total = window.total();
        Counted {
            total,
            over: total > u64::from(self.quota.limit),
        }
    }

    /// Forgets `key`'s counts (a pardon starts the user afresh).
    pub fn forget(&mut self, key: &K) {
        self.windows.remove(key);
    }

    /// Drops the keys whose windows are empty at `now`, so that memory
    /// follows the senders of the last window only.
    pub fn prune(&mut self, now: Duration) {
        let slot = self.slot_of(now);
        self.windows.retain(|_, window| {
            window.slide(slot);
            !window.slots.is_empty()
        });
    }

    pub fn keys(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn quota(limit: u32) -> Quota {
        Quota {
            limit,
            window: HOUR,
        }
    }

    #[test]
    fn quotas_parse_and_bad_ones_say_why() {
        assert_eq!("500/1h".parse::<Quota>(), Ok(quota(500)));
        assert_eq!(
            " 20 / 10m ".parse::<Quota>(),
            Ok(Quota {
                limit: 20,
                window: Duration::from_secs(600)
            })
        );
        for (bad, why) in [
            ("500", "COUNT/DURATION"),
            ("x/1h", "whole number"),
            ("500/soon", "not a duration"),
            ("0/1h", "allows nothing"),
            ("5/10s", "at least 60 s"),
        ] {
            let err = bad.parse::<Quota>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_recipient_past_the_limit_is_over() {
        let mut counts = Counts::new(quota(3));
        let now = Duration::from_secs(10_000);
        let totals: Vec<Counted> = (0..4).map(|_| counts.count(&"u", now)).collect();
        assert_eq!(
            totals.iter().map(|c| c.over).collect::<Vec<_>>(),
            [false, false, false, true]
        );
        assert_eq!(totals[3].total, 4);
        assert!(
            !counts.count(&"other", now).over,
            "one key's count spilled into another's"
        );
    }

    #[test]
    fn recipients_leave_the_count_a_window_later_and_not_before() {
        let mut counts = Counts::new(quota(2));
        let start = Duration::from_secs(100 * 3600);
        counts.count(&"u", start);
        counts.count(&"u", start);
        let slot = HOUR / SLOTS as u32;
        assert!(
            counts
                .count(&"u", start + HOUR - slot - Duration::from_secs(1))
                .over,
            "left before the window ended"
        );
        // A window on, the two of `start` are gone; the one just counted stays.
        assert_eq!(counts.count(&"u", start + HOUR + slot).total, 2);
    }

    #[test]
    fn pruning_forgets_quiet_keys_only() {
        let mut counts = Counts::new(quota(10));
        let start = Duration::from_secs(50 * 3600);
        counts.count(&"quiet", start);
        counts.count(&"busy", start + HOUR);
        counts.prune(start + HOUR + Duration::from_secs(1));
        assert_eq!(counts.keys(), 1);
        assert_eq!(counts.count(&"busy", start + HOUR).total, 2);
    }
}
