//! Rate-limiting algorithms as pure functions: `(state, now, cost, quota) → (decision, new
//! state)`. Stores own the state and the atomicity; algorithms own the arithmetic.
//!
//! State is one `u64` per key and time is integer nanoseconds, so a store can keep it in a
//! single atomic word and the same arithmetic runs unchanged everywhere. The state word
//! [`EMPTY`] (0) is a key never seen.

mod fixed_window;
mod gcra;
mod sliding_window;

#[cfg(feature = "redis")]
pub(crate) use gcra::debt as gcra_debt;

use std::time::Duration;

use crate::{Decision, Quota, QuotaError};

/// How quota is spent and refilled.
///
/// | algorithm | bursts | smoothness | state per key | at window edges |
/// |---|---|---|---|---|
/// | [`TokenBucket`](Self::TokenBucket) | up to `burst` | smooth refill | one timestamp | no edges |
/// | [`LeakyBucket`](Self::LeakyBucket) | up to the capacity (`burst`) | leaks at the rate | one timestamp | no edges |
/// | [`LeakyBucketShaper`](Self::LeakyBucketShaper) | delayed, not rejected | constant output rate | one timestamp | no edges |
/// | [`FixedWindow`](Self::FixedWindow) | a full window at once | resets each period | window + count | up to `2·burst` across an edge |
/// | [`SlidingWindow`](Self::SlidingWindow) | up to `burst` per period | weighted estimate | window + two counts | approximate (Cloudflare's estimate) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Token bucket in its GCRA form: one unit comes back every `period / limit`, at most
    /// `burst` are held, a request of cost `c` passes iff `c` units are there.
    #[default]
    TokenBucket,
    /// Leaky bucket as a meter: the bucket (capacity `burst`) drains one unit every
    /// `period / limit`; a request passes iff `level + cost ≤ capacity`. It admits exactly
    /// what the token bucket admits; `remaining` is the room left above the level.
    LeakyBucket,
    /// Leaky bucket as a shaper: a request that would overflow the bucket is not rejected
    /// but waits for its slot, so requests leave at the constant rate. Only a request
    /// whose wait would exceed `max_delay` (the queue is full) is rejected. Slots are
    /// reserved when the request is decided: a waiting request that is cancelled keeps its
    /// slot, so the output never exceeds the rate.
    LeakyBucketShaper {
        /// The longest a request may wait for its slot.
        max_delay: Duration,
    },
    /// Fixed window: at most `burst` units in each window `[k·period, (k+1)·period)`.
    /// Simple and cheap, but a client can spend `2·burst` across a window edge.
    FixedWindow,
    /// Sliding window: Cloudflare's two-counter estimate
    /// `previous · (1 − elapsed/period) + current` must stay within `burst`.
    SlidingWindow,
}

/// A state word that carries no information: a key that has never been seen.
pub const EMPTY: u64 = 0;

/// The longest a block may last, and a debt may reach: 100 years.
pub const MAX_BLOCK: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

impl Algorithm {
    /// Decides a request of `cost` at `now` (nanoseconds) against `state`. Returns the new
    /// state when the request changed it (an admission with a cost above zero).
    #[inline(always)]
    pub(crate) fn decide(
        self,
        state: u64,
        now: u64,
        cost: u64,
        quota: &Quota,
    ) -> (Decision, Option<u64>) {
        match self {
            Self::TokenBucket | Self::LeakyBucket => gcra::decide(state, now, cost, quota),
            Self::LeakyBucketShaper { max_delay } => {
                gcra::shape(state, now, cost, quota, max_delay.as_nanos() as u64)
            }
            Self::FixedWindow => fixed_window::decide(state, now, cost, quota),
            Self::SlidingWindow => sliding_window::decide(state, now, cost, quota),
        }
    }

    /// The state after giving back up to `units` at `now`: never above a full bucket, and
    /// for the windows only within the current window.
    pub(crate) fn refund(self, state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
        match self {
            Self::TokenBucket | Self::LeakyBucket | Self::LeakyBucketShaper { .. } => {
                gcra::refund(state, now, units, quota)
            }
            Self::FixedWindow => fixed_window::refund(state, now, units, quota),
            Self::SlidingWindow => sliding_window::refund(state, now, units, quota),
        }
    }

    /// The state after charging `units` at `now` whatever is left: a bucket goes into
    /// debt (by at most [`MAX_BLOCK`](crate::store::MAX_BLOCK) past a full refill), a
    /// window fills up to its burst.
    pub(crate) fn penalize(self, state: u64, now: u64, units: u64, quota: &Quota) -> u64 {
        match self {
            Self::TokenBucket | Self::LeakyBucket | Self::LeakyBucketShaper { .. } => {
                gcra::penalize(state, now, units, quota)
            }
            Self::FixedWindow => fixed_window::penalize(state, now, units, quota),
            Self::SlidingWindow => sliding_window::penalize(state, now, units, quota),
        }
    }

    /// Whether `state` says no more than [`EMPTY`] would at `now`, so it can be forgotten
    /// without changing any later decision.
    pub(crate) fn is_idle(self, state: u64, now: u64, quota: &Quota) -> bool {
        match self {
            Self::TokenBucket | Self::LeakyBucket | Self::LeakyBucketShaper { .. } => {
                gcra::is_idle(state, now, quota)
            }
            Self::FixedWindow => fixed_window::is_idle(state, now, quota),
            Self::SlidingWindow => sliding_window::is_idle(state, now, quota),
        }
    }

