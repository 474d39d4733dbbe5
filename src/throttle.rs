//! [`Throttle`]: keeps repeated warnings from flooding the logs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lets one event through per interval; the others are counted and reported with the next.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    next_nanos: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) const fn new(interval: Duration) -> Self {
        Self {
            interval,
            next_nanos: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last one let through)` if this one may be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let now = ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64;
        let next = self.next_nanos.load(Relaxed);
        let due = now >= next
            && self
                .next_nanos
                .compare_exchange(
                    next,
                    now + self.interval.as_nanos() as u64,
                    Relaxed,
                    Relaxed,
                )
                .is_ok();
        if due {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_through_per_interval() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        let zero = Throttle::new(Duration::ZERO);
        assert_eq!(zero.allow(), Some(0));
        assert_eq!(zero.allow(), Some(0));
    }
}
