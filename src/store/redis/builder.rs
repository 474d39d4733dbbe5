//! [`RedisStoreBuilder`]: a store's settings, and connecting.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::batch::Batcher;
use super::breaker::Breakers;
use super::clients::Clients;
use super::connection::{Connection, Target};
use super::deny_cache::DenyCaches;
use super::heartbeat::Heartbeat;
use super::script;
use super::{invalidation, RedisStore, Shared};
use crate::clock::MonotonicClock;
use crate::store::{QuotaBoard, StoreError, StoreErrorKind};

/// Settings for a [`RedisStore`]; made by [`RedisStore::builder`].
#[derive(Clone, Debug)]
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    deadline: Duration,
    max_in_flight: usize,
    max_batch: usize,
    breaker_failures: u32,
    breaker_cool_down: Duration,
    deny_cache_capacity: Option<usize>,
    connect_timeout: Duration,
    heartbeat: Duration,
    #[cfg(feature = "redis-tls")]
    pub(super) tls: super::tls::Tls,
}

impl RedisStoreBuilder {
    /// The default settings for a store on `target`.
    pub(super) fn new(target: Target) -> Self {
        Self {
            target,
            prefix: "ratelimit".to_owned(),
            deadline: Duration::from_millis(50),
            max_in_flight: 4096,
            max_batch: 64,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_millis(250),
            deny_cache_capacity: Some(65_536),
            connect_timeout: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
            #[cfg(feature = "redis-tls")]
            tls: super::tls::Tls::default(),
        }
    }

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

    /// The most decisions under way at once, waiting for their batch or in one (default
    /// 4096, at least 1); past it decisions fail at once instead of queueing behind a slow
    /// Redis.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls.max(1);
        self
    }

    /// The most changes one script call carries (default 64, at least 1). Changes that
    /// arrive while calls are under way leave together in the next call, decided in
    /// arrival order; a lone change never waits. 1 turns batching off.
    pub fn max_batch(mut self, changes: usize) -> Self {
        self.max_batch = changes.max(1);
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

    /// How often the store tells Redis it is alive (default every second; an instance
    /// missing for three intervals no longer counts). The count of live instances sharing
    /// the prefix is each app server's share of the quota in its fallback while Redis is
    /// down (see [`Store::instances`](crate::store::Store::instances)).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Duration::from_millis(10));
        self
    }

    /// How long [`connect`](Self::connect) may take, the script loaded (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects and loads the script, within the [connect
    /// timeout](Self::connect_timeout) (1 s by default) whatever Redis does: it fails if
    /// Redis cannot be reached, refuses the script, or accepts the connection and never
    /// answers.
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        let clients = self.clients()?;
        let failed = |e: redis::RedisError| self.failed(e);
        let connecting = async {
            let connection = self.target.connect(&clients, self.deadline).await;
            let mut connection = connection.map_err(failed)?;
            let functions = script::load(&mut connection).await.map_err(failed)?;
            // Not every Redis lets clients read its configuration (managed services).
            let policy: Option<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async(&mut connection)
                .await
                .ok();
            let policy = policy.and_then(|reply| reply.into_iter().nth(1));
            Ok::<_, StoreError>((connection, functions, policy))
        };
        let timeout = self.connect_timeout;
        let (connection, functions, policy) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| {
                let message =
                    format!("Redis did not answer within the connect timeout ({timeout:?})");
                StoreError::new(StoreErrorKind::Timeout, message)
            })??;
        if let Some(policy) = policy.as_deref().filter(|&policy| policy != "noeviction") {
            tracing::warn!(
                maxmemory_policy = policy,
                "Redis may evict rate-limit keys under memory pressure, resetting their \
                 limits silently; prefer `maxmemory-policy noeviction` (or a Redis of their own)"
            );
        }
        let store = self.build(connection, functions, policy);
        store.shared.listener.subscribed().await;
        Ok(store)
    }

    /// The store at once, without waiting for Redis, for app servers that must start
    /// while Redis is down: its decisions fail (and the layer's
    /// [`FailurePolicy`](crate::FailurePolicy) applies) until Redis answers. The
    /// connection is made on the first decision and remade as needed; the script is sent
    /// with the first call; a [cluster](RedisStore::cluster_builder) is connected in the
    /// background, trying again every 200 ms until a node answers. Needs a Tokio runtime.
    /// Fails only for an invalid URL or TLS setting, or for
    /// [Sentinel](RedisStore::sentinel_builder), which must be asked for the master first.
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
        let clients = self.clients()?;
        let connection = self.target.connect_lazily(&clients, self.deadline);
        let connection = connection.map_err(|e| {
            StoreError::new(StoreErrorKind::Misconfigured, "cannot use Redis").with_source(e)
        })?;
        Ok(self.build(connection, true, None))
    }

    /// How the store's clients are made: with the TLS certificates, read.
    fn clients(&self) -> Result<Clients, StoreError> {
        Ok(Clients {
            #[cfg(feature = "redis-tls")]
            certificates: self.tls.certificates()?,
        })
    }

    /// A failure to connect: a bad setting, no answer in time, or Redis unavailable.
    fn failed(&self, error: redis::RedisError) -> StoreError {
        let kind = match error.kind() {
            redis::ErrorKind::InvalidClientConfig => StoreErrorKind::Misconfigured,
            _ if error.is_timeout() => StoreErrorKind::Timeout,
            _ => StoreErrorKind::Unavailable,
        };
        let message = match self.target.tls() {
            true => "cannot use Redis over TLS",
            false => "cannot use Redis",
        };
        StoreError::new(kind, message).with_source(error)
    }

    /// The store, its deny caches listening for invalidations (needs a Tokio runtime).
    fn build(
        self,
        connection: Connection,
        functions: bool,
        maxmemory_policy: Option<String>,
    ) -> RedisStore {
        let channel = invalidation::channel(&self.prefix);
        let deny_caches = self
            .deny_cache_capacity
            .map(|capacity| Arc::new(DenyCaches::new(capacity)));
        let quotas = QuotaBoard::new();
        let quotas_key = super::quotas::key(&self.prefix);
        let watched = invalidation::Watched {
            caches: deny_caches.clone(),
            quotas: quotas.clone(),
            quotas_key: quotas_key.clone(),
            connection: connection.clone(),
        };
        let listener = invalidation::listen(channel.clone(), watched);
        let breakers = Breakers::new(&connection, self.breaker_failures, self.breaker_cool_down);
        let heartbeat = Heartbeat::start(connection.clone(), &self.prefix, self.heartbeat);
        RedisStore {
            shared: Arc::new(Shared {
                connection,
                functions: AtomicBool::new(functions),
                prefix: self.prefix,
                deadline: self.deadline,
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                breakers,
                batcher: Batcher::new(self.max_batch, self.target.is_cluster()),
                deny_caches,
                channel,
                listener,
                quotas,
                quotas_key,
                maxmemory_policy,
                heartbeat,
                clock: MonotonicClock::new(),
            }),
        }
    }
}
