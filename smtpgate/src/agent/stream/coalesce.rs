//! Which logins a POP host need not publish: a customer whose mail client
//! checks every minute logs in sixty times an hour, and each login would
//! otherwise be an entry that every relay reads. A grant is published again
//! only once less than half of its TTL is left, so the relays' grant never
//! runs out while the customer keeps logging in, and the stream carries at
//! most two entries per customer and TTL.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// How often grants that have run out are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The grants published lately: (covered address, user) -> until when.
pub struct Coalescer {
    published: HashMap<(IpAddr, Option<String>), Instant>,
    pruned: Instant,
}

impl Coalescer {
    pub fn new(now: Instant) -> Self {
        Self {
            published: HashMap::new(),
            pruned: now,
        }
    }

    /// Whether a grant of `covered` (the address, or the first of its
    /// prefix) for `user`, lasting `ttl` from `now`, must be published;
    /// if so it is remembered as published. If not, the grant published
    /// earlier lasts the time returned.
    pub fn admit(
        &mut self,
        covered: IpAddr,
        user: Option<&str>,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        if now.duration_since(self.pruned) >= PRUNE_EVERY {
            self.published.retain(|_, until| *until > now);
            self.pruned = now;
        }
        let key = (covered, user.map(str::to_string));
        if let Some(until) = self.published.get(&key) {
            let left = until.saturating_duration_since(now);
            if left >= ttl / 2 {
                return Err(left);
            }
        }
        self.published.insert(key, now + ttl);
        Ok(())
    }

    /// Forgets that `covered` was published for `user`: its entry was
    /// never sent, so the next login must publish again.
    pub fn forget(&mut self, covered: IpAddr, user: Option<&str>) {
        self.published.remove(&(covered, user.map(str::to_string)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn a_grant_is_published_again_once_half_its_ttl_is_gone() {
        let start = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut recent = Coalescer::new(start);
        assert_eq!(recent.admit(ip, Some("alice"), TTL, start), Ok(()));
        let minute = Duration::from_secs(60);
        assert_eq!(
            recent.admit(ip, Some("alice"), TTL, start + minute),
            Err(TTL - minute)
        );
        let half = start + TTL / 2;
        assert_eq!(recent.admit(ip, Some("alice"), TTL, half), Err(TTL / 2));
        assert_eq!(
            recent.admit(ip, Some("alice"), TTL, half + Duration::from_secs(1)),
            Ok(())
        );
    }

    #[test]
    fn another_user_or_address_is_published_at_once() {
        let start = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut recent = Coalescer::new(start);
        assert!(recent.admit(ip, Some("alice"), TTL, start).is_ok());
        assert!(recent.admit(ip, Some("bob"), TTL, start).is_ok());
        assert!(recent
            .admit("192.0.2.8".parse().unwrap(), Some("alice"), TTL, start)
            .is_ok());
        recent.forget(ip, Some("alice"));
        assert!(recent.admit(ip, Some("alice"), TTL, start).is_ok());
    }

    #[test]
    fn expired_grants_are_forgotten() {
        let start = Instant::now();
        let mut recent = Coalescer::new(start);
        for last in 0..100u8 {
            let ip = IpAddr::from([192, 0, 2, last]);
            assert!(recent.admit(ip, None, TTL, start).is_ok());
        }
        let later = start + TTL + PRUNE_EVERY;
        assert!(recent
            .admit("198.51.100.1".parse().unwrap(), None, TTL, later)
            .is_ok());
        assert_eq!(recent.published.len(), 1);
    }
}
