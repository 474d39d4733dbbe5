//! [`Clock`]: where the in-process store reads the time, so tests can hold it still.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A monotonic time source in nanoseconds since an arbitrary origin.
///
/// It must never go backwards. Clones share one timeline.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Nanoseconds since this clock's origin.
    fn now_nanos(&self) -> u64;
}

/// The process's monotonic clock. The default.
///
/// Reads the CPU's counter through [`quanta`] (an invariant TSC on x86-64, the system
/// counter on aarch64), else the OS monotonic clock: a few nanoseconds per reading instead
/// of a `clock_gettime` call. The counter is probed and calibrated once per process (at most
/// 200 ms, on the first [`MonotonicClock::new`]); every clock then shares that calibration.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    /// The raw counter reading at this clock's origin.
    origin: u64,
}

/// Probing the counter runs `CPUID`, which traps to the hypervisor on virtual machines:
/// never per reading.
static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();

fn counter() -> &'static quanta::Clock {
    COUNTER.get_or_init(quanta::Clock::new)
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: counter().raw(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        let counter = counter();
        counter.delta_as_nanos(self.origin, counter.raw())
    }
}

/// Tokio's clock ([`tokio::time::Instant`]): pauses and advances with
/// `tokio::time::pause`, so a shaper's slots and its sleeps share one timeline in tests.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock that moves only when told to: exact, repeatable tests.
///
/// ```
/// use std::time::Duration;
/// use tower_ratelimit::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_nanos(), 1_500_000_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`. It stops at `u64::MAX` nanoseconds (about 584
    /// years) rather than wrapping around.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_saturates() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(18_446_744_074));
        assert_eq!(clock.now_nanos(), u64::MAX);

        let clock = ManualClock::new();
        clock.advance(Duration::from_nanos(u64::MAX));
        clock.advance(Duration::from_nanos(2));
        assert_eq!(clock.now_nanos(), u64::MAX);
    }
}
