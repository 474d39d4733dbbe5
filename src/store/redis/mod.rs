//! [`RedisStore`]: one limit shared by many app servers, kept in Redis.

mod breaker;
mod cluster;
mod deny_cache;
mod invalidation;
mod key;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::{ErrorKind, RedisResult, ServerErrorKind};
use tokio::sync::Semaphore;

use self::breaker::Breaker;
use self::cluster::{Connection, Target};
use self::deny_cache::{name_hash, DenyCache, DenyCaches, Gcra};
use self::invalidation::Listener;
pub use self::key::RedisKey;
use super::{Change, Store, StoreError, StoreErrorKind};
use crate::clock::{Clock, MonotonicClock};
use crate::{Algorithm, Decision, Decisions, Outcome, Policies, Policy};

/// The one script every decision runs: the shared prelude (Redis time, exact integer
/// division), one function per algorithm, and `decide.lua`, which checks every policy of a
/// key and charges all of them or none.
const SCRIPT: &str = concat!(
    include_str!("scripts/prelude.lua"),
    include_str!("scripts/gcra.lua"),
    include_str!("scripts/token_bucket.lua"),
    include_str!("scripts/shaper.lua"),
    include_str!("scripts/fixed_window.lua"),
    include_str!("scripts/sliding_window.lua"),
    include_str!("scripts/decide.lua"),
);

/// The script's name for each kind of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// GCRA: the token bucket and the leaky-bucket meter.
    TokenBucket = 0,
    Shaper = 1,
    FixedWindow = 2,
    SlidingWindow = 3,
}

/// The longest span Redis can hold exactly (in microseconds): 100 years, as for
/// [`Quota`](crate::Quota), so that Redis time plus a bucket's depth or a period stays below 2^53.
const MAX_SPAN_MICROS: u64 = 100 * 365 * 86_400 * 1_000_000;

/// Lua's doubles hold every integer up to this exactly.
const MAX_EXACT: u64 = 1 << 53;

/// A store in Redis, shared by every app server that uses the same Redis and prefix.
///
/// Each decision is one call of one Lua script computing what the in-process store
/// computes, on one Redis key per policy, `<prefix>:{<key>}:<policy fingerprint>`: the
/// braces make the key its Cluster hash tag (every policy of a key lands in one slot, so
/// one script checks and charges them all atomically), and the fingerprint keeps state
/// written under another quota or algorithm apart. See [`RedisKey`] for how keys are
/// written (long, binary or secret keys are hashed).
///
/// # Semantics
///
/// * **Time** is Redis's (`TIME` in the script), so app servers with skewed clocks agree.
///   State is integers in microseconds: the TAT for the buckets, the window number and
///   counts for the windows, whose edges are multiples of the period since the Unix epoch.
///   An emission interval or period that is not a whole number of microseconds is
///   **rounded up** to one (never admits more than asked), a `max_delay` rounded down.
/// * **Bounds**: the scripts compute in Lua's doubles, exact below 2^53. A decision fails
///   with a [`StoreError`] for a quota beyond them: `burst × interval` (plus `max_delay`)
///   or a window's period over 100 years, a fixed window's burst over 2^52, or a sliding
///   window's `(burst + 1) × period` over 2^53 µs (about 104 000 per day).
/// * **Expiry**: a key is written with `PX` set to exactly its remaining life, after which
///   it would say no more than a missing key: until its TAT, the end of its window, or for
///   a sliding window the end of the next one. A [fixed](crate::Quota::fixed) quota never
///   refills, so its spent count is kept **without a TTL**.
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
/// For the token bucket and the leaky-bucket meter, alone: when Redis denies a request, the
/// store remembers a lower bound of the key's state and,
/// until it has passed, denies locally the requests GCRA would deny on that bound: denied
/// traffic then costs what the in-process store costs, not a round trip. Because a bound
/// can only be earlier than the real state, the cache never denies a request Redis would
/// allow. A locally denied request reports bounds: Redis could have reported less
/// `remaining` and a longer `retry_after`. If Redis loses its data (a restart without
/// persistence), keys stay denied locally until their bound has passed. On by default;
/// see [`RedisStoreBuilder::deny_cache`].
///
/// # Redis Cluster
///
/// With feature `redis-cluster`, `RedisStore::cluster` runs the same store on a Redis
/// Cluster; its documentation says how calls are routed and what a failover may admit.
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
    connection: Connection,
    /// The SHA-1 of the script.
    sha: String,
    prefix: String,
    deadline: Duration,
    in_flight: Arc<Semaphore>,
    breaker: Arc<Breaker>,
    /// `None` when turned off.
    deny_caches: Option<Arc<DenyCaches>>,
    /// Where resets and refunds announce the keys they changed.
    channel: String,
    /// Listens on `channel` while the deny cache is on.
    listener: Option<Listener>,
    clock: MonotonicClock,
}

