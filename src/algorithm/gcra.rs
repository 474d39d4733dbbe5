//! Token bucket as GCRA: the state is the theoretical arrival time (TAT) of the next
//! request, in nanoseconds.
//!
//! With emission interval `T` and tolerance `τ = burst · T`, a request of cost `c` at `now`
//! passes iff `max(TAT, now) + c·T − τ ≤ now`; then `TAT = max(TAT, now) + c·T`. A denied
//! request changes nothing, so denials never delay the refill.
//!
//! A [fixed](crate::Quota::fixed) quota has no refill; its state is the quota spent so far.

use std::num::NonZeroU64;
use std::time::Duration;

use super::MAX_BLOCK;
use crate::{Decision, Outcome, Quota};

#[inline(always)]
pub(super) fn decide(state: u64, now: u64, cost: u64, quota: &Quota) -> (Decision, Option<u64>) {
    let burst = quota.burst_size();
    let Some(per_unit) = quota.interval_nanos() else {
        return decide_fixed(state, cost, burst);
    };
    let interval = per_unit.get();
    let tolerance = interval * burst;
    let base = state.max(now);
    // Quota present now, in whole units, for a request that does not pass. Saturating: a
    // concurrent caller with a later `now` may have moved the TAT past what this
    // caller's `now` allows.
    let available = || (now + tolerance).saturating_sub(base) / per_unit;
    let decision = |outcome, remaining, reset| Decision {
        outcome,
        limit: burst,
        remaining,
        reset: Some(Duration::from_nanos(reset)),
    };
    if cost > burst {
        return (decision(Outcome::CostExceedsBurst, available(), 0), None);
    }
    let tat = base + cost * interval;
    if tat > now + tolerance {
        let retry_after = Duration::from_nanos(tat - tolerance - now);
        let outcome = Outcome::Denied {
            retry_after: Some(retry_after),
        };
        return (decision(outcome, available(), tat - tolerance - now), None);
    }
    // Slack in the bucket after this request; the next unit is back when it reaches the
    // next multiple of `T`.
    let slack = now + tolerance - tat;
    // One division gives both (a division costs tens of cycles), and none is made when
    // only the outcome is read: dividing by a `NonZeroU64` cannot fail.
    let (remaining, partial) = (slack / per_unit, slack % per_unit);
    let reset = if tat > now { interval - partial } else { 0 };
    let changed = (cost > 0).then_some(tat);
    (decision(Outcome::Allowed, remaining, reset), changed)
}

/// The shaper: like [`decide`], but a request that does not fit yet reserves the slot at
/// which it will and waits for it, unless that wait exceeds `max_delay`.
pub(super) fn shape(
    state: u64,
    now: u64,
    cost: u64,
    quota: &Quota,
    max_delay: u64,
) -> (Decision, Option<u64>) {
    let (decision, changed) = decide(state, now, cost, quota);
    let (
        Outcome::Denied {
            retry_after: Some(wait),
        },
        Some(interval),
    ) = (
        decision.outcome,
        quota.interval_nanos().map(NonZeroU64::get),
    )
    else {
        return (decision, changed);
    };
    let wait = wait.as_nanos() as u64;
    if wait > max_delay {
        // Retry once the queue has room for this request again.
        let retry_after = Duration::from_nanos(wait - max_delay);
        let outcome = Outcome::Denied {
            retry_after: Some(retry_after),
        };
        let decision = Decision {
            outcome,
            reset: Some(retry_after),
            ..decision
        };
        return (decision, None);
    }
    let tat = state.max(now) + cost * interval;
    let decision = Decision {
        outcome: Outcome::Delayed {
            wait: Duration::from_nanos(wait),
        },
        remaining: 0,
        reset: Some(Duration::from_nanos(wait + interval)),
        ..decision
    };
    (decision, Some(tat))
}

/// Gives back up to `units`: the TAT moves back, never before `now` (a full bucket). A
/// fixed quota's spent count goes down.
pub(super) fn refund(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    match quota.interval_nanos() {
        None => state.saturating_sub(units),
        Some(_) if state <= now => state,
        Some(interval) => state
            .saturating_sub(units.saturating_mul(interval.get()))
            .max(now),
    }
}

/// Charges `units` whatever is left: the TAT moves on, into debt, by at most
/// [`MAX_BLOCK`] past a full refill. A fixed quota's spent count goes up to its total.
pub(super) fn penalize(state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
    let burst = quota.burst_size();
    let Some(interval) = quota.interval_nanos().map(NonZeroU64::get) else {
        return state.saturating_add(units).min(burst);
    };
    let latest = now + interval * burst + MAX_BLOCK.as_nanos() as u64;
    state
        .max(now)
        .saturating_add(units.saturating_mul(interval))
        .min(latest)
}

