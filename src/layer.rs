//! [`RateLimitLayer`]: the configuration, applied to services with `.layer(...)`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use tower_layer::Layer;

use crate::headers::{HeaderWriter, RateLimitHeaders};
use crate::key::KeyExtractor;
use crate::limiter::LimiterBuilder;
use crate::observe::DecisionEvent;
use crate::reject::Rejection;
use crate::service::RateLimit;
use crate::store::Store;
use crate::throttle::Throttle;
use crate::verdict::{OnRejection, RefundIf, Resolve, Shared, Skip};
use crate::weight::{self, Weigher};
use crate::{Algorithm, FailurePolicy, Limiter, Policies, Policy, PolicyError, Quota, RequestHead};

/// Applies a keyed rate limit to a service: for each request, a key `K` is extracted, the
/// request is weighed, and the store `S` decides whether it passes.
///
/// ```
/// use axum::{routing::{get, post}, Router};
/// use tower_ratelimit::{key, store::MemoryStore, weight, Quota, RateLimitLayer};
///
/// let app: Router = Router::new()
///     .route("/api/ping", get(|| async { "pong" }))
///     .route("/api/upload", post(|| async { "stored" }))
///     .layer(
///         RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(1).burst(5))
///             .weight(weight::by_path([("/api/upload", 3)]).default(1)),
///     );
/// ```
///
/// What a client sees, through any Tower service:
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{Layer, ServiceExt};
/// use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = RateLimitLayer::new(key::Global, MemoryStore::new(), Quota::per_minute(1).burst(2));
/// let service = layer.layer(tower::service_fn(|_: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(()))
/// }));
/// let first = service.clone().oneshot(Request::new(())).await.unwrap();
/// assert_eq!(first.status(), StatusCode::OK);
/// // Two at once, then one a minute: the whole burst is back after 120 s.
/// assert_eq!(first.headers()["ratelimit-policy"], r#""default";q=2;w=120"#);
/// assert_eq!(first.headers()["ratelimit"], r#""default";r=1;t=60"#);
/// service.clone().oneshot(Request::new(())).await.unwrap();
/// let refused = service.oneshot(Request::new(())).await.unwrap();
/// assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(refused.headers()["retry-after"], "60");
/// assert_eq!(refused.headers()["ratelimit"], r#""default";r=0;t=60"#);
/// assert_eq!(refused.headers()["content-type"], "application/problem+json");
/// # }
/// ```
///
/// # Where it goes
///
/// Put the limiter **outside** concurrency limits, load shedding and timeouts (earlier in a
/// `ServiceBuilder`, later in axum's `.layer` chain): a rejected request then costs no
/// concurrency slot and is never queued or shed in place of a legitimate one.
///
/// # Responses
///
/// Every response that went through the limiter carries the rate-limit headers (see
/// [`headers`](crate::headers)). A refused request never reaches the service; it gets
/// `429` (or `413` when its cost exceeds the burst) with `Retry-After` and a problem body,
/// or a gRPC `RESOURCE_EXHAUSTED` status for gRPC requests. A request without a key gets
/// the [`KeyError`](crate::key::KeyError)'s status.
#[must_use = "a layer does nothing until applied to a service with `.layer(...)`"]
pub struct RateLimitLayer<K: KeyExtractor, S> {
    key: K,
    limiter: Limiter<K::Key, S>,
    weigher: Arc<dyn Weigher>,
    headers: RateLimitHeaders,
    on_rejection: Option<OnRejection>,
    skip: Option<Skip>,
    resolve: Option<Resolve<K::Key>>,
    refund_if: Option<RefundIf>,
    shadow: bool,
    expose_decision: bool,
}

impl<K: KeyExtractor, S: Store<K::Key>> RateLimitLayer<K, S> {
    /// Limits requests keyed by `key` to `quota`, with state in `store`.
    ///
    /// # Panics
    ///
    /// If the quota is invalid (see [`Quota::validate`]) or the store cannot enforce it;
    /// use [`try_new`](Self::try_new) to handle that as an error.
    pub fn new(key: K, store: S, quota: Quota) -> Self {
        Self::try_new(key, store, quota).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`new`](Self::new), returning an error for an invalid quota, or one the
    /// store cannot enforce.
    pub fn try_new(key: K, store: S, quota: Quota) -> Result<Self, PolicyError> {
        let policy = Policy::new("default", quota, Algorithm::default())?;
        Self::try_with_policy(key, store, policy)
    }