/// Settings for a [`RedisStore`]; made by [`RedisStore::builder`].
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    target: Target,
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
            target: Target::Single(url.to_owned()),
            prefix: "ratelimit".to_owned(),
            deadline: Duration::from_millis(50),
            max_in_flight: 4096,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_millis(250),
            deny_cache_capacity: Some(65_536),
        }
    }

    /// The Redis key holding `key`'s state under policy `index` of `policies`, in their
    /// namespace (for inspection and tooling).
    pub fn storage_key<K: RedisKey + ?Sized>(
        &self,
        key: &K,
        policies: &Policies,
        index: usize,
    ) -> Vec<u8> {
        let fingerprint = policies[index].fingerprint();
        key::storage_key(&self.shared.prefix, policies.namespace(), key, fingerprint)
    }

    /// The SHA-1 of the script, as `EVALSHA` names it. Its arguments: `KEYS`, one per
    /// policy; `ARGV`, the change (0 charge, 1 reset, 2 refund, 3
    /// penalize, 4 block) and its amount (cost, units, or microseconds), then for each
    /// policy its algorithm (0 token bucket, 1 shaper, 2 fixed window, 3 sliding window),
    /// emission interval or period in whole microseconds, burst, and the shaper's
    /// `max_delay` in microseconds (else 0). `scripts/decide.lua` documents the reply.
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
        let failed = |e: redis::RedisError| {
            StoreError::new(StoreErrorKind::Unavailable, "cannot use Redis").with_source(e)
        };
        let mut connection = self.target.connect(self.deadline).await.map_err(failed)?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query_async(&mut connection)
            .await
            .map_err(failed)?;
        let store = self.build(connection, sha);
        if let Some(listener) = &store.shared.listener {
            listener.subscribed().await;
        }
        Ok(store)
    }

    /// The store at once, without waiting for Redis, for app servers that must start
    /// while Redis is down: its decisions fail (and the layer's
    /// [`FailurePolicy`](crate::FailurePolicy) applies) until Redis answers. The
    /// connection is made on the first decision and remade as needed; the script is sent
    /// with the first call. Needs a Tokio runtime. Fails only for an invalid URL, or for a
    /// [cluster](RedisStore::cluster_builder), whose slot map must be read first.
    ///
    /// ```
    /// use tower_ratelimit::store::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_ratelimit::store::StoreError> {
    /// // Nothing listens there: the store is built all the same.
    /// let store = RedisStore::builder("redis://127.0.0.1:1").connect_lazy()?;
    /// # Ok(()) }
    /// ```
    pub fn connect_lazy(self) -> Result<RedisStore, StoreError> {
        let connection = self.target.connect_lazily(self.deadline);
        let connection = connection.map_err(|e| {
            StoreError::new(StoreErrorKind::Misconfigured, "cannot use Redis").with_source(e)
        })?;
        let sha = redis::Script::new(SCRIPT).get_hash().to_owned();
        Ok(self.build(connection, sha))
    }

    /// The store, its deny caches listening for invalidations (needs a Tokio runtime).
    fn build(self, connection: Connection, sha: String) -> RedisStore {
        let channel = invalidation::channel(&self.prefix);
        let deny_caches = self
            .deny_cache_capacity
            .map(|capacity| Arc::new(DenyCaches::new(capacity)));
        let listener = deny_caches.as_ref().map(|caches| {
            invalidation::listen(self.target.urls(), channel.clone(), Arc::clone(caches))
        });
        RedisStore {
            shared: Arc::new(Shared {
                connection,
                sha,
                prefix: self.prefix,
                deadline: self.deadline,
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                breaker: Arc::new(Breaker::new(self.breaker_failures, self.breaker_cool_down)),
                deny_caches,
                channel,
                listener,
                clock: MonotonicClock::new(),
            }),
        }
    }
}

