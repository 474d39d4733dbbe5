//! Where rate-limit state lives: the [`Store`] trait and its implementations.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisDecision, RedisKey, RedisStore, RedisStoreBuilder};
pub use memory::MemoryStore;

use crate::{Decisions, Policies};

/// Decides, atomically for one key, whether a request of some cost passes its policies.
///
/// The future is an associated type so the layer's response future is not boxed. An
/// in-process store decides inside [`decide`](Store::decide) and returns
/// [`std::future::Ready`]; the layer then acts at once, without cloning the inner service.
/// Clones must share state.
pub trait Store<K>: Clone + Send + Sync + 'static {
    /// The pending decision.
    type Future: Future<Output = Result<Decisions, StoreError>> + Send + Unpin + 'static;

    /// Decides a request of `cost` for `key` under every policy of `policies`: it passes
    /// only if all let it through, and only then is it charged under each, in one atomic
    /// step. A cost of 0 reports the key's state without charging anything.
    fn decide(&self, key: &K, cost: u64, policies: &Policies) -> Self::Future;
}

/// A store could not decide (unreachable, timed out, ...). What the layer does then is
/// the store's failure policy; the in-process store never fails.
#[derive(Debug)]
pub struct StoreError {
    message: String,
}

impl StoreError {
    /// An error with a human-readable reason.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store failed: {}", self.message)
    }
}

impl std::error::Error for StoreError {}
