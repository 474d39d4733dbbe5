//! [`Limiter`]: the rate limiter itself, free of HTTP: a store, its policies, what to do
//! when the store fails, and who watches.

mod quotas;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::observe::{DecisionEvent, DecisionSource, OnDecision};
use crate::store::{Change, MemoryStore, QuotaBoard, Store, StoreError, StoreErrorKind, MAX_BLOCK};
use crate::throttle::Throttle;
use crate::{Algorithm, Decisions, FailurePolicy, Outcome, Policies, Policy, PolicyError, Quota};

pub use self::quotas::QuotaChangeError;

/// Keyed rate limiting over a [`Store`]: checks, looks, and the management of a key's
/// state (reset, refund, penalize, block), usable anywhere: logins, WebSocket messages,
/// background jobs, outgoing calls. The HTTP layer ([`RateLimitLayer`](crate::RateLimitLayer))
/// is an adapter over one.
///
/// A clone is a reference-count increment, and clones share state. Every operation is
/// atomic in every store: one compare-and-swap (or a short key lock) in process, one
/// script call on Redis.
///
/// ```
/// use tower_ratelimit::{store::MemoryStore, Limiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_ratelimit::store::StoreError> {
/// // Five login attempts, then one more every minute.
/// let logins = Limiter::new(MemoryStore::new(), Quota::per_minute(1).burst(5));
/// for _ in 0..5 {
///     assert!(logins.check(&"alice").await?.is_allowed());
/// }
/// let refused = logins.check(&"alice").await?;
/// assert!(!refused.is_allowed());
/// // A successful login starts her afresh.
/// logins.reset(&"alice").await?;
/// assert_eq!(logins.peek(&"alice").await?[0].remaining, 5);
/// # Ok(()) }
/// ```
///
/// # When the store fails
///
/// With [`FailurePolicy::FallbackLocal`] (the default), checks are decided by an
/// in-process store meanwhile and never fail. With [`Open`](FailurePolicy::Open) or
/// [`Closed`](FailurePolicy::Closed) a check answers the [`StoreError`], and the caller
/// lets the request through or refuses it as that policy says (the HTTP layer does).
/// Management operations (reset, refund, penalize, block) apply to the fallback store as
/// well, and answer the store's error if it fails.
pub struct Limiter<K, S> {
    inner: Arc<Inner<K, S>>,
}

struct Inner<K, S> {
    config: Config<K, S>,
    /// The policies the fallback enforces last asked for, for a count of app servers, and
    /// the policies they stand in for.
    fallback_policies: std::sync::Mutex<(u64, Policies, Policies)>,
    /// The store's quotas changed at run time, if it shares any.
    quotas: Option<QuotaBoard>,
    /// `config.policies` under those changes (`None`: unchanged), at a board version.
    changed: std::sync::RwLock<Option<(u64, Option<Policies>)>>,
    /// Store failures are logged at most once per interval, per limiter.
    warnings: Throttle,
    #[cfg(feature = "metrics")]
    metrics: std::sync::OnceLock<crate::observe::Metrics>,
}

/// Everything a limiter is built from.
struct Config<K, S> {
    store: S,
    policies: Policies,
    on_store_error: FailurePolicy,
    fallback: Fallback,
    /// The in-process store deciding while `store` fails.
    fallback_store: MemoryStore<K>,
    on_decision: Option<OnDecision<K>>,
}

impl<K, S: Clone> Clone for Config<K, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            policies: self.policies.clone(),
            on_store_error: self.on_store_error,
            fallback: self.fallback.clone(),
            fallback_store: self.fallback_store.clone(),
            on_decision: self.on_decision.clone(),
        }
    }
}

/// What the fallback enforces.
#[derive(Clone, Debug)]
enum Fallback {
    /// Every policy, with its limit and burst divided by the number of app servers the
    /// store counts ([`Store::instances`]; 1 if it counts none).
    Live,
    /// Every policy, with its limit and burst divided by this share (at least 1).
    Share(u64),
    /// These policies.
    Policies(Policies),
}

