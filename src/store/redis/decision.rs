//! Deciding on Redis: the deny cache first, then the breaker and the in-flight cap, then
//! one script call; [`RedisDecision`], the answer under way.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::deny_cache::name_hash;
use super::script::{script_change, unexpected, Limits};
use super::{key, RedisKey, RedisStore};
use crate::algorithm::gcra_debt;
use crate::clock::Clock;
use crate::store::{Change, Store, StoreError, StoreErrorKind};
use crate::{Decision, Decisions, Outcome, Policies};

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
        let breaker = shared.breakers.for_key(&storage_keys[0]);
        let Some(pass) = breaker.pass(sent) else {
            return RedisDecision::ready(Err(StoreError::new(
                StoreErrorKind::CircuitOpen,
                "circuit open: Redis failed repeatedly, retrying shortly",
            )));
        };
        let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
            return RedisDecision::ready(Err(StoreError::new(
                StoreErrorKind::Overloaded,
                "too many Redis calls in flight",
            )));
        };
        let shared = Arc::clone(shared);
        let key = key.clone();
        RedisDecision(State::Calling(Box::pin(async move {
            let script = shared.call(&storage_keys, &limits, script_change(change));
            let reply = tokio::time::timeout(shared.deadline, script).await;
            drop(permit);
            let done = shared.clock.now_nanos();
            let reply = match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => {
                    pass.record(false, done);
                    shared.connection.failed();
                    return Err(failure(error));
                }
                Err(_) => {
                    pass.record(false, done);
                    shared.connection.failed();
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!("Redis did not answer within {:?}", shared.deadline),
                    ));
                }
            };
            pass.record(true, done);
            if reply.len() != 4 * limits.len() {
                return Err(unexpected("four integers per policy"));
            }
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
                let name = name_hash(&storage_keys[0]);
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
}

/// A script call's failure, by kind.
fn failure(error: redis::RedisError) -> StoreError {
    use redis::{ErrorKind::Server, ServerErrorKind};
    let (kind, message) = match error.kind() {
        _ if error.code() == Some("OOM") => (StoreErrorKind::OutOfMemory, "Redis is out of memory"),
        Server(ServerErrorKind::ClusterDown) => (
            StoreErrorKind::ClusterDown,
            "the Redis Cluster does not serve this key's slot (CLUSTERDOWN)",
        ),
        Server(ServerErrorKind::TryAgain) => (
            StoreErrorKind::Resharding,
            "the Redis Cluster is moving this key's slot (TRYAGAIN)",
        ),
        _ => (StoreErrorKind::Unavailable, "Redis failed"),
    };
    StoreError::new(kind, message).with_source(error)
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