    /// Limits requests keyed by `key` to a [`Policy`] (a named quota with its algorithm),
    /// or to several [`Policies`] that every request must pass.
    ///
    /// # Panics
    ///
    /// If the store cannot enforce the policies; build a [`Limiter`] and use
    /// [`from_limiter`](Self::from_limiter) to handle that as an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_ratelimit::{key, store::MemoryStore, Algorithm, Policies, Policy, Quota, RateLimitLayer};
    ///
    /// let shaper = Algorithm::LeakyBucketShaper { max_delay: Duration::from_secs(2) };
    /// let policy = Policy::new("smooth", Quota::per_second(10).burst(1), shaper)?;
    /// let layer = RateLimitLayer::with_policy(key::PeerIp, MemoryStore::new(), policy);
    ///
    /// let both = Policies::new([
    ///     Policy::new("burst", Quota::per_second(10), Algorithm::TokenBucket)?,
    ///     Policy::new("daily", Quota::per_day(10_000), Algorithm::SlidingWindow)?,
    /// ])?;
    /// let layer = RateLimitLayer::with_policy(key::Header::new("x-api-key"), MemoryStore::new(), both);
    /// # Ok::<(), tower_ratelimit::PolicyError>(())
    /// ```
    pub fn with_policy(key: K, store: S, policies: impl Into<Policies>) -> Self {
        Self::try_with_policy(key, store, policies).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`with_policy`](Self::with_policy), returning an error if the store cannot
    /// enforce the policies.
    pub fn try_with_policy(
        key: K,
        store: S,
        policies: impl Into<Policies>,
    ) -> Result<Self, PolicyError> {
        let policies = policies.into().in_namespace(&key.namespace());
        Ok(Self::from_limiter(
            key,
            Limiter::builder(store, policies).build()?,
        ))
    }

    /// Limits requests keyed by `key` with `limiter`: the layer is its HTTP adapter, and
    /// [`limiter`](Self::limiter) gives it back, so handlers act on the very state the
    /// layer uses (reset a login counter after a successful login). The limiter's policies
    /// are used as they are: the other constructors put them in the key extractor's
    /// [namespace](KeyExtractor::namespace), this one leaves that to
    /// [`LimiterBuilder::namespace`].
    ///
    /// ```
    /// use axum::{extract::State, http::{HeaderMap, HeaderValue}, routing::post, Router};
    /// use tower_ratelimit::{key, store::MemoryStore, Limiter, Quota, RateLimitLayer};
    ///
    /// type Logins = Limiter<HeaderValue, MemoryStore<HeaderValue>>;
    ///
    /// let limiter: Logins = Limiter::new(MemoryStore::new(), Quota::per_minute(1).burst(5));
    /// let login = |State(limiter): State<Logins>, headers: HeaderMap| async move {
    ///     // ... on success, the user starts afresh:
    ///     if let Some(user) = headers.get("x-user") {
    ///         limiter.reset(user).await.ok();
    ///     }
    ///     "welcome"
    /// };
    /// let app: Router = Router::new()
    ///     .route("/login", post(login))
    ///     .with_state(limiter.clone())
    ///     .layer(RateLimitLayer::from_limiter(key::Header::new("x-user"), limiter));
    /// ```
    pub fn from_limiter(key: K, limiter: Limiter<K::Key, S>) -> Self {
        Self {
            key,
            limiter,
            weigher: Arc::new(weight::constant(1)),
            headers: RateLimitHeaders::default(),
            on_rejection: None,
            skip: None,
            resolve: None,
            refund_if: None,
            shadow: false,
            expose_decision: false,
        }
    }

    /// The limiter deciding for this layer: the same state, for direct checks, looks and
    /// resets.
    pub fn limiter(&self) -> &Limiter<K::Key, S> {
        &self.limiter
    }