impl Fallback {
    /// The policies enforced in place of `policies`, with `live` app servers counted.
    fn policies(&self, policies: &Policies, live: u64) -> Policies {
        let share = match self {
            Self::Live => live,
            Self::Share(share) => *share,
            Self::Policies(policies) => return policies.clone(),
        };
        match share {
            0 | 1 => policies.clone(),
            share => scaled(policies, share),
        }
    }
}

/// `policies` with each limit and burst divided by `share`, rounded up to at least 1.
fn scaled(policies: &Policies, share: u64) -> Policies {
    let part = |n: u64| n.div_ceil(share).max(1);
    Policies::new(policies.iter().map(|policy| {
        let quota = policy.quota();
        let limit = part(quota.limit());
        let scaled = match quota.period() {
            Some(period) => Quota::new(limit, period),
            None => Quota::fixed(limit),
        };
        let scaled = scaled.burst(part(quota.burst_size()));
        Policy::new(policy.name(), scaled, policy.algorithm()).unwrap_or_else(|_| policy.clone())
    }))
    .map_or_else(|_| policies.clone(), |scaled| scaled.scoped_like(policies))
}

/// Settings for a [`Limiter`]; made by [`Limiter::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct LimiterBuilder<K, S> {
    config: Config<K, S>,
}