/// How far ahead of the clock the TAT stood when a request of `cost` was denied with
/// `retry_after`: `retry = TAT + cost·T − burst·T − now` solved for `TAT − now`.
#[cfg(feature = "redis")]
pub(crate) fn debt(retry_after: Duration, cost: u64, quota: &Quota) -> u64 {
    let interval = quota.interval_nanos().map_or(0, |ns| ns.get());
    retry_after.as_nanos() as u64 + (quota.burst_size() - cost) * interval
}

pub(super) fn is_idle(state: u64, now: u64, quota: &Quota) -> bool {
    // A refilling bucket is full again once its TAT has passed; a fixed quota never is.
    quota.interval_nanos().is_some() && state <= now
}

fn decide_fixed(spent: u64, cost: u64, burst: u64) -> (Decision, Option<u64>) {
    let available = burst.saturating_sub(spent);
    let decision = |outcome, remaining| Decision {
        outcome,
        limit: burst,
        remaining,
        reset: None,
    };
    if cost > burst {
        (decision(Outcome::CostExceedsBurst, available), None)
    } else if cost > available {
        let outcome = Outcome::Denied { retry_after: None };
        (decision(outcome, available), None)
    } else {
        let changed = (cost > 0).then_some(spent + cost);
        (decision(Outcome::Allowed, available - cost), changed)
    }
}

#[cfg(test)]
mod tests {
    //! The reference cases live in `tests/cases/`; these properties check the algorithm
    //! against an independent model.
    use proptest::prelude::*;

    use super::*;
    use crate::algorithm::testing::{admitted, arrivals, within_rate};

    /// The classic token bucket with exact integer credit (in nanoseconds of refill):
    /// refill by elapsed time up to the tolerance, admit iff the credit covers the cost.
    struct CreditModel {
        credit: u64,
        last: u64,
    }

    impl CreditModel {
        fn admit(&mut self, now: u64, cost: u64, interval: u64, burst: u64) -> bool {
            self.credit = (self.credit + (now - self.last)).min(interval * burst);
            self.last = now;
            let needed = cost * interval;
            if cost <= burst && needed <= self.credit {
                self.credit -= needed;
                true
            } else {
                false
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_credit_model(
            limit in 1u64..20,
            period_ms in 1u64..20,
            burst in 1u64..10,
            arrivals in arrivals(),
        ) {
            let quota = Quota::new(limit, Duration::from_millis(period_ms)).burst(burst);
            let interval = quota.interval_nanos().unwrap().get();
            let mut model = CreditModel { credit: interval * burst, last: 0 };
            let (mut state, mut now) = (0, 0);
            for (gap, cost) in arrivals {
                now += gap;
                let (decision, next) = decide(state, now, cost, &quota);
                let expected = model.admit(now, cost, interval, burst);
                // Equal decisions both ways: never denied while the bucket holds the
                // cost, never admitted when it does not.
                prop_assert_eq!(decision.is_allowed(), expected, "at {} cost {}", now, cost);
                if let Some(next) = next {
                    state = next;
                }
            }
        }

        #[test]
        fn no_interval_admits_more_than_burst_plus_rate(
            limit in 1u64..20,
            period_ms in 1u64..20,
            burst in 1u64..10,
            arrivals in arrivals(),
        ) {
            let quota = Quota::new(limit, Duration::from_millis(period_ms)).burst(burst);
            let interval = quota.interval_nanos().unwrap().get();
            let admitted = admitted(&arrivals, |state, now, cost| decide(state, now, cost, &quota));
            // For every pair of admissions i ≤ j: Σ cost · T ≤ (t_j − t_i) + burst · T.
            prop_assert!(within_rate(&admitted, interval, burst));
        }

        #[test]
        fn the_shaper_releases_at_the_rate_and_waits_at_most_max_delay(
            limit in 1u64..20,
            period_ms in 1u64..20,
            burst in 1u64..4,
            max_delay in 0u64..10_000_000,
            arrivals in arrivals(),
        ) {
            let quota = Quota::new(limit, Duration::from_millis(period_ms)).burst(burst);
            let interval = quota.interval_nanos().unwrap().get();
            let (mut state, mut now) = (0, 0);
            let mut released = Vec::new();
            for (gap, cost) in arrivals {
                now += gap;
                let (decision, next) = shape(state, now, cost, &quota, max_delay);
                let wait = match decision.outcome {
                    Outcome::Allowed => 0,
                    Outcome::Delayed { wait } => wait.as_nanos() as u64,
                    _ => continue,
                };
                prop_assert!(wait <= max_delay);
                released.push((now + wait, cost));
                if let Some(next) = next {
                    state = next;
                }
            }
            // Requests leave in order, and never faster than burst + rate · t.
            prop_assert!(released.windows(2).all(|w| w[0].0 <= w[1].0));
            prop_assert!(within_rate(&released, interval, burst));
        }
    }
}
