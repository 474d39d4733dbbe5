//! [`RedisStore`]: one limit shared by many app servers, kept in Redis.

mod breaker;
mod deny_cache;
mod key;

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisResult, ServerErrorKind};
use tokio::sync::Semaphore;

use self::breaker::Breaker;
use self::deny_cache::{DenyCache, Gcra};
pub use self::key::RedisKey;
use super::{Store, StoreError};
use crate::clock::{Clock, MonotonicClock};
use crate::{Algorithm, Decision, Outcome, Policy, Quota};

/// The token bucket in Lua: GCRA with the TAT in integer microseconds of Redis time.
const TOKEN_BUCKET: &str = include_str!("scripts/token_bucket.lua");

/// The deepest bucket Redis can hold exactly (in microseconds): 100 years, as for
/// [`Quota`], so that Redis time plus a bucket's depth stays below 2^53.
const MAX_TOLERANCE_MICROS: u64 = 100 * 365 * 86_400 * 1_000_000;

/// A store in Redis, shared by every app server that uses the same Redis and prefix.
///
/// It implements the token bucket and the leaky-bucket meter (which admits the same
/// requests); other algorithms fail each decision with a [`StoreError`], so the layer's
/// [`FailurePolicy`](crate::FailurePolicy) applies.
///
/// Each decision is one call of a Lua script (GCRA, as the in-process store computes it)
/// on one key, `<prefix>:{<key>}:<policy fingerprint>`: the braces make the key its
/// Cluster hash tag, and the fingerprint keeps state written under another quota or
/// algorithm apart. See [`RedisKey`] for how keys are written (long, binary or secret keys
/// are hashed).
///
/// # Semantics
///
/// * **Time** is Redis's (`TIME` in the script), so app servers with skewed clocks agree.
///   The state is the TAT in integer microseconds; an emission interval that is not a whole
///   number of microseconds is **rounded up** to one, which never admits more than asked.
/// * **Expiry**: a key is written with `PX` set to exactly its remaining life (until its
///   TAT), after which it would say no more than a missing key. A [fixed](Quota::fixed)
///   quota never refills, so its spent count is kept **without a TTL**.
/// * **Calls**: `EVALSHA`; on `NOSCRIPT` (restart, failover, `SCRIPT FLUSH`) the script is
///   sent with `EVAL` once. A call that timed out or failed on the connection is never
///   sent again, since it may have counted.
///
/// # Failures
///
/// A decision fails (and the layer applies its
/// [`FailurePolicy`](crate::FailurePolicy)) when Redis errs, does not answer within the
/// [deadline](RedisStoreBuilder::deadline) (50 ms by default), when
/// [too many calls](RedisStoreBuilder::max_in_flight) are under way, or while the circuit
/// breaker is open: after [5 failures in a row](RedisStoreBuilder::breaker) it fails calls
/// at once for 250 ms, then lets one probe through, whose success closes it again. The
/// connection is multiplexed (one per store, pipelining concurrent calls) and reconnects
/// on its own.
///
/// # Deny cache
///
/// When Redis denies a request, the store remembers a lower bound of the key's state and,
/// until it has passed, denies locally the requests GCRA would deny on that bound: denied
/// traffic then costs what the in-process store costs, not a round trip. Because a bound
/// can only be earlier than the real state, the cache never denies a request Redis would
/// allow. A locally denied request reports bounds: Redis could have reported less
/// `remaining` and a longer `retry_after`. If Redis loses its data (a restart without
/// persistence), keys stay denied locally until their bound has passed. On by default;
/// see [`RedisStoreBuilder::deny_cache`].
///
/// # Example
///
/// ```no_run
/// use tower_ratelimit::{key, store::RedisStore, FailurePolicy, Quota, RateLimitLayer};
///
/// # async fn run() -> Result<(), tower_ratelimit::store::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = RateLimitLayer::new(key::Header::new("x-api-key"), store, Quota::per_minute(600).burst(100))
///     .on_store_error(FailurePolicy::FallbackLocal);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    connection: ConnectionManager,
    sha: String,
    prefix: String,
    deadline: Duration,
    in_flight: Arc<Semaphore>,
    breaker: Arc<Breaker>,
    /// One deny cache per key type the store is used with; `None` when turned off.
    deny_caches: Option<DashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    deny_cache_capacity: usize,
    clock: MonotonicClock,
}

/// Settings for a [`RedisStore`]; made by [`RedisStore::builder`].
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    deadline: Duration,
    max_in_flight: usize,
    breaker_failures: u32,
    breaker_cool_down: Duration,
    deny_cache_capacity: Option<usize>,
}