/// A policy as the script takes it.
#[derive(Clone, Copy)]
struct Limits {
    kind: Kind,
    /// In whole microseconds: the emission interval (rounded up) for the buckets, the
    /// period (rounded up) for the windows; 0 if the quota never refills.
    time: u64,
    burst: u64,
    /// The shaper's `max_delay` in whole microseconds (rounded down); 0 otherwise.
    max_delay: u64,
}

impl Limits {
    fn of(policy: &Policy) -> Result<Self, StoreError> {
        let quota = policy.quota();
        let up = |ns: u128| u64::try_from(ns.div_ceil(1000)).unwrap_or(u64::MAX);
        let interval = quota.interval_nanos().map_or(0, |ns| up(ns.into()));
        let period = quota.period().map_or(0, |period| up(period.as_nanos()));
        let burst = quota.burst_size();
        let (kind, time, max_delay) = match policy.algorithm() {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => (Kind::TokenBucket, interval, 0),
            Algorithm::LeakyBucketShaper { max_delay } => (
                Kind::Shaper,
                interval,
                u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX),
            ),
            Algorithm::FixedWindow => (Kind::FixedWindow, period, 0),
            Algorithm::SlidingWindow => (Kind::SlidingWindow, period, 0),
        };
        let exact = match kind {
            Kind::TokenBucket | Kind::Shaper => time
                .checked_mul(burst)
                .and_then(|depth| depth.checked_add(max_delay))
                .is_some_and(|span| span <= MAX_SPAN_MICROS),
            Kind::FixedWindow => time <= MAX_SPAN_MICROS && burst <= MAX_EXACT / 2,
            Kind::SlidingWindow => {
                time <= MAX_SPAN_MICROS
                    && (burst + 1)
                        .checked_mul(time)
                        .is_some_and(|product| product <= MAX_EXACT)
            }
        };
        if !exact {
            return Err(StoreError::new(
                StoreErrorKind::Misconfigured,
                format!(
                    "the quota of policy \"{}\" is too large to compute exactly in Redis \
                     for {:?}",
                    policy.name(),
                    policy.algorithm()
                ),
            ));
        }
        Ok(Self {
            kind,
            time,
            burst,
            max_delay,
        })
    }

    /// The quota as GCRA in local nanoseconds, for the deny cache: only the token bucket
    /// and the meter, and only when the quota refills. (A shaper's denial is about the
    /// queue, and windows do not keep a TAT.)
    fn gcra(self) -> Option<Gcra> {
        (self.kind == Kind::TokenBucket && self.time > 0).then_some(Gcra {
            interval: self.time * 1000,
            burst: self.burst,
        })
    }

    /// The script's reply for this policy as a [`Decision`].
    fn decision(self, reply: &[u64]) -> Result<Decision, StoreError> {
        let &[outcome, remaining, reset, time] = reply else {
            return Err(unexpected("a reply of four integers"));
        };
        // A blocked key (4) waits for its block, whether the quota refills or not.
        let refills = self.time > 0 || outcome == 4;
        let outcome = match outcome {
            0 => Outcome::Allowed,
            1 => Outcome::Denied {
                retry_after: refills.then_some(Duration::from_micros(time)),
            },
            2 => Outcome::CostExceedsBurst,
            3 => Outcome::Delayed {
                wait: Duration::from_micros(time),
            },
            4 => Outcome::Denied {
                retry_after: Some(Duration::from_micros(time)),
            },
            _ => return Err(unexpected("an outcome from 0 to 4")),
        };
        Ok(Decision {
            outcome,
            limit: self.burst,
            remaining,
            reset: refills.then_some(Duration::from_micros(reset)),
        })
    }
}

