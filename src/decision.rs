//! [`Decision`]: what a store answered for one request.

use std::time::Duration;

/// The answer to "may this request pass, and what is left?".
///
/// `retry_after` in [`Outcome::Denied`] is exact (not rounded); the response headers round
/// it up to whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request passes, and if not, why.
    pub outcome: Outcome,
    /// The most quota a key can hold (the burst).
    pub limit: u64,
    /// Quota left after this request, in cost units.
    pub remaining: u64,
    /// Time until more quota arrives: until the next unit is back after an admission, until
    /// the request could pass after a denial, zero when the bucket is full. `None` when the
    /// quota never refills.
    pub reset: Option<Duration>,
}

/// Whether a request passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request passes and its cost is charged.
    Allowed,
    /// The request passes after waiting `wait` for its slot (the leaky-bucket shaper); its
    /// cost is charged and the slot reserved now.
    Delayed {
        /// How long the request waits before it is forwarded.
        wait: Duration,
    },
    /// Not enough quota now. `retry_after` is when the same request would pass, or `None`
    /// when the quota never refills. Nothing was charged.
    Denied {
        /// Exact time until the same request would pass.
        retry_after: Option<Duration>,
    },
    /// The request costs more than the burst: it can never pass, however long it waits.
    /// Nothing was charged.
    CostExceedsBurst,
}

impl Decision {
    /// Whether the request passes (at once or after a delay).
    pub fn is_allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed | Outcome::Delayed { .. })
    }
}