impl<K, S> Limiter<K, S>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    S: Store<K>,
{
    /// A limiter of `quota` (token bucket, policy name `"default"`) over `store`.
    ///
    /// # Panics
    ///
    /// If the quota is invalid or the store cannot enforce it; use
    /// [`builder`](Self::builder) to handle that as an error.
    pub fn new(store: S, quota: Quota) -> Self {
        let policy = Policy::new("default", quota, Algorithm::default())
            .unwrap_or_else(|e| panic!("invalid quota: {e}"));
        Self::builder(store, policy)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Settings for a limiter of `policies` (one [`Policy`], or several that every
    /// request must pass) over `store`.
    pub fn builder(store: S, policies: impl Into<Policies>) -> LimiterBuilder<K, S> {
        LimiterBuilder {
            config: Config {
                store,
                policies: policies.into(),
                on_store_error: FailurePolicy::default(),
                fallback: Fallback::Live,
                fallback_store: MemoryStore::new(),
                on_decision: None,
            },
        }
    }

    /// Checks a request of cost 1; see [`check_n`](Self::check_n).
    pub fn check(&self, key: &K) -> Check<K, S> {
        self.check_n(key, 1)
    }

    /// Checks a request of `cost`: it passes only if every policy lets it through, and
    /// is then charged under each. [`Decisions::is_allowed`] tells; a refusal says when
    /// to retry ([`Outcome::Denied`]) or that the cost exceeds a burst and never passes
    /// ([`Outcome::CostExceedsBurst`]).
    pub fn check_n(&self, key: &K, cost: u64) -> Check<K, S> {
        self.check_under(key, cost, None)
    }

    /// Like [`check_n`](Self::check_n), under other policies than the limiter's (a tier
    /// picked per key), with their own state.
    #[inline]
    pub fn check_under(&self, key: &K, cost: u64, policies: Option<&Policies>) -> Check<K, S> {
        let started = match policies {
            Some(policies) => self.start(key, cost, policies),
            None => match self.changed_policies() {
                Some(changed) => self.start(key, cost, &changed),
                None => self.start(key, cost, &self.inner.config.policies),
            },
        };
        match started {
            Ok(decided) => Check(CheckState::Done(Some(decided))),
            Err(pending) => pending.into(),
        }
    }

    /// Starts a check under exactly these policies: its answer if the store gave it at
    /// once (an in-process store always does), or the check to await. The pending check
    /// is boxed, so the answer given at once keeps its place (no copy to shift it).
    #[inline]
    pub(crate) fn start(
        &self,
        key: &K,
        cost: u64,
        policies: &Policies,
    ) -> Result<Result<Decisions, StoreError>, PendingCheck<K, S>> {
        let inner = &self.inner;
        let started = self.observed().then(Instant::now);
        let store = &inner.config.store;
        if let Some(decided) = store.apply_now(key, Change::Charge(cost), policies) {
            let decided = match (decided, started) {
                // Decided, and nobody watches: nothing to settle (nor to trace: an
                // observer or a failure is traced in `settle`).
                (Ok(decisions), None) => Ok(decisions),
                (decided, _) => self.settle(decided, key, cost, policies, started),
            };
            return Ok(decided);
        }
        let mut future = store.apply(key, Change::Charge(cost), policies);
        match Pin::new(&mut future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(decided) => Ok(self.settle(decided, key, cost, policies, started)),
            Poll::Pending => Err(PendingCheck(Box::new(Pending {
                future,
                key: key.clone(),
                cost,
                policies: policies.clone(),
                started,
                limiter: self.clone(),
            }))),
        }
    }

    /// Like [`start`](Self::start), for a caller that reads no decision of a request
    /// passing at once: `None` for such a request, unless an observer watches.
    #[inline(always)]
    pub(crate) fn start_unreported(
        &self,
        key: &K,
        cost: u64,
        policies: &Policies,
    ) -> Option<Result<Result<Decisions, StoreError>, PendingCheck<K, S>>> {
        if self.observed() {
            return Some(self.start(key, cost, policies));
        }
        match self.inner.config.store.charge_now(key, cost, policies) {
            Some(Ok(decisions)) => decisions.map(|decisions| Ok(Ok(decisions))),
            Some(Err(error)) => Some(Ok(self.settle(Err(error), key, cost, policies, None))),
            None => Some(self.start(key, cost, policies)),
        }
    }

    /// The key's state, without charging anything.
    pub fn peek(&self, key: &K) -> Check<K, S> {
        self.manage(key, Change::Charge(0))
    }

    /// Forgets the key under every policy and lifts its block: its next request finds a
    /// full bucket. A no-op for an unknown key.
    pub fn reset(&self, key: &K) -> Check<K, S> {
        self.manage(key, Change::Reset)
    }

    /// Gives back up to `units` the key spent: never above a full bucket, and for the
    /// windows only within the current window. A no-op for an unknown key.
    pub fn refund(&self, key: &K, units: u64) -> Check<K, S> {
        self.manage(key, Change::Refund(units))
    }

    /// Charges `units` whatever is left: a token bucket goes into debt, so the key's next
    /// admission moves further out (by at most 100 years); a window fills up to its burst.
    pub fn penalize(&self, key: &K, units: u64) -> Check<K, S> {
        self.manage(key, Change::Penalize(units))
    }

    /// Denies the key, under every policy, for `duration` from now; a shorter block than
    /// one in force changes nothing, and [`reset`](Self::reset) lifts it. A duration over
    /// 100 years ([`MAX_BLOCK`]) is an [`InvalidChange`](StoreErrorKind::InvalidChange).
    pub fn block(&self, key: &K, duration: Duration) -> Check<K, S> {
        if duration > MAX_BLOCK {
            let error = StoreError::new(
                StoreErrorKind::InvalidChange,
                format!("a block lasts at most 100 years, not {duration:?}"),
            );
            return Check(CheckState::Done(Some(Err(error))));
        }
        self.manage(key, Change::Block(duration))
    }

    /// Waits until a request of cost 1 passes; see [`until_ready_n`](Self::until_ready_n).
    pub async fn until_ready(&self, key: &K, max_wait: Duration) -> Result<Decisions, WaitError> {
        self.until_ready_n(key, 1, max_wait).await
    }

    /// Waits until a request of `cost` passes, and charges it: for pacing jobs or calls.
    /// Fails at once, without waiting, when it could not pass within `max_wait` (or
    /// never), and with the store's error if the store fails.
    pub async fn until_ready_n(
        &self,
        key: &K,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Decisions, WaitError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let decisions = self.check_n(key, cost).await.map_err(WaitError::Store)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match decisions.summary().outcome {
                Outcome::Allowed => return Ok(decisions),
                Outcome::Delayed { wait } => {
                    // The slot is reserved: waiting for it is the request's part.
                    tokio::time::sleep(wait).await;
                    return Ok(decisions);
                }
                Outcome::Denied {
                    retry_after: Some(wait),
                } if wait <= left => tokio::time::sleep(wait).await,
                _ => return Err(WaitError::TooLong(decisions)),
            }
        }
    }

    /// The policies the limiter was built with. Checks are decided under them (unless
    /// [checked under others](Self::check_under)) with the quotas [changed at run
    /// time](Self::set_quota): see [`current_policies`](Self::current_policies).
    pub fn policies(&self) -> &Policies {
        &self.inner.config.policies
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.config.store
    }

    /// What a check does when the store fails.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.config.on_store_error
    }

