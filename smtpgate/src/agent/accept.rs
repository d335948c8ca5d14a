//! What an accept loop does when `accept` fails.
//!
//! With the descriptor limit reached, `accept` fails with EMFILE and leaves
//! the connection waiting in the backlog, so the next `accept` fails again
//! at once: retried without a pause, the loop spins and, warning each time,
//! floods the log (a flood of idle connections once wrote a million
//! warnings in six seconds, and the agent saved no read position meanwhile).
//! After a failure the loop pauses, so that other tasks run and idle
//! connections time out and free their descriptors, and it warns at most
//! once a second.

use std::{io, time::Duration};

use crate::agent::throttle::Throttle;

/// How long an accept loop waits after a failed `accept`.
const PAUSE: Duration = Duration::from_millis(50);

/// The failures of one accept loop.
pub struct AcceptErrors {
    what: &'static str,
    warnings: Throttle,
}

impl AcceptErrors {
    /// For the loop serving `what` (in warnings).
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            warnings: Throttle::new(Duration::from_secs(1)),
        }
    }

    /// Warns about `error` unless a warning went out less than a second ago,
    /// then waits before the next `accept`.
    pub async fn failed(&mut self, error: io::Error) {
        if let Some(held_back) = self.warnings.allow() {
            let what = self.what;
            match held_back {
                0 => tracing::warn!("{what}: accepting a connection: {error}"),
                n => tracing::warn!("{what}: accepting a connection: {error} ({n} more failures since the last warning)"),
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
}
