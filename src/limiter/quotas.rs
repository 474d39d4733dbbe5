//! Quotas changed at run time: [`Limiter::set_quota`], and the policies checks are decided
//! under meanwhile.

use std::fmt;

use super::Limiter;
use crate::store::{QuotaBoard, Store, StoreError};
use crate::{Policies, Policy, PolicyError, Quota};

impl<K, S> Limiter<K, S>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    S: Store<K>,
{
    /// Changes the quota of the policy named `name`, at run time, for every limiter over
    /// this store's state: on a [`MemoryStore`](crate::store::MemoryStore), every limiter
    /// over that store; on a `RedisStore`, every app server sharing its prefix (each
    /// follows within one pub/sub delivery). The state stays, so the new quota inherits
    /// what was spent (see [the state identity](crate::store#state-identity)): a bucket its
    /// debt, a window its counts. Answers the policy now in force.
    ///
    /// The policy keeps its identity: its algorithm, and for the windows their period
    /// (a new period would lay out new windows); a quota that would change it, an invalid
    /// quota, or one the store cannot enforce is refused and nothing changes.
    ///
    /// ```
    /// use tower_ratelimit::{store::MemoryStore, Limiter, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_ratelimit::QuotaChangeError> {
    /// let store = MemoryStore::new();
    /// let limiter = Limiter::new(store.clone(), Quota::per_minute(1).burst(2));
    /// let other = Limiter::new(store, Quota::per_minute(1).burst(2));
    /// assert!(limiter.check_n_now(&"alice", 2).is_allowed());
    /// // Four at once from now on, for both: alice has spent two of them.
    /// limiter.set_quota("default", Quota::per_minute(1).burst(4)).await?;
    /// assert_eq!(other.peek(&"alice").await.unwrap()[0].remaining, 2);
    /// # Ok(()) }
    /// ```
    pub async fn set_quota(&self, name: &str, quota: Quota) -> Result<Policy, QuotaChangeError> {
        let (index, own) = self.own_policy(name)?;
        let changed =
            Policy::new(name, quota, own.algorithm()).map_err(QuotaChangeError::Invalid)?;
        if changed.fingerprint() != own.fingerprint() {
            return Err(QuotaChangeError::Identity(name.to_owned()));
        }
        // Spelled out, so that every app server reads back the quota that was written.
        let quota = quota.burst(quota.burst_size());
        let policies = self.policies();
        self.inner
            .config
            .store
            .change_quota(policies, index, Some(quota))
            .await
            .map_err(QuotaChangeError::Store)?;
        tracing::info!(policy = name, ?quota, "rate-limit quota changed");
        Ok(changed)
    }

    /// Gives the policy named `name` back the quota each limiter was built with, for
    /// every limiter over this store's state (see [`set_quota`](Self::set_quota)). Answers
    /// this limiter's own policy.
    pub async fn restore_quota(&self, name: &str) -> Result<Policy, QuotaChangeError> {
        let (index, own) = self.own_policy(name)?;
        let policies = self.policies();
        let store = &self.inner.config.store;
        store
            .change_quota(policies, index, None)
            .await
            .map_err(QuotaChangeError::Store)?;
        tracing::info!(policy = name, "rate-limit quota restored");
        Ok(own.clone())
    }

    /// The policies checks are decided under now: the limiter's own, with the quotas
    /// [changed at run time](Self::set_quota).
    pub fn current_policies(&self) -> Policies {
        self.changed_policies()
            .unwrap_or_else(|| self.policies().clone())
    }

    /// The limiter's policy named `name`, and its index.
    fn own_policy(&self, name: &str) -> Result<(usize, &Policy), QuotaChangeError> {
        let policies = self.policies();
        let index = policies.iter().position(|policy| policy.name() == name);
        let index = index.ok_or_else(|| QuotaChangeError::UnknownPolicy(name.to_owned()))?;
        Ok((index, &policies[index]))
    }
}

impl<K, S> Limiter<K, S> {
    /// The limiter's policies under the quotas changed at run time, or `None` while none
    /// of them is: then a check pays one relaxed load here.
    #[inline]
    pub(crate) fn changed_policies(&self) -> Option<Policies> {
        match &self.inner.quotas {
            Some(board) if board.any() => self.changed_on(board),
            _ => None,
        }
    }

    #[cold]
    #[inline(never)]
    fn changed_on(&self, board: &QuotaBoard) -> Option<Policies> {
        let version = board.version();
        let lock = &self.inner.changed;
        if let Some((seen, changed)) = &*lock.read().unwrap_or_else(|e| e.into_inner()) {
            if *seen == version {
                return changed.clone();
            }
        }
        let (version, changed) = board.apply(&self.inner.config.policies);
        *lock.write().unwrap_or_else(|e| e.into_inner()) = Some((version, changed.clone()));
        changed
    }
}

/// Why [`Limiter::set_quota`] changed nothing.
#[derive(Debug)]
#[non_exhaustive]
pub enum QuotaChangeError {
    /// The limiter has no policy of this name.
    UnknownPolicy(String),
    /// The new quota is invalid, or the policy's algorithm cannot enforce it.
    Invalid(PolicyError),
    /// The new quota would change the policy's identity (and so start from a new state):
    /// a window's period, or a quota that refills turned fixed or back.
    Identity(String),
    /// The store refused the change (a quota it cannot enforce, a store that shares no
    /// quota changes) or failed.
    Store(StoreError),
}

impl fmt::Display for QuotaChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPolicy(name) => write!(f, "no policy is named {name:?}"),
            Self::Invalid(error) => error.fmt(f),
            Self::Identity(name) => write!(
                f,
                "policy {name:?} would count in a new state: its algorithm, a window's \
                 period and whether its quota refills stay as they are"
            ),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for QuotaChangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(error) => Some(error),
            Self::Store(error) => Some(error),
            _ => None,
        }
    }
}