    /// The same limiter, with its settings changed by `f`: it shares the store and the
    /// fallback store with `self`.
    pub(crate) fn reconfigure(
        self,
        f: impl FnOnce(LimiterBuilder<K, S>) -> LimiterBuilder<K, S>,
    ) -> Result<Self, PolicyError> {
        let builder = LimiterBuilder {
            config: self.inner.config.clone(),
        };
        f(builder).build()
    }

    /// Like [`refund`](Self::refund), under other policies than the limiter's (those a
    /// request was [checked under](Self::check_under)).
    pub fn refund_under(&self, key: &K, units: u64, policies: Option<&Policies>) -> Check<K, S> {
        self.manage_under(key, Change::Refund(units), policies)
    }

    fn manage(&self, key: &K, change: Change) -> Check<K, S> {
        self.manage_under(key, change, None)
    }

    /// A management change, applied to the fallback store too.
    fn manage_under(&self, key: &K, change: Change, policies: Option<&Policies>) -> Check<K, S> {
        let inner = &*self.inner;
        let changed = policies.map_or_else(|| self.changed_policies(), |_| None);
        let policies = policies
            .or(changed.as_ref())
            .unwrap_or(&inner.config.policies);
        if change != Change::Charge(0) {
            let fallback = self.fallback_for(policies);
            inner
                .config
                .fallback_store
                .decide_now(key, change, &fallback);
        }
        let future = inner.config.store.apply(key, change, policies);
        Check(CheckState::Store(future))
    }

    /// The policies the fallback enforces in place of `policies`, for the app servers the
    /// store counts now (kept for the policies last asked for and the last count).
    fn fallback_for(&self, policies: &Policies) -> Policies {
        let inner = &*self.inner;
        let config = &inner.config;
        let live = config.store.instances().unwrap_or(1);
        let mut cached = inner
            .fallback_policies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cached.0 != live || cached.1 != *policies {
            let fallback = config.fallback.policies(policies, live);
            *cached = (live, policies.clone(), fallback);
        }
        cached.2.clone()
    }

    /// Whether anyone reads the decision latency.
    fn observed(&self) -> bool {
        self.inner.config.on_decision.is_some() || cfg!(feature = "metrics")
    }

