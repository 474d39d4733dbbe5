//! Deciding on Redis: the deny cache first, then the breaker and the in-flight cap, then
//! one script call; [`RedisDecision`], the answer under way.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::batch::{self, Entry};
use super::deny_cache::name_hash;
use super::script::Limits;
use super::{key, RedisKey, RedisStore};
use crate::algorithm::gcra_debt;
use crate::clock::Clock;
use crate::store::{Change, QuotaBoard, QuotaChange, Store, StoreError, StoreErrorKind};
use crate::{Decision, Decisions, Outcome, Policies, Policy, Quota};

impl<K> Store<K> for RedisStore
where
    K: RedisKey + Hash + Eq + Clone + Send + Sync + 'static,
{
    type Future = RedisDecision;

    fn apply(&self, key: &K, change: Change, policies: &Policies) -> RedisDecision {
        let shared = &self.shared;
        let limits = match policies
            .iter()
            .map(Limits::of)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(limits) => limits,
            Err(error) => return RedisDecision::ready(Err(error)),
        };
        let fingerprint = policies.fingerprint();
        // Read before the call is sent, so that a bound derived from the answer can only
        // be early.
        let sent = shared.clock.now_nanos();
        let gcra = match (&*limits, change) {
            ([one], Change::Charge(_)) => one.gcra(),
            _ => None,
        };
        match (gcra, change) {
            (Some(gcra), Change::Charge(cost)) => {
                let local = shared
                    .with_deny_cache(|cache| cache.check(fingerprint, key, cost, &gcra, sent));
                if let Some(decision) = local.flatten() {
                    return RedisDecision::ready(Ok(decision.into()));
                }
            }
            (_, Change::Charge(_)) => {}
            // The key's state changes: what the cache knows of it may no longer hold.
            _ => {
                shared.with_deny_cache(|cache| {
                    for index in 0..policies.len() {
                        cache.forget(policies.state_id(index), key);
                    }
                });
            }
        }
        let storage_keys: Vec<Vec<u8>> = policies
            .iter()
            .map(|policy| {
                let namespace = policies.namespace();
                key::storage_key(&shared.prefix, namespace, key, policy.fingerprint())
            })
            .collect();
        // A dead Redis (or master) costs nothing per request: refused here while its
        // breaker is open.
        let breaker = shared.breakers.for_key(&storage_keys[0]);
        if breaker.is_open(sent) {
            return RedisDecision::ready(Err(batch::circuit_open()));
        }
        let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
            return RedisDecision::ready(Err(StoreError::new(
                StoreErrorKind::Overloaded,
                "too many Redis calls in flight",
            )));
        };
        let name = gcra.map(|_| name_hash(&storage_keys[0]));
        let deadline = tokio::time::Instant::now() + shared.deadline;
        let (entry, reply) = Entry::new(storage_keys, limits.clone(), change, deadline);
        let shared = Arc::clone(shared);
        let key = key.clone();
        RedisDecision(State::Calling(Box::pin(async move {
            // Queued on the first poll, inside the runtime that sends the batch.
            shared.batcher.submit(&shared, entry);
            let reply = reply.answer(deadline).await;
            drop(permit);
            let done = shared.clock.now_nanos();
            let Some(reply) = reply else {
                return Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("Redis did not answer within {:?}", shared.deadline),
                ));
            };
            let reply = reply?;
            let decisions = limits
                .iter()
                .zip(reply.chunks(4))
                .map(|(limits, reply)| limits.decision(reply))
                .collect::<Result<Vec<_>, _>>()?;
            if let (
                [Decision {
                    outcome:
                        Outcome::Denied {
                            retry_after: Some(retry),
                        },
                    ..
                }],
                Some(gcra),
                Change::Charge(cost),
            ) = (&*decisions, gcra, change)
            {
                // The TAT stood this far ahead of Redis's clock when the script ran, which
                // was no earlier than `sent`. (A block's retry is its end: the bound then
                // denies exactly until the block ends.)
                let ahead = gcra_debt(*retry, cost, &gcra);
                let name = name.unwrap_or_default();
                shared.with_deny_cache(|cache| {
                    cache.record(fingerprint, &key, name, sent + ahead, done)
                });
            }
            Ok(Decisions::new(decisions))
        })))
    }

    /// The live app servers sharing the prefix, as counted by the heartbeats.
    fn instances(&self) -> Option<u64> {
        self.shared.heartbeat.instances()
    }

    /// Checks that Redis can compute every policy exactly (the scripts count in Lua's
    /// doubles, exact below 2^53).
    fn supports(&self, policies: &Policies) -> Result<(), StoreError> {
        policies
            .iter()
            .try_for_each(|policy| Limits::of(policy).map(drop))
    }

    fn quotas(&self) -> Option<&QuotaBoard> {
        Some(&self.shared.quotas)
    }

    /// Writes the change to `<prefix>:{quotas}` and publishes the hash's name on
    /// `<prefix>:invalidate`, in one script: every store sharing the prefix reads the hash
    /// again when it hears it (and whenever it subscribes again, so a store that missed it
    /// catches up). Refuses a quota Redis cannot compute exactly.
    fn change_quota(&self, policies: &Policies, index: usize, quota: Option<Quota>) -> QuotaChange {
        let own = &policies[index];
        let policy = quota.map(|quota| Policy::new(own.name(), quota, own.algorithm()));
        let shared = Arc::clone(&self.shared);
        let id = policies.state_id(index);
        Box::pin(async move {
            let policy = policy.transpose().map_err(|error| {
                StoreError::new(StoreErrorKind::InvalidChange, error.to_string())
            })?;
            shared.change_quota(id, policy.as_ref()).await
        })
    }
}

/// A [`RedisStore`] decision under way. Ready at once when it needs no round trip (a
/// local denial, an open circuit, too many calls in flight), so the layer then answers
/// without waiting.
pub struct RedisDecision(State);

type Call = Pin<Box<dyn Future<Output = Result<Decisions, StoreError>> + Send>>;

enum State {
    Ready(Option<Result<Decisions, StoreError>>),
    Calling(Call),
}

impl RedisDecision {
    fn ready(result: Result<Decisions, StoreError>) -> Self {
        Self(State::Ready(Some(result)))
    }
}

impl Future for RedisDecision {
    type Output = Result<Decisions, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Ready(result) => Poll::Ready(result.take().expect("polled after completion")),
            State::Calling(call) => call.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for RedisDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            State::Ready(_) => "RedisDecision::Ready",
            State::Calling(_) => "RedisDecision::Calling",
        })
    }
}