impl RedisStore {
    /// Connects with the default settings; see [`RedisStore::builder`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Settings for a store on the Redis at `url` (`redis://[:password@]host[:port][/db]`).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.to_owned(),
            prefix: "ratelimit".to_owned(),
            deadline: Duration::from_millis(50),
            max_in_flight: 4096,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_millis(250),
            deny_cache_capacity: Some(65_536),
        }
    }

    /// The Redis key holding `key`'s state under `policy` (for inspection and tooling).
    pub fn storage_key<K: RedisKey + ?Sized>(&self, key: &K, policy: &Policy) -> Vec<u8> {
        key::storage_key(&self.shared.prefix, key, policy.fingerprint())
    }

    /// The SHA-1 of the token-bucket script, as `EVALSHA` names it.
    pub fn script_sha(&self) -> &str {
        &self.shared.sha
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key the store writes (default `ratelimit`). Stores share limits
    /// only when they use the same prefix.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// The longest a decision may take, connection trouble included (default 50 ms).
    /// Past it the decision fails; the call is not repeated.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most calls under way at once (default 4096, at least 1); past it decisions fail
    /// at once instead of queueing behind a slow Redis.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// After `failures` failed calls in a row (default 5), calls fail at once for
    /// `cool_down` (default 250 ms); then one probe call decides whether Redis is back.
    pub fn breaker(mut self, failures: u32, cool_down: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_cool_down = cool_down;
        self
    }

    /// Turns the deny cache on or off (default on, 65 536 keys per key type).
    pub fn deny_cache(mut self, on: bool) -> Self {
        self.deny_cache_capacity = on.then_some(self.deny_cache_capacity.unwrap_or(65_536));
        self
    }

    /// The most keys the deny cache remembers (per key type); turns it on.
    pub fn deny_cache_capacity(mut self, keys: usize) -> Self {
        self.deny_cache_capacity = Some(keys);
        self
    }

    /// Connects and loads the script. Fails if Redis cannot be reached (after a few
    /// attempts over about a second) or refuses the script.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let failed = |e: redis::RedisError| StoreError::new(format!("cannot use Redis: {e}"));
        let client = redis::Client::open(self.url.as_str()).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(self.deadline.max(Duration::from_millis(500))))
            // Reconnect attempts at most 200 ms apart, so a restarted Redis is used again
            // within a few hundred milliseconds.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let mut connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(failed)?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(TOKEN_BUCKET)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        Ok(RedisStore {
            shared: Arc::new(Shared {
                connection,
                sha,
                prefix: self.prefix,
                deadline: self.deadline,
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                breaker: Arc::new(Breaker::new(self.breaker_failures, self.breaker_cool_down)),
                deny_caches: self.deny_cache_capacity.map(|_| DashMap::new()),
                deny_cache_capacity: self.deny_cache_capacity.unwrap_or(0),
                clock: MonotonicClock::new(),
            }),
        })
    }
}

/// A quota as the script takes it.
#[derive(Clone, Copy)]
struct Limits {
    /// The emission interval in microseconds, rounded up; 0 if the quota never refills.
    interval: u64,
    burst: u64,
}

impl Limits {
    fn of(quota: &Quota) -> Result<Self, StoreError> {
        let limits = Self {
            interval: quota.interval_nanos().map_or(0, |ns| ns.div_ceil(1000)),
            burst: quota.burst_size(),
        };
        match limits.interval.checked_mul(limits.burst) {
            Some(depth) if depth <= MAX_TOLERANCE_MICROS => Ok(limits),
            _ => Err(StoreError::new(
                "quota too deep for Redis: burst × interval (in whole µs) exceeds 100 years",
            )),
        }
    }

    /// The quota as GCRA in local nanoseconds, `None` if it never refills.
    fn gcra(self) -> Option<Gcra> {
        (self.interval > 0).then_some(Gcra {
            interval: self.interval * 1000,
            burst: self.burst,
        })
    }

    /// The script's reply as a [`Decision`].
    fn decision(
        self,
        (outcome, remaining, micros): (u8, u64, u64),
    ) -> Result<Decision, StoreError> {
        let time = (self.interval > 0).then_some(Duration::from_micros(micros));
        let outcome = match outcome {
            0 => Outcome::Allowed,
            1 => Outcome::Denied { retry_after: time },
            2 => Outcome::CostExceedsBurst,
            other => {
                return Err(StoreError::new(format!(
                    "unexpected script outcome {other}"
                )))
            }
        };
        Ok(Decision {
            outcome,
            limit: self.burst,
            remaining,
            reset: time,
        })
    }
}

