//! Every algorithm over state words: the seam for stores written outside this crate.
//!
//! A store that offers an atomic read-modify-write of a few `u64` words per key (a
//! compare-and-swap, a transaction, a conditional write: Postgres, DynamoDB, ...) gets
//! every algorithm and every [`Change`] by calling [`apply_words`] inside that step, as
//! [`MemoryStore`](super::MemoryStore) does:
//!
//! ```
//! use tower_ratelimit::store::{apply_words, Change, EMPTY};
//! use tower_ratelimit::{Algorithm, Policies, Policy, Quota};
//!
//! let policies: Policies = Policy::new("default", Quota::per_second(1).burst(2), Algorithm::TokenBucket)?.into();
//! // Read the key's words (EMPTY for a key never seen), apply, write back if changed.
//! let mut words = [EMPTY];
//! let now = 0; // nanoseconds on the store's clock
//! let (decisions, changed) = apply_words(&policies, &mut words, now, Change::Charge(1));
//! assert!(decisions.is_allowed() && changed);
//! assert_eq!(decisions[0].remaining, 1);
//! # Ok::<(), tower_ratelimit::PolicyError>(())
//! ```

use std::time::Duration;

pub use crate::algorithm::EMPTY;
use crate::store::Change;
use crate::{Decision, Decisions, Outcome, Policy};

/// Applies `change` at `now` (nanoseconds on the store's clock) to a key's state words,
/// one per policy of `policies`, in their order (a word never written is [`EMPTY`]). A
/// charge passes only if all policies let it through, and only then is it charged under
/// each; a request one policy refuses is reported under the others as they stand,
/// uncharged. The other changes apply to every policy and report the state after them.
/// Returns the decisions and whether any word changed, to be written back in the same
/// atomic step. [`Change::Block`] changes no word: blocks are the store's to keep (answer
/// [`blocked`] while one holds).
pub fn apply_words(
    policies: &[Policy],
    states: &mut [u64],
    now: u64,
    change: Change,
) -> (Decisions, bool) {
    let cost = match change {
        Change::Charge(cost) => cost,
        _ => return (adjust_all(policies, states, now, change), true),
    };
    if let ([policy], [state]) = (policies, &mut *states) {
        let (decision, next) = policy.algorithm().decide(*state, now, cost, policy.quota());
        if let Some(next) = next {
            *state = next;
        }
        return (decision.into(), next.is_some());
    }
    let decide = |policy: &Policy, state: u64, cost: u64| {
        policy.algorithm().decide(state, now, cost, policy.quota())
    };
    let mut decided: Vec<_> = policies
        .iter()
        .zip(&*states)
        .map(|(policy, &state)| decide(policy, state, cost))
        .collect();
    let passes = decided.iter().all(|(decision, _)| decision.is_allowed());
    let mut charged = false;
    for ((policy, state), (decision, next)) in policies.iter().zip(states).zip(&mut decided) {
        match next {
            Some(next) if passes => {
                *state = *next;
                charged = true;
            }
            _ if !passes && decision.is_allowed() => *decision = decide(policy, *state, 0).0,
            _ => {}
        }
    }
    let decisions = decided.into_iter().map(|(decision, _)| decision).collect();
    (Decisions::new(decisions), charged)
}

/// Applies a change other than a charge to every policy's state, and looks at the result.
fn adjust_all(policies: &[Policy], states: &mut [u64], now: u64, change: Change) -> Decisions {
    let looks = policies.iter().zip(states).map(|(policy, state)| {
        let (algorithm, quota) = (policy.algorithm(), policy.quota());
        *state = match change {
            Change::Reset => EMPTY,
            Change::Refund(units) => algorithm.refund(*state, now, units, quota),
            Change::Penalize(units) => algorithm.penalize(*state, now, units, quota),
            Change::Charge(_) | Change::Block(_) => *state,
        };
        algorithm.decide(*state, now, 0, quota).0
    });
    match policies.len() {
        1 => looks.last().expect("one policy").into(),
        _ => Decisions::new(looks.collect()),
    }
}

/// The answer for a key blocked for `wait` more: denied under every policy.
pub fn blocked(policies: &[Policy], wait: Duration) -> Decisions {
    let denial = |policy: &Policy| Decision {
        outcome: Outcome::Denied {
            retry_after: Some(wait),
        },
        limit: policy.quota().burst_size(),
        remaining: 0,
        reset: Some(wait),
    };
    match policies {
        [one] => denial(one).into(),
        all => Decisions::new(all.iter().map(denial).collect()),
    }
}
