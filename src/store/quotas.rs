//! [`QuotaBoard`]: the quotas changed at run time, as every limiter over one store sees them.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use crate::{Policies, Policy, Quota};

/// What [`Store::change_quota`](super::Store::change_quota) answers: done once every app
/// server sharing the store can read the change.
pub type QuotaChange = Pin<Box<dyn Future<Output = Result<(), super::StoreError>> + Send>>;

/// The quotas changed at run time ([`Limiter::set_quota`](crate::Limiter::set_quota)) for
/// policies with state in one store, by [state identity](crate::Policies::state_id). Every
/// limiter over the store reads it before deciding; a store shared by app servers keeps it
/// up to date with what the others change. Clones share one board.
///
/// ```
/// use tower_ratelimit::store::QuotaBoard;
/// use tower_ratelimit::Quota;
///
/// let board = QuotaBoard::new();
/// assert!(board.set(7, Some(Quota::per_second(5).burst(10))));
/// assert_eq!(board.get(7), Some(Quota::per_second(5).burst(10)));
/// assert!(board.set(7, None));
/// assert_eq!(board.get(7), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct QuotaBoard(Arc<Board>);

#[derive(Debug, Default)]
struct Board {
    /// Whether any quota is changed: all a check reads while none is.
    any: AtomicBool,
    /// Counts the changes, so limiters know when to read the quotas again.
    version: AtomicU64,
    quotas: RwLock<HashMap<u64, Quota>>,
}

impl QuotaBoard {
    /// A board with no change.
    pub fn new() -> Self {
        Self::default()
    }

    /// The quota in force for the state `id`, if it was changed.
    pub fn get(&self, id: u64) -> Option<Quota> {
        self.read(|quotas| quotas.get(&id).copied())
    }

    /// Changes the quota of state `id` (`None`: back to each limiter's own); whether that
    /// changed anything.
    pub fn set(&self, id: u64, quota: Option<Quota>) -> bool {
        self.write(|quotas| match quota {
            Some(quota) => quotas.insert(id, quota) != Some(quota),
            None => quotas.remove(&id).is_some(),
        })
    }

    /// Replaces every change at once (for a store that read its shared copy again);
    /// whether that changed anything.
    pub fn replace(&self, changes: HashMap<u64, Quota>) -> bool {
        self.write(|quotas| {
            let changed = *quotas != changes;
            *quotas = changes;
            changed
        })
    }

    /// Whether any quota is changed: one relaxed load.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.0.any.load(Relaxed)
    }

    /// `policies` under the changes (`None` if none of them is changed), and the version
    /// of the board they were read at.
    pub(crate) fn apply(&self, policies: &Policies) -> (u64, Option<Policies>) {
        let quotas = self.0.quotas.read().unwrap_or_else(|e| e.into_inner());
        let version = self.0.version.load(Relaxed);
        let changed: Vec<Option<Policy>> = (0..policies.len())
            .map(|index| {
                let policy = &policies[index];
                let quota = quotas.get(&policies.state_id(index))?;
                // Checked when it was set; one that fails here (written by another version
                // of the program) leaves the limiter's own quota.
                Policy::new(policy.name(), *quota, policy.algorithm()).ok()
            })
            .collect();
        if changed.iter().all(Option::is_none) {
            return (version, None);
        }
        let list = changed
            .into_iter()
            .zip(policies.iter())
            .map(|(changed, own)| changed.unwrap_or_else(|| own.clone()));
        let changed = Policies::new(list).map(|changed| changed.scoped_like(policies));
        (version, changed.ok())
    }

    /// The board's version: it moves with every change.
    pub(crate) fn version(&self) -> u64 {
        self.0.version.load(Relaxed)
    }

    fn read<R>(&self, f: impl FnOnce(&HashMap<u64, Quota>) -> R) -> R {
        f(&self.0.quotas.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, f: impl FnOnce(&mut HashMap<u64, Quota>) -> bool) -> bool {
        let board = &*self.0;
        let mut quotas = board.quotas.write().unwrap_or_else(|e| e.into_inner());
        let changed = f(&mut quotas);
        if changed {
            board.version.fetch_add(1, Relaxed);
            board.any.store(!quotas.is_empty(), Relaxed);
        }
        changed
    }
}