impl Shared {
    fn with_deny_cache<K, R>(&self, f: impl FnOnce(&DenyCache<K>) -> R) -> Option<R>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.deny_caches.as_ref()?.with(f)
    }

    /// One script call: `EVALSHA`, or `EVAL` once if Redis does not know the script.
    async fn call(
        &self,
        keys: &[Vec<u8>],
        limits: &[Limits],
        change: [u64; 2],
    ) -> RedisResult<Vec<u64>> {
        let mut connection = self.connection.clone();
        let mut args = Vec::with_capacity(2 + 4 * limits.len());
        args.extend(change);
        for limits in limits {
            args.extend([
                limits.kind as u64,
                limits.time,
                limits.burst,
                limits.max_delay,
            ]);
        }
        let call = |command: &str, script: &str| {
            let mut call = redis::cmd(command);
            call.arg(script).arg(keys.len()).arg(keys);
            call.arg(&args[..2]).arg(&self.channel).arg(&args[2..]);
            call
        };
        match call("EVALSHA", &self.sha)
            .query_async(&mut connection)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Not run: Redis refused the call before running anything.
                call("EVAL", SCRIPT).query_async(&mut connection).await
            }
            reply => reply,
        }
    }
}

/// An answer the script should never give.
fn unexpected(expected: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Misconfigured,
        format!("unexpected script reply: expected {expected}"),
    )
}

/// A change as the script takes it: its code and amount.
fn script_change(change: Change) -> [u64; 2] {
    let micros = |d: Duration| u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
    match change {
        Change::Charge(cost) => [0, cost],
        Change::Reset => [1, 0],
        Change::Refund(units) => [2, units],
        Change::Penalize(units) => [3, units],
        Change::Block(duration) => [4, micros(duration)],
    }
}

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
                let local =
                    shared.with_deny_cache(|cache| cache.check(fingerprint, key, cost, gcra, sent));
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
        let Some(pass) = shared.breaker.pass(sent) else {
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
        let storage_keys: Vec<Vec<u8>> = policies
            .iter()
            .map(|policy| {
                let namespace = policies.namespace();
                key::storage_key(&shared.prefix, namespace, key, policy.fingerprint())
            })
            .collect();
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
                    return Err(StoreError::new(StoreErrorKind::Unavailable, "Redis failed")
                        .with_source(error));
                }
                Err(_) => {
                    pass.record(false, done);
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
                // retry = TAT + cost·T − burst·T − now (Redis time), so the TAT was
                // `retry + (burst − cost)·T` ahead of Redis's clock when the script ran,
                // which was no earlier than `sent`. (A block's retry is its end: the bound
                // then denies exactly until the block ends.)
                let ahead = retry.as_nanos() as u64 + (gcra.burst - cost) * gcra.interval;
                let name = name_hash(&storage_keys[0]);
                shared.with_deny_cache(|cache| {
                    cache.record(fingerprint, &key, name, sent + ahead, done)
                });
            }
            Ok(Decisions::new(decisions))
        })))
    }

    /// Checks that Redis can compute every policy exactly (the scripts count in Lua's
    /// doubles, exact below 2^53).
    fn supports(&self, policies: &Policies) -> Result<(), StoreError> {
        policies
            .iter()
            .try_for_each(|policy| Limits::of(policy).map(drop))
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