    /// The store's decisions or, when it failed, what the failure policy makes of that;
    /// observed.
    fn settle(
        &self,
        decided: Result<Decisions, StoreError>,
        key: &K,
        cost: u64,
        policies: &Policies,
        started: Option<Instant>,
    ) -> Result<Decisions, StoreError> {
        let inner = &*self.inner;
        let decided = match decided {
            // Decided, and nobody watches: nothing to settle.
            Ok(decisions) if started.is_none() => return Ok(decisions),
            decided => decided,
        };
        let (decisions, error, source) = match decided {
            Ok(decisions) => (Some(decisions), None, DecisionSource::Store),
            Err(error) => {
                if let Some(suppressed) = inner.warnings.allow() {
                    let policy = inner.config.on_store_error;
                    tracing::warn!(suppressed, ?policy, "{error}");
                }
                match inner.config.on_store_error {
                    FailurePolicy::FallbackLocal => {
                        let fallback = self.fallback_for(policies);
                        let change = Change::Charge(cost);
                        let store = &inner.config.fallback_store;
                        let decisions = store.decide_now(key, change, &fallback);
                        (Some(decisions), Some(error), DecisionSource::Fallback)
                    }
                    FailurePolicy::Open | FailurePolicy::Closed => {
                        (None, Some(error), DecisionSource::Unavailable)
                    }
                }
            }
        };
        tracing::trace!(cost, ?source, ?decisions, "rate-limit decision");
        if let Some(started) = started {
            let decision = decisions.as_ref().map(Decisions::summary);
            let event = DecisionEvent {
                key,
                cost,
                policy: &policies[decisions.as_ref().map_or(0, Decisions::decisive)],
                decision: decision.as_ref(),
                policies,
                decisions: decisions.as_ref(),
                source,
                error: error.as_ref(),
                latency: started.elapsed(),
            };
            #[cfg(feature = "metrics")]
            inner
                .metrics
                .get_or_init(|| crate::observe::Metrics::new(&inner.config.policies))
                .record(&event);
            if let Some(on_decision) = &inner.config.on_decision {
                on_decision(&event);
            }
        }
        match (decisions, error) {
            (Some(decisions), _) => Ok(decisions),
            (None, Some(error)) => Err(error),
            (None, None) => unreachable!("a decision or an error"),
        }
    }
}

impl<K, C> Limiter<K, MemoryStore<K, C>>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    C: crate::clock::Clock,
{
    /// [`check`](Self::check) without a future: the in-process store decides at once.
    pub fn check_now(&self, key: &K) -> Decisions {
        self.check_n_now(key, 1)
    }

    /// [`check_n`](Self::check_n) without a future: the in-process store decides at once,
    /// with no allocation for a known key.
    pub fn check_n_now(&self, key: &K, cost: u64) -> Decisions {
        let changed = self.changed_policies();
        let policies = changed.as_ref().unwrap_or(&self.inner.config.policies);
        let started = self.observed().then(Instant::now);
        let decided = self
            .inner
            .config
            .store
            .decide_now(key, Change::Charge(cost), policies);
        match self.settle(Ok(decided), key, cost, policies, started) {
            Ok(decisions) => decisions,
            Err(_) => unreachable!("the in-process store never fails"),
        }
    }
}

impl<K, S> LimiterBuilder<K, S>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    S: Store<K>,
{
    /// What a check does when the store fails (default:
    /// [`FailurePolicy::FallbackLocal`]).
    pub fn on_store_error(mut self, policy: FailurePolicy) -> Self {
        self.config.on_store_error = policy;
        self
    }

    /// While the store fails, the in-process fallback enforces each policy with its limit
    /// and burst divided by `share` (rounded up). By default the share is the number of
    /// app servers the store counts ([`Store::instances`]: a `RedisStore` counts the live
    /// ones sharing its prefix; 1 where none are counted), so `N` servers' fallbacks
    /// together admit about one quota, not `N`.
    pub fn fallback_share(mut self, share: u64) -> Self {
        self.config.fallback = Fallback::Share(share.max(1));
        self
    }

    /// While the store fails, the in-process fallback enforces these policies instead of
    /// the limiter's.
    pub fn fallback_policy(mut self, policies: impl Into<Policies>) -> Self {
        self.config.fallback = Fallback::Policies(policies.into());
        self
    }

    /// Calls `f` with every check: key, cost, decision, who decided and how long it took.
    /// It runs on the request path, so keep it quick.
    pub fn on_decision<F>(mut self, f: F) -> Self
    where
        F: Fn(&DecisionEvent<'_, K>) + Send + Sync + 'static,
    {
        self.config.on_decision = Some(Arc::new(f));
        self
    }

    /// Counts keys of one kind: state in `namespace` never meets state in another (see
    /// [`Policies::in_namespace`]). The layer's constructors name it after their key
    /// extractor.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.config.policies = self.config.policies.in_namespace(namespace);
        self
    }