impl Shared {
    fn with_deny_cache<K, R>(&self, f: impl FnOnce(&DenyCache<K>) -> R) -> Option<R>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        let caches = self.deny_caches.as_ref()?;
        let id = TypeId::of::<K>();
        let cache = match caches.get(&id) {
            Some(cache) => cache,
            None => caches
                .entry(id)
                .or_insert_with(|| Box::new(DenyCache::<K>::new(self.deny_cache_capacity)))
                .downgrade(),
        };
        let cache: &(dyn Any + Send + Sync) = &**cache;
        cache.downcast_ref::<DenyCache<K>>().map(f)
    }

    /// One script call: `EVALSHA`, or `EVAL` once if Redis does not know the script.
    async fn call(&self, key: &[u8], limits: Limits, cost: u64) -> RedisResult<(u8, u64, u64)> {
        let mut connection = self.connection.clone();
        let args = [limits.interval, limits.burst, cost];
        let reply = redis::cmd("EVALSHA")
            .arg(&self.sha)
            .arg(1)
            .arg(key)
            .arg(&args[..])
            .query_async(&mut connection)
            .await;
        match reply {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Not run: Redis refused the call before running anything.
                redis::cmd("EVAL")
                    .arg(TOKEN_BUCKET)
                    .arg(1)
                    .arg(key)
                    .arg(&args[..])
                    .query_async(&mut connection)
                    .await
            }
            reply => reply,
        }
    }
}

impl<K> Store<K> for RedisStore
where
    K: RedisKey + Hash + Eq + Clone + Send + Sync + 'static,
{
    type Future = RedisDecision;

    fn decide(&self, key: &K, cost: u64, policy: &Policy) -> RedisDecision {
        let shared = &self.shared;
        // The meter admits exactly what the token bucket admits.
        if !matches!(
            policy.algorithm(),
            Algorithm::TokenBucket | Algorithm::LeakyBucket
        ) {
            return RedisDecision::ready(Err(StoreError::new(format!(
                "RedisStore does not implement {:?} yet",
                policy.algorithm()
            ))));
        }
        let limits = match Limits::of(policy.quota()) {
            Ok(limits) => limits,
            Err(error) => return RedisDecision::ready(Err(error)),
        };
        let fingerprint = policy.fingerprint();
        // Read before the call is sent, so that a bound derived from the answer can only
        // be early.
        let sent = shared.clock.now_nanos();
        let gcra = limits.gcra();
        if let Some(gcra) = gcra {
            let local =
                shared.with_deny_cache(|cache| cache.check(fingerprint, key, cost, gcra, sent));
            if let Some(decision) = local.flatten() {
                return RedisDecision::ready(Ok(decision));
            }
        }
        let Some(pass) = shared.breaker.pass(sent) else {
            return RedisDecision::ready(Err(StoreError::new(
                "circuit open: Redis failed repeatedly, retrying shortly",
            )));
        };
        let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
            return RedisDecision::ready(Err(StoreError::new("too many Redis calls in flight")));
        };
        let storage_key = key::storage_key(&shared.prefix, key, fingerprint);
        let shared = Arc::clone(shared);
        let key = key.clone();
        RedisDecision(State::Calling(Box::pin(async move {
            let reply =
                tokio::time::timeout(shared.deadline, shared.call(&storage_key, limits, cost))
                    .await;
            drop(permit);
            let done = shared.clock.now_nanos();
            let reply = match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(error)) => {
                    pass.record(false, done);
                    return Err(StoreError::new(format!("Redis: {error}")));
                }
                Err(_) => {
                    pass.record(false, done);
                    return Err(StoreError::new(format!(
                        "Redis did not answer within {:?}",
                        shared.deadline
                    )));
                }
            };
            pass.record(true, done);
            let decision = limits.decision(reply)?;
            if let (
                Outcome::Denied {
                    retry_after: Some(retry),
                },
                Some(gcra),
            ) = (decision.outcome, gcra)
            {
                // retry = TAT + cost·T − burst·T − now (Redis time), so the TAT was
                // `retry + (burst − cost)·T` ahead of Redis's clock when the script ran,
                // which was no earlier than `sent`.
                let ahead = retry.as_nanos() as u64 + (gcra.burst - cost) * gcra.interval;
                shared.with_deny_cache(|cache| cache.record(fingerprint, &key, sent + ahead, done));
            }
            Ok(decision)
        })))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("RedisStore")
            .field("prefix", &shared.prefix)
            .field("deadline", &shared.deadline)
            .field("in_flight", &(shared.in_flight.available_permits()))
            .field("breaker", &shared.breaker)
            .field("deny_cache", &shared.deny_caches.is_some())
            .finish_non_exhaustive()
    }
}

/// A [`RedisStore`] decision under way. Ready at once when it needs no round trip (a
/// local denial, an open circuit, too many calls in flight), so the layer then answers
/// without waiting.
pub struct RedisDecision(State);

type Call = Pin<Box<dyn Future<Output = Result<Decision, StoreError>> + Send>>;

enum State {
    Ready(Option<Result<Decision, StoreError>>),
    Calling(Call),
}

impl RedisDecision {
    fn ready(result: Result<Decision, StoreError>) -> Self {
        Self(State::Ready(Some(result)))
    }
}

impl Future for RedisDecision {
    type Output = Result<Decision, StoreError>;

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
