//! A grant as the maps hold it: the value the gate reads for each source,
//! and the record of who earned it, which only the agent reads.

/// The value of the grant map, [`crate::GRANTS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Grant {
    /// Expiry in nanoseconds on `CLOCK_MONOTONIC`, the clock
    /// `bpf_ktime_get_ns` reads.
    pub expiry_ns: u64,
    pub budget: SynBudget,
}

/// How fast a granted source may open connections: a token bucket in the
/// form of the generic cell rate algorithm, which needs one moving field.
///
/// A SYN at time `now` is within the budget unless
/// `max(next_ns, now) - now > tolerance_ns`; one that is moves `next_ns`
/// to `max(next_ns, now) + interval_ns`. So `tolerance_ns / interval_ns + 1`
/// SYNs may come at once, and then one every `interval_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SynBudget {
    /// Nanoseconds per SYN at the sustained rate; zero: no budget.
    pub interval_ns: u64,
    /// `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
    /// When the bucket is full again; written by the gate only.
    pub next_ns: u64,
}

impl SynBudget {
    /// No limit.
    pub const UNLIMITED: Self = Self {
        interval_ns: 0,
        tolerance_ns: 0,
        next_ns: 0,
    };

    /// `syns` SYNs every `per_ns` nanoseconds sustained, `burst` at once;
    /// starts full. No limit when `syns` is zero.
    pub const fn new(syns: u32, per_ns: u64, burst: u32) -> Self {
        if syns == 0 {
            return Self::UNLIMITED;
        }
        let interval = per_ns / syns as u64;
        let interval_ns = if interval == 0 { 1 } else { interval };
        let burst = if burst == 0 { 1 } else { burst as u64 };
        Self {
            interval_ns,
            tolerance_ns: (burst - 1) * interval_ns,
            next_ns: 0,
        }
    }

    /// When the SYN at `now` is within the budget, the new `next_ns`;
    /// `None` when it is over.
    #[inline(always)]
    pub fn admit(&self, now: u64) -> Option<u64> {
        let next = if self.next_ns > now {
            self.next_ns
        } else {
            now
        };
        if next - now > self.tolerance_ns {
            return None;
        }
        Some(next + self.interval_ns)
    }
}

/// Longest user name a [`GrantOwner`] holds. Longer ones are refused at the
/// source rather than cut, since two cut names could then collide.
pub const MAX_USER_BYTES: usize = 255;
/// Longest service name (`pop3`, `imap`, `submission`...).
pub const MAX_SERVICE_BYTES: usize = 16;

/// A user name as a map key: its bytes, zero padded. Login parsers refuse
/// names with control characters, so no name ends in a zero byte.
pub type UserKey = [u8; MAX_USER_BYTES + 1];

/// Who earned a grant: the value of [`crate::GRANT_OWNERS_MAP`], keyed by
/// the grant's key. The gate never reads it.
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GrantOwner {
    /// Wall-clock time of the login, in milliseconds since the epoch.
    pub granted_at_ms: u64,
    /// A `GrantSource` of the agent, as its number.
    pub source: u8,
    pub reserved: [u8; 7],
    pub service: [u8; MAX_SERVICE_BYTES],
    /// The address that logged in, which an IPv6 prefix grant covers.
    pub address: crate::AddrKey,
    /// Zero padded; all zero for a grant nobody logged in for
    /// (`smtpgate allow` without `--user`).
    pub user: UserKey,
}

#[cfg(feature = "user")]
// SAFETY: plain data without padding (bytemuck's derive checks this).
unsafe impl aya::Pod for Grant {}
#[cfg(feature = "user")]
// SAFETY: plain data without padding (bytemuck's derive checks this).
unsafe impl aya::Pod for GrantOwner {}

/// The value of a pinned cooldown entry ([`crate::COOLDOWNS_MAP`], keyed
/// by [`UserKey`]): until when, on `CLOCK_MONOTONIC`, the user earns no
/// grant.
pub type CooldownUntil = u64;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// Admits SYNs at `now` until one is over; how many were admitted.
    fn admitted_at(budget: &mut SynBudget, now: u64) -> u32 {
        let mut admitted = 0;
        while let Some(next) = budget.admit(now) {
            budget.next_ns = next;
            admitted += 1;
            assert!(admitted <= 1000, "the budget never ran out");
        }
        admitted
    }

    #[test]
    fn a_full_bucket_admits_the_burst_and_then_one_per_interval() {
        let mut budget = SynBudget::new(10, SECOND, 5);
        let start = 50 * SECOND;
        assert_eq!(admitted_at(&mut budget, start), 5);
        assert_eq!(
            admitted_at(&mut budget, start + SECOND / 20),
            0,
            "half an interval refills nothing"
        );
        assert_eq!(admitted_at(&mut budget, start + SECOND / 10), 1);
        assert_eq!(
            admitted_at(&mut budget, start + SECOND / 10 + 3 * SECOND / 10),
            3
        );
        assert_eq!(
            admitted_at(&mut budget, start + 100 * SECOND),
            5,
            "a long pause refills no more than the burst"
        );
    }

    #[test]
    fn zero_syns_mean_no_budget_and_zero_burst_means_one() {
        assert_eq!(SynBudget::new(0, SECOND, 5), SynBudget::UNLIMITED);
        let mut budget = SynBudget::new(1, SECOND, 0);
        assert_eq!(admitted_at(&mut budget, SECOND), 1);
    }
}
