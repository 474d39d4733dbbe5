//! [`RedisStore`]: one limit shared by many app servers, kept in Redis.

mod batch;
mod breaker;
mod builder;
mod clients;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod connection;
mod decision;
mod deny_cache;
mod heartbeat;
mod invalidation;
mod key;
#[cfg(feature = "redis-cluster")]
mod masters;
mod quotas;
mod script;
#[cfg(feature = "redis-sentinel")]
mod sentinel;
#[cfg(feature = "redis-tls")]
mod tls;

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use self::batch::Batcher;
use self::breaker::Breakers;
pub use self::builder::RedisStoreBuilder;
use self::connection::{Connection, Target};
pub use self::decision::RedisDecision;
use self::deny_cache::{DenyCache, DenyCaches};
use self::heartbeat::Heartbeat;
use self::invalidation::Listener;
pub use self::key::RedisKey;
use self::script::CODE;
#[cfg(feature = "redis-tls")]
pub use self::tls::Pem;
use super::{QuotaBoard, StoreError};
use crate::clock::MonotonicClock;
use crate::Policies;

/// A store in Redis, shared by every app server that uses the same Redis and prefix.
///
/// Each change (a check, a reset, a refund, a penalty, a block) runs in one call of one Lua
/// script (with the changes [batched](#semantics) beside it) computing what the in-process
/// store computes, on one Redis key per policy,
/// `<prefix>:{<namespace>:<key>}:<policy fingerprint>`: the braces make the key its
/// Cluster hash tag (every policy of a key lands in one slot, so one script checks and
/// charges them all atomically), the namespace is the key's kind, and the fingerprint is
/// the policy's identity (see [the state identity](crate::store#state-identity)). See
/// [`RedisKey`] for how keys are written (anything that may be a secret is hashed).
///
/// # Semantics
///
/// * **Time** is Redis's (`TIME` in the script), so app servers with skewed clocks agree.
///   State is integers in microseconds: the TAT for the buckets, the window number and
///   counts for the windows, whose edges are multiples of the period since the Unix epoch.
///   An emission interval or period that is not a whole number of microseconds is
///   **rounded up** to one (never admits more than asked), a `max_delay` rounded down.
/// * **Bounds**: the scripts compute in Lua's doubles, exact below 2^53. A limiter whose
///   quota lies beyond them is refused when it is built
///   ([`PolicyError::Unsupported`](crate::PolicyError::Unsupported)): `burst × interval`
///   (plus `max_delay`) or a window's period over 100 years, a fixed window's burst over
///   2^52, or a sliding window's `(burst + 1) × period` over 2^53 µs (about 104 000 per
///   day).
/// * **Expiry**: a key is written with `PX` set to exactly its remaining life, after which
///   it would say no more than a missing key: until its TAT, the end of its window, or for
///   a sliding window the end of the next one. A [fixed](crate::Quota::fixed) quota never
///   refills, so its spent count is kept **without a TTL**.
/// * **Calls**: `FCALL` of a function library the store loads (Redis 7 and later: its
///   functions are defined once, not on every call as with `EVAL`); where Redis does not
///   know it (restart without persistence, `FUNCTION FLUSH`, a new node) it is loaded
///   again and the call sent again. On a Redis without functions, `EVALSHA`, and on
///   `NOSCRIPT` the script is sent with `EVAL` once. A call that timed out or failed on the connection is never
///   sent again, since it may have counted.
/// * **Batches** (group commit): while calls are under way (two at most per server, or
///   per hash tag on a Cluster), the changes that arrive meanwhile wait and leave
///   together in the next call, up to [`max_batch`](RedisStoreBuilder::max_batch) (64),
///   decided one after the other in arrival order at one instant of Redis time, each
///   with its own answer, exactly as the same calls one by one would. A key is read and
///   written once per call however many of its changes the batch carries. There is no
///   timer: a lone change leaves at once. A batch that fails or times out fails each of
///   its changes (under the failure policy), counts as one failure for the breaker, and
///   is not sent again; a change whose caller's deadline passed while it waited is not
///   sent at all.
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
/// `remaining` and a longer `retry_after`. A reset or a refund (from any app server)
/// publishes the keys it changed on `<prefix>:invalidate`, where every store listens and
/// drops those entries. If Redis loses its data (a restart without persistence), or a key
/// is deleted by hand, keys stay denied locally until their bound has passed. On by
/// default; see [`RedisStoreBuilder::deny_cache`].
///
/// # Redis Cluster, Sentinel, TLS
///
/// With feature `redis-cluster`, `RedisStore::cluster` runs the same store on a Redis
/// Cluster, and with `redis-sentinel`, `RedisStore::sentinel` on the master Redis Sentinel
/// names; their documentation says how calls are routed and what a failover may admit.
/// With `redis-tls`, `rediss://` URLs use TLS (`RedisStoreBuilder::tls_ca`,
/// `tls_client_cert`; an ACL user and password go in the URL).
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
    /// Whether calls go through the function library (`FCALL`): unless Redis has no
    /// functions (before 7.0) or forbids them.
    functions: AtomicBool,
    prefix: String,
    deadline: Duration,
    in_flight: Arc<Semaphore>,
    breakers: Breakers,
    /// Groups the changes that arrive while calls are under way.
    batcher: Batcher,
    /// `None` when turned off.
    deny_caches: Option<Arc<DenyCaches>>,
    /// Where resets and refunds announce the keys they changed, and quota changes the
    /// name of the quotas' hash.
    channel: String,
    /// Listens on `channel`.
    listener: Listener,
    /// The quotas changed at run time, as last read from the hash at `quotas_key`.
    quotas: QuotaBoard,
    quotas_key: String,
    /// Redis's `maxmemory-policy` as read when connecting, if it could be.
    maxmemory_policy: Option<String>,
    /// Counts the app servers sharing the prefix.
    heartbeat: Heartbeat,
    clock: MonotonicClock,
}

