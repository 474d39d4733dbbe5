//! Rate-limiting algorithms as pure functions: `(state, now, cost, quota) → (decision, new
//! state)`. Stores own the state and the atomicity; algorithms own the arithmetic.
//!
//! State is one `u64` per key and time is integer nanoseconds, so a store can keep it in a
//! single atomic word and the same arithmetic runs unchanged everywhere.

mod gcra;

use crate::{Decision, Quota};

/// How quota is spent and refilled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Token bucket in its GCRA form: one timestamp per key, smooth refill, bursts up to
    /// `burst`.
    #[default]
    TokenBucket,
}

/// A state word that carries no information: a key that has never been seen.
pub(crate) const EMPTY: u64 = 0;

impl Algorithm {
    /// Decides a request of `cost` at `now` (nanoseconds) against `state`. Returns the new
    /// state when the request changed it (an admission with a cost above zero).
    pub(crate) fn decide(
        self,
        state: u64,
        now: u64,
        cost: u64,
        quota: &Quota,
    ) -> (Decision, Option<u64>) {
        match self {
            Self::TokenBucket => gcra::decide(state, now, cost, quota),
        }
    }

    /// Whether `state` says no more than [`EMPTY`] would at `now`, so it can be forgotten
    /// without changing any later decision.
    pub(crate) fn is_idle(self, state: u64, now: u64, quota: &Quota) -> bool {
        match self {
            Self::TokenBucket => gcra::is_idle(state, now, quota),
        }
    }
}