    /// The policies every check is decided under.
    pub(crate) fn policies(mut self, policies: Policies) -> Self {
        self.config.policies = policies;
        self
    }

    /// The limiter, once the store has confirmed it can enforce every policy exactly.
    pub fn build(self) -> Result<Limiter<K, S>, PolicyError> {
        let config = self.config;
        let unsupported = PolicyError::Unsupported;
        config
            .store
            .supports(&config.policies)
            .map_err(unsupported)?;
        let fallback = config.fallback.policies(&config.policies, 1);
        let fallback_policies = (1, config.policies.clone(), fallback);
        Ok(Limiter {
            inner: Arc::new(Inner {
                fallback_policies: std::sync::Mutex::new(fallback_policies),
                quotas: config.store.quotas().cloned(),
                changed: std::sync::RwLock::new(None),
                config,
                warnings: Throttle::new(Duration::from_secs(10)),
                #[cfg(feature = "metrics")]
                metrics: std::sync::OnceLock::new(),
            }),
        })
    }
}

impl<K, S> Clone for Limiter<K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, S: fmt::Debug> fmt::Debug for Limiter<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("Limiter")
            .field("store", &config.store)
            .field("policies", &config.policies)
            .field("on_store_error", &config.on_store_error)
            .field("fallback", &config.fallback)
            .finish_non_exhaustive()
    }
}

/// Why [`Limiter::until_ready`] gave up.
#[derive(Debug)]
#[non_exhaustive]
pub enum WaitError {
    /// The request could not pass within the longest wait, or never (a cost above a
    /// burst, a spent fixed quota): the decisions say when, if ever.
    TooLong(Decisions),
    /// The store failed.
    Store(StoreError),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(decisions) => match decisions.summary().outcome {
                Outcome::Denied {
                    retry_after: Some(wait),
                } => write!(f, "the request would pass only in {wait:?}"),
                _ => f.write_str("the request can never pass"),
            },
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TooLong(_) => None,
            Self::Store(error) => Some(error),
        }
    }
}

/// A [`Limiter`] operation under way: ready at once for an in-process store.
#[must_use = "futures do nothing unless polled"]
pub struct Check<K, S: Store<K>>(CheckState<K, S>);

enum CheckState<K, S: Store<K>> {
    Done(Option<Result<Decisions, StoreError>>),
    /// A management change: the store's answer as it is.
    Store(S::Future),
    /// A check waiting for the store, to be settled and observed when it answers.
    Pending(Box<Pending<K, S>>),
}

/// A check waiting for the store; awaited as a [`Check`].
pub(crate) struct PendingCheck<K, S: Store<K>>(Box<Pending<K, S>>);

impl<K, S: Store<K>> From<PendingCheck<K, S>> for Check<K, S> {
    fn from(pending: PendingCheck<K, S>) -> Self {
        Check(CheckState::Pending(pending.0))
    }
}

struct Pending<K, S: Store<K>> {
    future: S::Future,
    key: K,
    cost: u64,
    policies: Policies,
    started: Option<Instant>,
    limiter: Limiter<K, S>,
}

impl<K, S> Future for Check<K, S>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    S: Store<K>,
{
    type Output = Result<Decisions, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            CheckState::Done(done) => {
                Poll::Ready(done.take().expect("Check polled after completion"))
            }
            CheckState::Store(future) => Pin::new(future).poll(cx),
            CheckState::Pending(pending) => {
                let decided = std::task::ready!(Pin::new(&mut pending.future).poll(cx));
                let Pending {
                    key,
                    cost,
                    policies,
                    started,
                    limiter,
                    ..
                } = &**pending;
                Poll::Ready(limiter.settle(decided, key, *cost, policies, *started))
            }
        }
    }
}

impl<K, S: Store<K>> fmt::Debug for Check<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            CheckState::Done(_) => "Check::Done",
            CheckState::Store(_) => "Check::Store",
            CheckState::Pending(_) => "Check::Pending",
        })
    }
}
