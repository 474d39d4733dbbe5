//! Where rate-limit state lives: the [`Store`] trait and its implementations.
//!
//! # State identity
//!
//! Every store keeps one state per **key and policy**, identified by the key and the
//! policy's [identity](crate::Policy::fingerprint): its name and algorithm (for the
//! windows, their period too, since their windows are laid out by it). A policy whose
//! quota changes keeps its state, so there is no free refill on a deploy: a bucket
//! inherits its debt (`TAT − now`, as time: a bucket emptied under the old quota is empty
//! under the new one), a window the counts of its current window (a count above a lowered
//! burst denies until the window ends). An inherited debt is not cut to a lowered burst,
//! since debt beyond the burst is also what [`Change::Penalize`] leaves, and the store
//! cannot tell the two apart: a client that spent an old, larger burst waits at most the
//! difference once. The same policy used alone and in a set, or in two sets, is one
//! state. Besides its policies' states, a key may be **blocked** until some
//! time: a block denies every policy of the key.
//!
//! # Quotas changed at run time
//!
//! A store may also keep a [`QuotaBoard`]: quotas changed while the program runs
//! ([`Limiter::set_quota`](crate::Limiter::set_quota)), by state identity, which every
//! limiter over the store's state follows: on a [`MemoryStore`], every limiter over that
//! store; on a `RedisStore`, every app server sharing its prefix. Since the identity
//! stays, so does the state: the new quota inherits what was spent, as above.

mod memory;
mod quotas;
#[cfg(feature = "redis")]
mod redis;
mod words;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use self::redis::Pem;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisDecision, RedisKey, RedisStore, RedisStoreBuilder};
pub use memory::MemoryStore;
pub use quotas::{QuotaBoard, QuotaChange};
pub use words::{apply_words, blocked, EMPTY};

use crate::{Decisions, Policies, Quota};

/// What a store call does to a key, atomically under every policy of a set.
///
/// Every change answers the key's [`Decisions`] after it: for [`Charge`](Change::Charge),
/// the verdict on the request; for the others, the state as a look
/// ([`Charge(0)`](Change::Charge)) would report it. On a key the store does not know, every
/// change but `Charge` and `Block` is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A request of this cost: it passes only if every policy lets it through, and only
    /// then is it charged under each. A cost of 0 looks without charging.
    Charge(u64),
    /// Forget the key, under every policy, and lift its block: as if never seen.
    Reset,
    /// Give back up to this many units: never above a full bucket, and for the windows
    /// only within the current window.
    Refund(u64),
    /// Charge this many units whatever is left: a token bucket goes into debt (the next
    /// admission moves further out, by at most 100 years); a window fills up to its burst.
    Penalize(u64),
    /// Deny the key, under every policy, for this long from now (at most 100 years). A
    /// shorter block than one already in force changes nothing.
    Block(Duration),
}

/// The longest a [`Change::Block`] may last, and a debt may reach: 100 years.
pub use crate::algorithm::MAX_BLOCK;

