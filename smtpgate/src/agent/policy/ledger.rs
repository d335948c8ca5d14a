//! The recipients each address and each user sent, against their quotas.
//!
//! A recipient is counted against the quotas of the network its address is
//! in (`limits_for`). Networks may set other quotas, so each distinct quota
//! keeps counts of its own: a user's recipients are summed over every
//! address whose network has the same user quota, which in the common case
//! of one quota for all is every address the user holds.
//!
//! The counts live in memory only and start afresh when the agent does.
//! That is safe: what a quota did outlives the agent, since revoked grants
//! stay revoked and cooldowns are pinned; only a sender's progress towards
//! its quota is forgotten.

use std::{hash::Hash, net::IpAddr, time::Duration};

use crate::agent::{
    quota::{Counts, Quota},
    settings::Limits,
};

/// What counting one recipient found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Within,
    /// The address went over its quota; `first` for the recipient that
    /// crossed it (the ones after it in the window are over too).
    OverAddress {
        total: u64,
        quota: Quota,
        first: bool,
    },
    /// The user went over their quota.
    OverUser {
        total: u64,
        quota: Quota,
    },
}

/// Counts of one kind of key, one [`Counts`] per distinct quota.
#[derive(Debug)]
struct Tally<K> {
    by_quota: Vec<Counts<K>>,
}

impl<K: Hash + Eq + Clone> Tally<K> {
    fn new() -> Self {
        Self {
            by_quota: Vec::new(),
        }
    }

    fn count(&mut self, key: &K, quota: Quota, now: Duration) -> (u64, bool) {
        let at = match self.by_quota.iter().position(|c| c.quota() == quota) {
            Some(at) => at,
            None => {
                self.by_quota.push(Counts::new(quota));
                self.by_quota.len() - 1
            }
        };
        let counted = self.by_quota[at].count(key, now);
        (counted.total, counted.over)
    }

    fn forget(&mut self, key: &K) {
        for counts in &mut self.by_quota {
            counts.forget(key);
        }
    }

    fn prune(&mut self, now: Duration) {
        for counts in &mut self.by_quota {
            counts.prune(now);
        }
    }

    fn keys(&self) -> usize {
        self.by_quota.iter().map(Counts::keys).sum()
    }
}

/// Recipients counted by address and by user.
#[derive(Debug)]
pub struct Ledger {
    addresses: Tally<IpAddr>,
    users: Tally<String>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            addresses: Tally::new(),
            users: Tally::new(),
        }
    }
}

impl Ledger {
    /// Counts one recipient from `address` (as its grant covers it), sent
    /// by `user` if the grant has one, under `limits`, at `now` (any
    /// monotonic time).
    ///
    /// The address is judged first, and a recipient it defers is not
    /// counted against the user: a user behind an address others fill up
    /// is not pushed towards a revoke by mail that was never taken.
    pub fn count(
        &mut self,
        address: IpAddr,
        user: Option<&str>,
        limits: &Limits,
        now: Duration,
    ) -> Verdict {
        if let Some(quota) = limits.address_quota {
            let (total, over) = self.addresses.count(&address, quota, now);
            if over {
                let first = total == u64::from(quota.limit) + 1;
                return Verdict::OverAddress {
                    total,
                    quota,
                    first,
                };
            }
        }
        if let (Some(user), Some(quota)) = (user, limits.user_quota) {
            let (total, over) = self.users.count(&user.to_string(), quota, now);
            if over {
                return Verdict::OverUser { total, quota };
            }
        }
        Verdict::Within
    }

    /// Starts `user` afresh: they went over and were dealt with.
    pub fn forget_user(&mut self, user: &str) {
        self.users.forget(&user.to_string());
    }

    /// Drops the senders that sent nothing within their window.
    pub fn prune(&mut self, now: Duration) {
        self.addresses.prune(now);
        self.users.prune(now);
    }

    /// Addresses and users with counts, over all quotas.
    pub fn keys(&self) -> usize {
        self.addresses.keys() + self.users.keys()
    }
}

