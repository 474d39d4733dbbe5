//! Sliding window, Cloudflare's estimate: with `e` the time elapsed in the current window
//! of length `P`, the units in use are `prev · (P − e) / P + curr`, and a request of cost
//! `c` passes iff that plus `c` stays within `burst`. Exact rational arithmetic in `u128`.
//!
//! The state packs the window number `k` and both counts as `(k·N + prev)·N + curr` with
//! `N = ⌊√(4·P)⌋`, `P` in nanoseconds: validation keeps `burst < N`, so it cannot overflow,
//! and the layout depends on the period alone, so a changed burst reads the counts spent so
//! far.

use std::time::Duration;

use crate::{Decision, Outcome, Quota};

/// The counts in force at some instant.
struct Window {
    /// Nanoseconds since the current window started.
    elapsed: u64,
    period: u64,
    prev: u64,
    curr: u64,
}

impl Window {
    /// `prev · (P − e)`, the previous window's weight scaled by `P`.
    fn prev_weight(&self) -> u128 {
        u128::from(self.prev) * u128::from(self.period - self.elapsed)
    }

    /// Units in use, rounded up.
    fn used(&self) -> u64 {
        let period = u128::from(self.period);
        (self.prev_weight().div_ceil(period)) as u64 + self.curr
    }

    /// How long until the units in use drop to `target` or below, with no new admissions.
    fn wait_until_used(&self, target: u64) -> u64 {
        let period = u128::from(self.period);
        if self.curr <= target {
            // `prev` decays through the rest of this window.
            let room = u128::from(target - self.curr) * period;
            if self.prev_weight() <= room {
                return 0;
            }
            let elapsed = period - room / u128::from(self.prev);
            return (elapsed - u128::from(self.elapsed)) as u64;
        }
        // Only in the next window, where `curr` becomes the decaying `prev`.
        let room = u128::from(target) * period;
        let elapsed = period - room / u128::from(self.curr);
        (period - u128::from(self.elapsed) + elapsed) as u64
    }
}

/// `(period in ns, burst, N)`. Assumes a validated quota with a period.
fn slots(quota: &Quota) -> (u64, u64, u64) {
    let period = quota.period().map_or(u64::MAX, |p| p.as_nanos() as u64);
    (period, quota.burst_size(), slots_per_count(period))
}

/// `N = ⌊√(4·P)⌋`: how many values each count may take.
pub(super) fn slots_per_count(period: u64) -> u64 {
    period.saturating_mul(4).isqrt()
}

pub(super) fn decide(state: u64, now: u64, cost: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let (period, burst, n) = slots(quota);
    let index = now / period;
    let (stored, prev, curr) = (state / (n * n), state / n % n, state % n);
    // A state from a later window (written by a caller with a later `now`) counts as current.
    let (prev, curr) = match index.checked_sub(stored) {
        None | Some(0) => (prev, curr),
        Some(1) => (curr, 0),
        Some(_) => (0, 0),
    };
    let mut window = Window {
        elapsed: now - index * period,
        period,
        prev,
        curr,
    };
    let remaining = |window: &Window| burst.saturating_sub(window.used());
    if cost > burst {
        let decision = Decision {
            outcome: Outcome::CostExceedsBurst,
            limit: burst,
            remaining: remaining(&window),
            reset: Some(Duration::ZERO),
        };
        return (decision, None);
    }
    let fits = window.prev_weight() + u128::from(curr + cost) * u128::from(period)
        <= u128::from(burst) * u128::from(period);
    if !fits {
        let retry_after = Duration::from_nanos(window.wait_until_used(burst - cost));
        let decision = Decision {
            outcome: Outcome::Denied {
                retry_after: Some(retry_after),
            },
            limit: burst,
            remaining: remaining(&window),
            reset: Some(retry_after),
        };
        return (decision, None);
    }
    window.curr += cost;
    let left = remaining(&window);
    let reset = if left == burst {
        0
    } else {
        window.wait_until_used(burst - left - 1)
    };
    let decision = Decision {
        outcome: Outcome::Allowed,
        limit: burst,
        remaining: left,
        reset: Some(Duration::from_nanos(reset)),
    };
    let changed = (cost > 0).then_some((index * n + window.prev) * n + window.curr);
    (decision, changed)
}

/// Gives back up to `units` spent in the current window.
pub(super) fn refund(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    let (period, _, n) = slots(quota);
    if state / (n * n) < now / period {
        return state;
    }
    state - (state % n).min(units)
}

/// Spends `units` of the current window, up to its burst (a count already above it stays).
pub(super) fn penalize(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    let (period, burst, n) = slots(quota);
    let (index, stored) = (now / period, state / (n * n));
    let (index, prev, curr) = match index.checked_sub(stored) {
        None | Some(0) => (stored, state / n % n, state % n),
        Some(1) => (index, state % n, 0),
        Some(_) => (index, 0, 0),
    };
    (index * n + prev) * n + curr.saturating_add(units).min(burst.max(curr))
}

pub(super) fn is_idle(state: u64, now: u64, quota: &Quota) -> bool {
    let (period, _, n) = slots(quota);
    state / (n * n) + 1 < now / period
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::algorithm::testing::{admitted, arrivals, most_in_any, replay, spent_in};

    proptest! {
        #[test]
        fn agrees_with_the_estimate_over_the_history(
            limit in 1u64..10,
            period_ms in 1u64..20,
            arrivals in arrivals(),
        ) {
            let quota = Quota::new(limit, Duration::from_millis(period_ms));
            let period = quota.period().unwrap().as_nanos() as u64;
            let admitted = admitted(&arrivals, |state, now, cost| decide(state, now, cost, &quota));
            // Replay from the history: prev and curr are the costs admitted in the previous
            // and the current window.
            let history = replay(&arrivals, |history, now, cost| {
                let window = now / period;
                let spent = |w| u128::from(spent_in(history, w, period));
                let prev = if window == 0 { 0 } else { spent(window - 1) };
                let elapsed = u128::from(now - window * period);
                let estimate = prev * (u128::from(period) - elapsed)
                    + (spent(window) + u128::from(cost)) * u128::from(period);
                cost <= limit && estimate <= u128::from(limit) * u128::from(period)
            });
            prop_assert_eq!(&admitted, &history);
            // Never more than the burst in one window, nor 2 · burst in one period.
            for &(t, _) in &admitted {
                prop_assert!(spent_in(&admitted, t / period, period) <= limit);
            }
            prop_assert!(most_in_any(&admitted, period) <= 2 * limit);
        }
    }
}