    /// The limiter rebuilt with `f`, sharing its state.
    fn reconfigure(
        mut self,
        f: impl FnOnce(LimiterBuilder<K::Key, S>) -> LimiterBuilder<K::Key, S>,
    ) -> Self {
        self.limiter = self
            .limiter
            .reconfigure(f)
            .unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Sets how much each request costs (default: 1). A cost of 0 passes uncounted.
    pub fn weight(mut self, weigher: impl Weigher) -> Self {
        let policies = self.limiter.policies().iter();
        let burst = policies.map(|p| p.quota().burst_size()).min();
        let burst = burst.unwrap_or(u64::MAX);
        if let Some(max) = weigher.max_weight().filter(|&max| max > burst) {
            tracing::warn!(
                weight = max,
                burst,
                "a request weight exceeds the quota's burst: such requests can never pass"
            );
        }
        self.weigher = Arc::new(weigher);
        self
    }

    /// Sets the algorithm of every policy (default: [`Algorithm::TokenBucket`]). An
    /// explicit [`fallback_policy`](Self::fallback_policy) keeps its own.
    ///
    /// # Panics
    ///
    /// If the algorithm cannot enforce a quota (see [`Algorithm`]); build a [`Policy`]
    /// and use [`with_policy`](Self::with_policy) to handle that as an error.
    pub fn algorithm(self, algorithm: Algorithm) -> Self {
        let current = self.limiter.policies();
        let policies = Policies::new(current.iter().map(|policy| {
            Policy::new(policy.name(), *policy.quota(), algorithm)
                .unwrap_or_else(|e| panic!("invalid quota for {algorithm:?}: {e}"))
        }))
        .expect("the same names as before")
        .in_namespace(current.namespace());
        self.reconfigure(|limiter| limiter.policies(policies))
    }

    /// What to do when the store cannot decide (default: [`FailurePolicy::FallbackLocal`]).
    pub fn on_store_error(self, policy: FailurePolicy) -> Self {
        self.reconfigure(|limiter| limiter.on_store_error(policy))
    }

    /// While the store fails, the in-process fallback enforces each policy with its limit
    /// and burst divided by `share`; see [`LimiterBuilder::fallback_share`].
    pub fn fallback_share(self, share: u64) -> Self {
        self.reconfigure(|limiter| limiter.fallback_share(share))
    }

    /// The policies the in-process fallback enforces while the store is failing (default:
    /// the layer's).
    pub fn fallback_policy(self, policies: impl Into<Policies>) -> Self {
        let policies = policies.into();
        self.reconfigure(|limiter| limiter.fallback_policy(policies))
    }

    /// Calls `f` with every decision: key, cost, decision, who decided and how long it
    /// took. Use it to feed metrics or traces; it runs on the request path, so keep it
    /// quick.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
    ///
    /// let denied = Arc::new(AtomicU64::new(0));
    /// let counter = Arc::clone(&denied);
    /// let layer = RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(5))
    ///     .on_decision(move |event| {
    ///         if event.decision.is_some_and(|d| !d.is_allowed()) {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     });
    /// ```
    pub fn on_decision<F>(self, f: F) -> Self
    where
        F: Fn(&DecisionEvent<'_, K::Key>) + Send + Sync + 'static,
    {
        self.reconfigure(|limiter| limiter.on_decision(f))
    }

    /// Gives a request's charge back when its response matches `predicate` (on its status
    /// and headers): count only failed logins (refund `2xx`), or only successes. The
    /// refund never delays the response; on a remote store it is one more call, whose
    /// failure is logged (and counted as `ratelimit_refund_failures_total` with feature
    /// `metrics`), never retried.
    ///
    /// ```
    /// use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
    ///
    /// // Five failed logins per hour; successful ones are free.
    /// let layer = RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_hour(5))
    ///     .refund_if(|status, _| status.is_success());
    /// ```
    pub fn refund_if<F>(mut self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.refund_if = Some(Arc::new(predicate));
        self
    }

    /// Exempts the requests for which `predicate` holds (health checks, internal networks):
    /// they reach the service untouched, uncounted and without rate-limit headers. Several
    /// predicates exempt a request if any holds.
    ///
    /// ```
    /// use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(5))
    ///     .skip(|req| req.uri.path() == "/healthz");
    /// ```
    pub fn skip<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.skip = Some(match self.skip.take() {
            None => Arc::new(predicate),
            Some(earlier) => Arc::new(move |req: &RequestHead<'_>| earlier(req) || predicate(req)),
        });
        self
    }

    /// Picks the policy (or [`Policies`]) per key and request (tiers: free and paid API
    /// keys); `None` keeps the layer's. Each policy has its own state (its fingerprint is
    /// part of the storage key) and the headers report the policies applied. Build them
    /// once and clone them in `resolve` (a clone of [`Policies`] is a reference-count
    /// increment).
    ///
    /// ```
    /// use tower_ratelimit::{key, store::MemoryStore, Algorithm, Policy, Quota, RateLimitLayer};
    ///
    /// let pro = Policy::new("pro", Quota::per_second(100), Algorithm::TokenBucket)?;
    /// let layer = RateLimitLayer::new(key::Header::new("x-api-key"), MemoryStore::new(), Quota::per_second(10))
    ///     .policy_for(move |api_key, _| api_key.as_bytes().starts_with(b"pro_").then(|| pro.clone()));
    /// # Ok::<(), tower_ratelimit::PolicyError>(())
    /// ```
    pub fn policy_for<F, P>(mut self, resolve: F) -> Self
    where
        F: Fn(&K::Key, &RequestHead<'_>) -> Option<P> + Send + Sync + 'static,
        P: Into<Policies>,
    {
        // Tiers count in the layer's namespace too.
        let scope = self.limiter.policies().clone();
        self.resolve = Some(Arc::new(move |key: &K::Key, request: &RequestHead<'_>| {
            resolve(key, request).map(|tier| tier.into().scoped_like(&scope))
        }));
        self
    }

    /// Shadow mode: decide, charge and report (headers, decision hook, `tracing` at debug)
    /// but never refuse, to roll a limit out safely. A request that would have been
    /// refused reaches the service with its would-be decision in the headers.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Puts a [`RateLimitInfo`](crate::RateLimitInfo) (the decision and its policy) in the extensions of every
    /// request that passes, for handlers to read (axum: `Extension<RateLimitInfo>`).
    /// Off by default: it costs one allocation per request.
    pub fn expose_decision(mut self, expose: bool) -> Self {
        self.expose_decision = expose;
        self
    }

    /// Chooses the rate-limit headers (default: [`RateLimitHeaders::Both`]).
    pub fn headers(mut self, headers: RateLimitHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// Answers refused requests with `f` instead of
    /// [`Rejection::default_response`]. The layer still adds the rate-limit headers and
    /// `Retry-After`.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode};
    /// use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(key::Global, MemoryStore::new(), Quota::per_second(10))
    ///     .on_rejection(|_| {
    ///         let mut response = Response::new(Bytes::from_static(b"slow down"));
    ///         *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    ///         response
    ///     });
    /// ```
    pub fn on_rejection<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.on_rejection = Some(Arc::new(f));
        self
    }
}

impl<K: KeyExtractor + Clone, S: Clone> Clone for RateLimitLayer<K, S> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            limiter: self.limiter.clone(),
            weigher: Arc::clone(&self.weigher),
            headers: self.headers,
            on_rejection: self.on_rejection.clone(),
            skip: self.skip.clone(),
            resolve: self.resolve.clone(),
            refund_if: self.refund_if.clone(),
            shadow: self.shadow,
            expose_decision: self.expose_decision,
        }
    }
}

impl<Svc, K, S> Layer<Svc> for RateLimitLayer<K, S>
where
    K: KeyExtractor + Clone,
    S: Store<K::Key>,
{
    type Service = RateLimit<Svc, K, S>;

    fn layer(&self, inner: Svc) -> Self::Service {
        RateLimit::new(
            inner,
            Arc::new(Shared {
                key: self.key.clone(),
                headers: HeaderWriter::new(self.headers, self.limiter.policies()),
                limiter: self.limiter.clone(),
                weigher: Arc::clone(&self.weigher),
                on_rejection: self.on_rejection.clone(),
                skip: self.skip.clone(),
                resolve: self.resolve.clone(),
                refund_if: self.refund_if.clone(),
                shadow: self.shadow,
                expose_decision: self.expose_decision,
                refusal: std::sync::OnceLock::new(),
                key_errors: Throttle::new(Duration::from_secs(10)),
            }),
        )
    }
}

impl<K: KeyExtractor + fmt::Debug, S: fmt::Debug> fmt::Debug for RateLimitLayer<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("key", &self.key)
            .field("limiter", &self.limiter)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}
