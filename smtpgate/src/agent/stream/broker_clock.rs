//! The broker's clock, as a relay sees it through its own monotonic clock.
//!
//! The only time in a stream entry is its ID: the broker's wall clock, in
//! milliseconds, when the entry was added. A grant expires `ttl_ms` after
//! that, by the broker's clock. A relay reads the broker's clock with
//! `TIME` and its own monotonic clock just before and just after; the reply
//! was made somewhere in between, most likely halfway, and is off from that
//! by at most half the round trip. That one reading maps every broker time
//! onto the relay's monotonic clock, which is the clock the kernel judges
//! expiries on. Neither the publisher's wall clock nor the relay's is in
//! the sum: hosts whose wall clocks disagree by hours still expire a grant
//! at the same moment, give or take half a round trip to the broker.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::gate::clock;

/// Readings taken at each connection; the one with the shortest round trip
/// is kept, since its midpoint is the surest.
const READINGS: usize = 3;

/// One reading of the broker's clock against the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerClock {
    /// The broker's time (microseconds since the epoch) at `monotonic_ns`.
    broker_us: i128,
    monotonic_ns: i128,
    pub round_trip: Duration,
}

impl BrokerClock {
    /// A reading: `TIME` was sent at `sent_ns` and answered `broker_us` at
    /// `received_ns`, both on the monotonic clock.
    pub fn reading(sent_ns: u64, broker_us: u64, received_ns: u64) -> Self {
        let round_trip = received_ns.saturating_sub(sent_ns);
        Self {
            broker_us: i128::from(broker_us),
            monotonic_ns: i128::from(sent_ns) + i128::from(round_trip / 2),
            round_trip: Duration::from_nanos(round_trip),
        }
    }

    /// The monotonic time at which the broker's clock reads `broker_ms`
    /// (zero for a time before the monotonic clock began).
    pub fn monotonic_at(&self, broker_ms: u64) -> u64 {
        let ahead_ns = (i128::from(broker_ms) * 1000 - self.broker_us) * 1000;
        u64::try_from(self.monotonic_ns + ahead_ns).unwrap_or(0)
    }

    /// The broker's time, in milliseconds, at the monotonic time `monotonic`.
    pub fn broker_ms_at(&self, monotonic: u64) -> u64 {
        let ahead_us = (i128::from(monotonic) - self.monotonic_ns) / 1000;
        u64::try_from((self.broker_us + ahead_us) / 1000).unwrap_or(0)
    }

    /// Reads the broker's clock a few times over `conn`; keeps the reading
    /// with the shortest round trip.
    pub async fn measure(conn: &mut MultiplexedConnection) -> redis::RedisResult<Self> {
        let mut best: Option<Self> = None;
        for _ in 0..READINGS {
            let sent = clock::monotonic_ns();
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
            let reading = Self::reading(sent, secs * 1_000_000 + micros, clock::monotonic_ns());
            if best.is_none_or(|best| reading.round_trip < best.round_trip) {
                best = Some(reading);
            }
        }
        Ok(best.expect("READINGS is not zero"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC_NS: u64 = 1_000_000_000;

    #[test]
    fn the_reply_is_placed_halfway_through_the_round_trip() {
        // TIME sent at 100 s, answered at 100.2 s: the broker said
        // 1,700,000,000 s, taken to be its time at 100.1 s.
        let broker = 1_700_000_000 * 1_000_000;
        let clock = BrokerClock::reading(100 * SEC_NS, broker, 100 * SEC_NS + SEC_NS / 5);
        assert_eq!(clock.round_trip, Duration::from_millis(200));
        assert_eq!(
            clock.monotonic_at(1_700_000_000_000),
            100 * SEC_NS + SEC_NS / 10
        );
        // An entry added at that moment with a ten-minute TTL.
        assert_eq!(
            clock.monotonic_at(1_700_000_000_000 + 600_000),
            700 * SEC_NS + SEC_NS / 10
        );
        assert_eq!(
            clock.broker_ms_at(100 * SEC_NS + SEC_NS / 10),
            1_700_000_000_000
        );
    }

    #[test]
    fn wall_clocks_do_not_enter_the_expiry() {
        // Two relays, booted at different times (their monotonic clocks
        // differ by 5000 s) and with wall clocks hours apart (which no
        // reading sees), read the same broker at the same instant. A grant
        // expires at one instant for both: the same distance from now.
        let broker_now = 1_700_000_000_000_000u64;
        let entry_ms = broker_now / 1000 - 2_000;
        let ttl_ms = 10_000;
        let left = |booted_ns: u64| {
            let now = booted_ns + 50 * SEC_NS;
            let clock = BrokerClock::reading(now - SEC_NS / 1000, broker_now, now + SEC_NS / 1000);
            clock.monotonic_at(entry_ms + ttl_ms) - now
        };
        assert_eq!(left(0), 8 * SEC_NS);
        assert_eq!(left(5000 * SEC_NS), 8 * SEC_NS);
    }

    #[test]
    fn times_before_the_monotonic_clock_began_are_zero() {
        let clock = BrokerClock::reading(SEC_NS, 1_700_000_000_000_000, SEC_NS);
        assert_eq!(clock.monotonic_at(1_600_000_000_000), 0);
    }
}