impl RedisStore {
    /// Connects with the default settings; see [`RedisStore::builder`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).connect().await
    }

    /// Settings for a store on the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`,
    /// or `rediss://` for TLS with feature `redis-tls`).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(Target::Single(url.to_owned()))
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

    /// Redis's `maxmemory-policy`, as read when the store connected (`None` if `CONFIG`
    /// is not allowed, or the store connected lazily). Anything but `noeviction` lets
    /// Redis drop rate-limit keys under memory pressure, which resets their limits
    /// silently: the store warns when it connects.
    pub fn maxmemory_policy(&self) -> Option<&str> {
        self.shared.maxmemory_policy.as_deref()
    }

    /// The SHA-1 of the script, as `EVALSHA` names it (on a Redis without functions).
    /// One call applies a batch of changes. Its arguments: `KEYS`, one per policy of each
    /// change, change after change; `ARGV`, the invalidation channel, the number of
    /// policy sets, and each set: its number of policies, then for each policy its
    /// algorithm (0 token bucket, 1 shaper, 2 fixed window, 3 sliding window), emission
    /// interval or period in whole microseconds, burst, and the shaper's `max_delay` in
    /// microseconds (else 0); then two numbers per change: 5 × its set (from 0) + its code
    /// (0 charge, 1 reset, 2 refund, 3 penalize, 4 block), and its amount (cost, units, or
    /// microseconds). `scripts/decide.lua` documents the reply.
    pub fn script_sha(&self) -> &str {
        &CODE.sha
    }

    /// The name of the same script as a function, as `FCALL` names it (Redis 7 and
    /// later): the store loads it as a library of that name and calls it, with the
    /// arguments of [`script_sha`](Self::script_sha).
    pub fn function_name(&self) -> &str {
        &CODE.name
    }
}

impl Shared {
    fn with_deny_cache<K, R>(&self, f: impl FnOnce(&DenyCache<K>) -> R) -> Option<R>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.deny_caches.as_ref()?.with(f)
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("RedisStore")
            .field("prefix", &shared.prefix)
            .field("deadline", &shared.deadline)
            .field("in_flight", &(shared.in_flight.available_permits()))
            .field("breakers", &shared.breakers)
            .field("deny_cache", &shared.deny_caches.is_some())
            .finish_non_exhaustive()
    }
}