    /// Checks that this algorithm can enforce `quota` (which is already valid).
    pub(crate) fn validate(self, quota: &Quota) -> Result<(), QuotaError> {
        let Some(period) = quota.period() else {
            return match self {
                Self::TokenBucket | Self::LeakyBucket => Ok(()),
                _ => Err(QuotaError::NeedsPeriod),
            };
        };
        // Window states pack the window number and the counts into one word; these bounds
        // keep it from overflowing for over a century of uptime.
        let period_ns = u64::try_from(period.as_nanos()).map_err(|_| QuotaError::TooLarge)?;
        let burst = quota.burst_size();
        match self {
            Self::FixedWindow if burst >= period_ns => Err(QuotaError::TooLarge),
            Self::SlidingWindow if burst >= sliding_window::slots_per_count(period_ns) => {
                Err(QuotaError::TooLarge)
            }
            _ => Ok(()),
        }
    }

    /// A stable number for this algorithm, part of the policy fingerprint.
    pub(crate) fn id(self) -> u64 {
        match self {
            Self::TokenBucket => 0,
            Self::LeakyBucket => 1,
            Self::LeakyBucketShaper { .. } => 2,
            Self::FixedWindow => 3,
            Self::SlidingWindow => 4,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;

    /// Requests as `(gap before it in ns, cost)`, gaps on the scale of the test intervals.
    pub(crate) fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec((0u64..3_000_000, 0u64..8), 1..200)
    }

    /// Replays `arrivals` through `decide`, returning the admitted `(time, cost)` pairs.
    pub(crate) fn admitted(
        arrivals: &[(u64, u64)],
        mut decide: impl FnMut(u64, u64, u64) -> (crate::Decision, Option<u64>),
    ) -> Vec<(u64, u64)> {
        let (mut state, mut now) = (super::EMPTY, 0);
        let mut admitted = Vec::new();
        for &(gap, cost) in arrivals {
            now += gap;
            let (decision, next) = decide(state, now, cost);
            if decision.is_allowed() {
                admitted.push((now, cost));
            }
            if let Some(next) = next {
                state = next;
            }
        }
        admitted
    }

    /// What a model admits of `arrivals`: each request, at its time, passes iff
    /// `passes(admitted so far, now, cost)`.
    pub(crate) fn replay(
        arrivals: &[(u64, u64)],
        passes: impl Fn(&[(u64, u64)], u64, u64) -> bool,
    ) -> Vec<(u64, u64)> {
        let mut now = 0;
        let mut history = Vec::new();
        for &(gap, cost) in arrivals {
            now += gap;
            if passes(&history, now, cost) {
                history.push((now, cost));
            }
        }
        history
    }

    /// The cost `events` spent in window `window` of length `period`.
    pub(crate) fn spent_in(events: &[(u64, u64)], window: u64, period: u64) -> u64 {
        events
            .iter()
            .filter(|(t, _)| t / period == window)
            .map(|(_, cost)| cost)
            .sum()
    }

    /// Whether every run of events, from the i-th to the j-th, spent at most
    /// `burst + (t_j − t_i) / interval` units: the token bucket's bound.
    pub(crate) fn within_rate(events: &[(u64, u64)], interval: u64, burst: u64) -> bool {
        (0..events.len()).all(|i| {
            let mut spent = 0u128;
            events[i..].iter().all(|&(t_j, cost)| {
                spent += u128::from(cost * interval);
                spent <= u128::from(t_j - events[i].0 + burst * interval)
            })
        })
    }

    /// The most cost admitted in any half-open interval of length `length`.
    pub(crate) fn most_in_any(events: &[(u64, u64)], length: u64) -> u64 {
        (0..events.len())
            .map(|i| {
                let start = events[i].0;
                events[i..]
                    .iter()
                    .take_while(|(t, _)| t - start < length)
                    .map(|(_, cost)| cost)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::testing::arrivals;
    use super::*;
    use crate::store::Change;
    use crate::Policy;

    fn policies() -> [Policy; 3] {
        let policy = |name, limit, ms, burst, algorithm| {
            let quota = Quota::new(limit, Duration::from_millis(ms)).burst(burst);
            Policy::new(name, quota, algorithm).unwrap()
        };
        [
            policy("bucket", 1, 1, 4, Algorithm::TokenBucket),
            policy("fixed", 9, 20, 9, Algorithm::FixedWindow),
            policy("sliding", 12, 30, 12, Algorithm::SlidingWindow),
        ]
    }

    proptest! {
        /// A set admits exactly what every policy alone admits when it only sees the
        /// requests the set admitted: a refusal by one policy charges none of the others.
        #[test]
        fn a_set_is_each_policy_fed_only_the_admitted_requests(arrivals in arrivals()) {
            let policies = policies();
            let mut states = [EMPTY; 3];
            let mut now = 0;
            let mut passed = Vec::new();
            for &(gap, cost) in &arrivals {
                now += gap;
                let (decisions, _) = crate::store::apply_words(&policies, &mut states, now, Change::Charge(cost));
                let alone = policies.iter().all(|p| {
                    // The policy alone, fed only what the set admitted: it admitted each.
                    let state = passed.iter().fold(EMPTY, |state, &(at, cost)| {
                        let (decision, next) = p.algorithm().decide(state, at, cost, p.quota());
                        assert!(decision.is_allowed());
                        next.unwrap_or(state)
                    });
                    p.algorithm().decide(state, now, cost, p.quota()).0.is_allowed()
                });
                prop_assert_eq!(decisions.is_allowed(), alone);
                if alone {
                    passed.push((now, cost));
                }
            }
        }
    }
}