#[cfg(test)]
mod tests {
    use smtpgate_common::SynBudget;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: Duration = Duration::from_secs(7 * 3600);

    fn quota(limit: u32) -> Quota {
        Quota {
            limit,
            window: HOUR,
        }
    }

    fn limits(user: Option<u32>, address: Option<u32>) -> Limits {
        Limits {
            ttl: HOUR,
            syn_budget: SynBudget::UNLIMITED,
            user_quota: user.map(quota),
            address_quota: address.map(quota),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_user_is_counted_over_all_their_addresses() {
        let mut ledger = Ledger::default();
        let terms = limits(Some(3), Some(100));
        for address in ["192.0.2.2", "192.0.2.3", "192.0.2.2"] {
            assert_eq!(
                ledger.count(ip(address), Some("alice"), &terms, NOW),
                Verdict::Within
            );
        }
        assert_eq!(
            ledger.count(ip("192.0.2.3"), Some("alice"), &terms, NOW),
            Verdict::OverUser {
                total: 4,
                quota: quota(3)
            }
        );
        assert_eq!(
            ledger.count(ip("192.0.2.2"), Some("bob"), &terms, NOW),
            Verdict::Within,
            "alice's count spilled over to bob"
        );
    }

    #[test]
    fn an_address_over_quota_defers_without_counting_the_user() {
        let mut ledger = Ledger::default();
        let terms = limits(Some(2), Some(2));
        let shared = ip("198.51.100.7");
        ledger.count(shared, None, &terms, NOW);
        ledger.count(shared, None, &terms, NOW);
        assert_eq!(
            ledger.count(shared, Some("carol"), &terms, NOW),
            Verdict::OverAddress {
                total: 3,
                quota: quota(2),
                first: true
            }
        );
        assert!(matches!(
            ledger.count(shared, Some("carol"), &terms, NOW),
            Verdict::OverAddress { first: false, .. }
        ));
        // carol's two deferred recipients did not count: elsewhere she
        // still has her whole quota.
        let elsewhere = ip("203.0.113.9");
        for _ in 0..2 {
            assert_eq!(
                ledger.count(elsewhere, Some("carol"), &terms, NOW),
                Verdict::Within
            );
        }
    }

    #[test]
    fn quotas_switched_off_count_nothing() {
        let mut ledger = Ledger::default();
        let terms = limits(None, None);
        for _ in 0..10 {
            assert_eq!(
                ledger.count(ip("192.0.2.2"), Some("dave"), &terms, NOW),
                Verdict::Within
            );
        }
        assert_eq!(ledger.keys(), 0);
    }

    #[test]
    fn each_quota_counts_the_recipients_sent_under_it() {
        let mut ledger = Ledger::default();
        let (home, office) = (limits(Some(2), None), limits(Some(5), None));
        for _ in 0..4 {
            ledger.count(ip("10.1.0.1"), Some("erin"), &office, NOW);
        }
        ledger.count(ip("192.0.2.2"), Some("erin"), &home, NOW);
        ledger.count(ip("192.0.2.2"), Some("erin"), &home, NOW);
        assert!(matches!(
            ledger.count(ip("192.0.2.2"), Some("erin"), &home, NOW),
            Verdict::OverUser { total: 3, .. }
        ));
        assert!(matches!(
            ledger.count(ip("10.1.0.1"), Some("erin"), &office, NOW),
            Verdict::Within
        ));
    }

    #[test]
    fn a_forgotten_user_starts_afresh_and_quiet_senders_are_pruned() {
        let mut ledger = Ledger::default();
        let terms = limits(Some(1), Some(100));
        ledger.count(ip("192.0.2.2"), Some("frank"), &terms, NOW);
        ledger.forget_user("frank");
        assert_eq!(
            ledger.count(ip("192.0.2.2"), Some("frank"), &terms, NOW),
            Verdict::Within
        );
        assert_eq!(ledger.keys(), 2);
        ledger.prune(NOW + HOUR);
        assert_eq!(ledger.keys(), 0);
    }
}
