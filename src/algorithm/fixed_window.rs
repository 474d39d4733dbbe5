//! Fixed window: at most `burst` units in each window `[k·P, (k+1)·P)`.
//!
//! The state packs the window number `k` and the count `c` as `k · P + c`, the window's start
//! plus the count: exact, with no wrap-around (validation keeps `burst < P` in nanoseconds),
//! and laid out by the period alone, so a changed burst reads the count spent so far (a
//! count above a lowered burst denies until the window ends).

use std::time::Duration;

use crate::{Decision, Outcome, Quota};

/// `(period in ns, burst, slots per window)`. Assumes a validated quota with a period.
fn params(quota: &Quota) -> (u64, u64, u64) {
    let period = quota.period().map_or(u64::MAX, |p| p.as_nanos() as u64);
    (period, quota.burst_size(), period)
}

pub(super) fn decide(state: u64, now: u64, cost: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let (period, burst, slots) = params(quota);
    let window = now / period;
    // A state from a later window (written by a caller with a later `now`) counts as current.
    let count = if state / slots >= window {
        state % slots
    } else {
        0
    };
    let to_window_end = Duration::from_nanos((window + 1) * period - now);
    let decision = |outcome, remaining: u64| Decision {
        outcome,
        limit: burst,
        remaining,
        reset: Some(if remaining == burst {
            Duration::ZERO
        } else {
            to_window_end
        }),
    };
    if cost > burst {
        return (
            decision(Outcome::CostExceedsBurst, burst.saturating_sub(count)),
            None,
        );
    }
    if count + cost > burst {
        let outcome = Outcome::Denied {
            retry_after: Some(to_window_end),
        };
        return (decision(outcome, burst.saturating_sub(count)), None);
    }
    let count = count + cost;
    let changed = (cost > 0).then_some(window * slots + count);
    (decision(Outcome::Allowed, burst - count), changed)
}

/// Gives back up to `units` spent in the current window.
pub(super) fn refund(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    let (period, _, slots) = params(quota);
    if state / slots < now / period {
        return state;
    }
    state - (state % slots).min(units)
}

/// Spends `units` of the current window, up to its burst (a count already above it stays).
pub(super) fn penalize(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    let (period, burst, slots) = params(quota);
    let window = (now / period).max(state / slots);
    let count = if state / slots == window {
        state % slots
    } else {
        0
    };
    window * slots + count.saturating_add(units).min(burst.max(count))
}

pub(super) fn is_idle(state: u64, now: u64, quota: &Quota) -> bool {
    let (period, _, slots) = params(quota);
    state / slots < now / period
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::algorithm::testing::{admitted, arrivals, most_in_any, replay, spent_in};

    proptest! {
        #[test]
        fn agrees_with_counting_the_history(
            limit in 1u64..10,
            period_ms in 1u64..20,
            arrivals in arrivals(),
        ) {
            let quota = Quota::new(limit, Duration::from_millis(period_ms));
            let period = quota.period().unwrap().as_nanos() as u64;
            let admitted = admitted(&arrivals, |state, now, cost| decide(state, now, cost, &quota));
            // Replay: each request passes iff what its window already admitted, plus its
            // cost, fits the burst.
            let history = replay(&arrivals, |history, now, cost| {
                spent_in(history, now / period, period) + cost <= limit
            });
            prop_assert_eq!(&admitted, &history);
            // The documented bound: at most 2 · burst in any interval of one period.
            prop_assert!(most_in_any(&admitted, period) <= 2 * limit);
        }
    }
}