/// Decides and changes, atomically for one key, its state under a set of policies.
///
/// The future is an associated type so the layer's response future is not boxed. An
/// in-process store decides inside [`apply`](Store::apply) and returns
/// [`std::future::Ready`]; the layer then acts at once, without cloning the inner service.
/// Clones must share state. See the [module docs](self) for how state is identified.
pub trait Store<K>: Clone + Send + Sync + 'static {
    /// The pending answer.
    type Future: Future<Output = Result<Decisions, StoreError>> + Send + Unpin + 'static;

    /// Applies `change` to `key` under every policy of `policies`, in one atomic step.
    fn apply(&self, key: &K, change: Change, policies: &Policies) -> Self::Future;

    /// What [`apply`](Store::apply) answers, without a future, for a store that decides
    /// in process (`None`, the default, for one that does not).
    fn apply_now(
        &self,
        key: &K,
        change: Change,
        policies: &Policies,
    ) -> Option<Result<Decisions, StoreError>> {
        let _ = (key, change, policies);
        None
    }

    /// A [`Charge`](Change::Charge) of `cost` as [`apply_now`](Store::apply_now) answers
    /// it, for a caller that reads no decision of a request passing at once (a layer
    /// writing no rate-limit headers): `Some(Ok(None))` for such a request, whose quota
    /// left need not be computed. The default asks `apply_now`.
    fn charge_now(
        &self,
        key: &K,
        cost: u64,
        policies: &Policies,
    ) -> Option<Result<Option<Decisions>, StoreError>> {
        let decided = self.apply_now(key, Change::Charge(cost), policies)?;
        Some(decided.map(Decisions::unless_at_once))
    }

    /// How many app servers share this store's state, as last seen (`None` if unknown,
    /// as for an in-process store). While the store fails, a limiter's fallback enforces
    /// this share of each quota unless one is set by hand.
    fn instances(&self) -> Option<u64> {
        None
    }

    /// Checks, before any request, that the store can enforce `policies` exactly (a
    /// [`Misconfigured`](StoreErrorKind::Misconfigured) error otherwise). Called when a
    /// [`Limiter`](crate::Limiter) is built.
    fn supports(&self, policies: &Policies) -> Result<(), StoreError> {
        let _ = policies;
        Ok(())
    }

    /// The quotas changed at run time for policies with state here, as this store shares
    /// them with every limiter over its state (`None`, the default, for a store that
    /// shares none: its limiters refuse [`Limiter::set_quota`](crate::Limiter::set_quota)).
    /// Limiters read it before each decision: while the board holds no change, that is one
    /// relaxed load.
    fn quotas(&self) -> Option<&QuotaBoard> {
        None
    }

    /// Changes the quota of policy `index` of `policies` (`None`: back to each limiter's
    /// own) for every limiter sharing this store's state, on every app server: it lands
    /// on the [board](Store::quotas) here at once and on the others' as soon as they hear
    /// of it. The state stays (see [the state identity](self#state-identity)). The
    /// default refuses with [`Misconfigured`](StoreErrorKind::Misconfigured).
    fn change_quota(&self, policies: &Policies, index: usize, quota: Option<Quota>) -> QuotaChange {
        let _ = (policies, index, quota);
        Box::pin(std::future::ready(Err(StoreError::new(
            StoreErrorKind::Misconfigured,
            "this store does not share quota changes",
        ))))
    }
}

/// A store could not decide. What the limiter does then is its
/// [`FailurePolicy`](crate::FailurePolicy); the in-process store never fails. Cheap to
/// clone: every change of a failed batch gets the batch's error.
#[derive(Clone, Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

/// Why a store could not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// No answer within the deadline.
    Timeout,
    /// The circuit breaker is open after repeated failures.
    CircuitOpen,
    /// Too many calls under way.
    Overloaded,
    /// The store cannot be reached, or failed.
    Unavailable,
    /// The store cannot enforce a policy (found when a limiter is built), or answered
    /// something it should not.
    Misconfigured,
    /// The change asked for is out of bounds (a block over 100 years).
    InvalidChange,
    /// The store is out of memory (Redis answered `OOM`: `maxmemory` reached under
    /// `noeviction`).
    OutOfMemory,
    /// A Redis Cluster refused the call without running it: `CLUSTERDOWN`, the key's slot
    /// is not served (a master is down and not yet replaced).
    ClusterDown,
    /// A Redis Cluster refused the call without running it: `TRYAGAIN`, the key's Redis
    /// keys are split between two masters by a resharding under way.
    Resharding,
}

impl StoreErrorKind {
    /// Every kind, in their declaration order.
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [Self; 9] = [
        Self::Timeout,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::Unavailable,
        Self::Misconfigured,
        Self::InvalidChange,
        Self::OutOfMemory,
        Self::ClusterDown,
        Self::Resharding,
    ];

    /// A label for logs and metrics: `timeout`, `circuit_open`, `overloaded`,
    /// `unavailable`, `misconfigured`, `invalid_change`, `out_of_memory`, `cluster_down` or
    /// `resharding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::CircuitOpen => "circuit_open",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Misconfigured => "misconfigured",
            Self::InvalidChange => "invalid_change",
            Self::OutOfMemory => "out_of_memory",
            Self::ClusterDown => "cluster_down",
            Self::Resharding => "resharding",
        }
    }
}

impl StoreError {
    /// An error of `kind` with a human-readable reason.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Why the store could not decide.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store failed: {}", self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn Error + 'static))
    }
}
