//! Warnings that an outsider can make repeat, let through at most once per
//! interval, with a count of the ones held back.

use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the others.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Whether an event may be reported now; if so, how many were held back
    /// since the last one reported.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_and_a_count_of_the_rest() {
        let mut throttle = Throttle::new(Duration::from_millis(200));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.allow(), Some(5));
        assert_eq!(throttle.allow(), None);
    }
}
