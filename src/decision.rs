//! [`Decision`]: what a store answered for one request under one policy, and
//! [`Decisions`]: under each of its policies.

use std::cmp::Reverse;
use std::ops::Deref;
use std::time::Duration;

/// The answer to "may this request pass, and what is left?".
///
/// `retry_after` in [`Outcome::Denied`] is exact (not rounded); the response headers round
/// it up to whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// A decision, for stores written outside this crate.
    pub const fn new(
        outcome: Outcome,
        limit: u64,
        remaining: u64,
        reset: Option<Duration>,
    ) -> Self {
        Self {
            outcome,
            limit,
            remaining,
            reset,
        }
    }

    /// Whether the request passes (at once or after a delay).
    pub fn is_allowed(&self) -> bool {
        matches!(self.outcome, Outcome::Allowed | Outcome::Delayed { .. })
    }
}

/// A request's [`Decision`] under each of its [`Policies`](crate::Policies), in their
/// order, and the verdict they reach together: the request passes only if every policy
/// lets it through. When one refuses, the others report their quota as it stands,
/// uncharged.
///
/// ```
/// use std::time::Duration;
/// use tower_ratelimit::{Decision, Decisions, Outcome};
///
/// let decision = |outcome, remaining| Decision::new(outcome, 10, remaining, None);
/// let retry = Duration::from_secs(3);
/// let decisions = Decisions::new(vec![
///     decision(Outcome::Allowed, 7),
///     decision(Outcome::Denied { retry_after: Some(retry) }, 0),
/// ]);
/// assert!(!decisions.is_allowed());
/// assert_eq!(decisions.violated().collect::<Vec<_>>(), [1]);
/// assert_eq!(decisions.summary().outcome, Outcome::Denied { retry_after: Some(retry) });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decisions(Repr);

/// One decision inline, so a single policy costs no allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    One(Decision),
    Many(Box<[Decision]>),
}

impl Decisions {
    /// The decisions under each policy, in the policies' order.
    ///
    /// # Panics
    ///
    /// If `decisions` is empty.
    pub fn new(mut decisions: Vec<Decision>) -> Self {
        assert!(!decisions.is_empty(), "a request has at least one decision");
        Self(match decisions.len() {
            1 => Repr::One(decisions.remove(0)),
            _ => Repr::Many(decisions.into_boxed_slice()),
        })
    }

    /// Whether the request passes every policy (at once or after a delay).
    pub fn is_allowed(&self) -> bool {
        match &self.0 {
            Repr::One(decision) => decision.is_allowed(),
            Repr::Many(all) => all.iter().all(Decision::is_allowed),
        }
    }

    /// Whether the request passes every policy with no delay.
    #[inline]
    pub(crate) fn pass_at_once(&self) -> bool {
        let at_once = |decision: &Decision| decision.outcome == Outcome::Allowed;
        match &self.0 {
            Repr::One(decision) => at_once(decision),
            Repr::Many(all) => all.iter().all(at_once),
        }
    }

    /// These decisions, unless the request passes every policy at once (what a caller
    /// that reads no passing decision is answered).
    #[inline]
    pub(crate) fn unless_at_once(self) -> Option<Self> {
        (!self.pass_at_once()).then_some(self)
    }

    /// The policies (by index) that refused the request.
    pub fn violated(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter()
            .enumerate()
            .filter(|(_, decision)| !decision.is_allowed())
            .map(|(index, _)| index)
    }

    /// The index of the decision that matters most: the refusal that lasts longest (a cost
    /// above a burst first), or, for a request that passes, the policy with the least
    /// quota left.
    pub fn decisive(&self) -> usize {
        match &self.0 {
            Repr::One(_) => 0,
            Repr::Many(all) => (0..all.len())
                .min_by_key(|&index| Reverse(severity(&all[index])))
                .unwrap_or(0),
        }
    }

    /// The verdict as one decision: the [decisive](Self::decisive) policy's quota with the
    /// outcome of all (a request that passes waits for the latest of its slots). This is
    /// what the single-policy `X-RateLimit-*` headers and `Retry-After` report.
    pub fn summary(&self) -> Decision {
        let Repr::Many(_) = &self.0 else {
            return self[0];
        };
        let decisive = self[self.decisive()];
        let wait = self
            .iter()
            .filter_map(|decision| match decision.outcome {
                Outcome::Delayed { wait } => Some(wait),
                _ => None,
            })
            .max();
        match (decisive.outcome, wait) {
            (Outcome::Allowed | Outcome::Delayed { .. }, Some(wait)) => Decision {
                outcome: Outcome::Delayed { wait },
                ..decisive
            },
            _ => decisive,
        }
    }
}

/// Orders decisions by how much they hold a request back.
fn severity(decision: &Decision) -> (u8, u128) {
    match decision.outcome {
        Outcome::CostExceedsBurst => (3, 0),
        Outcome::Denied { retry_after } => (2, retry_after.map_or(u128::MAX, |r| r.as_nanos())),
        Outcome::Allowed | Outcome::Delayed { .. } => {
            (1, u128::from(u64::MAX - decision.remaining))
        }
    }
}

impl Deref for Decisions {
    type Target = [Decision];

    fn deref(&self) -> &[Decision] {
        match &self.0 {
            Repr::One(decision) => std::slice::from_ref(decision),
            Repr::Many(all) => all,
        }
    }
}

impl From<Decision> for Decisions {
    fn from(decision: Decision) -> Self {
        Self(Repr::One(decision))
    }
}
