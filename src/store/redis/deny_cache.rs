//! [`DenyCache`]: answers, without a round trip, requests that Redis is known to deny.

use std::any::{Any, TypeId};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;

use crate::{Algorithm, Decision, Outcome, Quota};

/// The least time between two sweeps of a full cache.
const SWEEP_GAP: u64 = 100_000_000;

/// For each key (and policy) Redis has denied, a lower bound of its TAT in local
/// nanoseconds.
///
/// A TAT never moves back while it is ahead of the clock (a denial changes nothing, an
/// admission moves it forward), so a bound taken from one answer stays a bound. A request
/// is denied locally only when GCRA on that bound denies it, which implies that GCRA on the
/// real, later TAT denies it too: the cache never denies what Redis would allow. Any other
/// request goes to Redis. The bound is taken from the local time read just before the call
/// was sent, so network latency can only make it earlier (more lenient), never later.
///
/// Entries mean nothing once the clock passes them; a full cache drops those, at most
/// every 100 ms, and does not grow beyond its capacity.
#[derive(Debug)]
pub(super) struct DenyCache<K: Hash + Eq> {
    entries: DashMap<(u64, K), u64>,
    /// The entries by the name of the Redis key they describe (its [`name_hash`]), for
    /// invalidations that arrive as key names.
    names: DashMap<u64, (u64, K)>,
    capacity: usize,
    next_sweep: AtomicU64,
}

/// One deny cache per key type a store is used with.
pub(super) struct DenyCaches {
    caches: DashMap<TypeId, Box<dyn Forget>>,
    capacity: usize,
}

impl DenyCaches {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            caches: DashMap::new(),
            capacity,
        }
    }

    /// Runs `f` on the deny cache of key type `K`.
    pub(super) fn with<K, R>(&self, f: impl FnOnce(&DenyCache<K>) -> R) -> Option<R>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        let id = TypeId::of::<K>();
        let cache = match self.caches.get(&id) {
            Some(cache) => cache,
            None => self
                .caches
                .entry(id)
                .or_insert_with(|| Box::new(DenyCache::<K>::new(self.capacity)))
                .downgrade(),
        };
        cache.as_any().downcast_ref::<DenyCache<K>>().map(f)
    }

    /// Forgets, in every cache, the entry of the Redis key whose name hashes to `name`.
    pub(super) fn forget_name(&self, name: u64) {
        for cache in self.caches.iter() {
            cache.forget_name(name);
        }
    }

    /// Forgets everything: invalidations may have been missed.
    pub(super) fn clear(&self) {
        for cache in self.caches.iter() {
            cache.clear();
        }
    }
}

/// A deny cache of any key type, as the store's invalidation listener sees it.
pub(super) trait Forget: Send + Sync {
    /// Forgets the entry of the Redis key whose name hashes to `name`.
    fn forget_name(&self, name: u64);

    /// Forgets every entry.
    fn clear(&self);

    fn as_any(&self) -> &dyn Any;
}

/// A stable hash of a Redis key's name (FNV-1a), the same in every app server.
pub(super) fn name_hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Forget for DenyCache<K> {
    fn forget_name(&self, name: u64) {
        if let Some((_, entry)) = self.names.remove(&name) {
            self.entries.remove(&entry);
        }
    }

    fn clear(&self) {
        self.entries.clear();
        self.names.clear();
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<K: Hash + Eq + Clone> DenyCache<K> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            names: DashMap::new(),
            capacity,
            next_sweep: AtomicU64::new(0),
        }
    }

    /// The local denial of a request of `cost` at `now`, if the cached bound proves that
    /// Redis would deny it. Its `remaining` and `retry_after` are bounds too: Redis could
    /// report less quota and a longer wait.
    pub(super) fn check(
        &self,
        policy: u64,
        key: &K,
        cost: u64,
        quota: &Quota,
        now: u64,
    ) -> Option<Decision> {
        if cost == 0 || cost > quota.burst_size() {
            return None;
        }
        let bound = *self.entries.get(&(policy, key.clone()))?;
        // GCRA itself, on the bound.
        let (decision, _) = Algorithm::TokenBucket.decide(bound, now, cost, quota);
        matches!(decision.outcome, Outcome::Denied { .. }).then_some(decision)
    }

    /// Forgets what is known of `key` under `policy`: its state changed otherwise than by
    /// a charge (a reset, a refund).
    pub(super) fn forget(&self, policy: u64, key: &K) {
        self.entries.remove(&(policy, key.clone()));
    }

    /// Records that the key's TAT is at least `bound` (local nanoseconds); `name` is the
    /// [`name_hash`] of its Redis key.
    pub(super) fn record(&self, policy: u64, key: &K, name: u64, bound: u64, now: u64) {
        if let Some(mut entry) = self.entries.get_mut(&(policy, key.clone())) {
            *entry = (*entry).max(bound);
            return;
        }
        if self.entries.len() >= self.capacity {
            let next = self.next_sweep.load(Relaxed);
            if now < next
                || self
                    .next_sweep
                    .compare_exchange(next, now + SWEEP_GAP, Relaxed, Relaxed)
                    .is_err()
            {
                return;
            }
            self.entries.retain(|_, bound| *bound > now);
            self.names
                .retain(|_, entry| self.entries.contains_key(entry));
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        self.entries
            .entry((policy, key.clone()))
            .and_modify(|entry| *entry = (*entry).max(bound))
            .or_insert(bound);
        self.names.insert(name, (policy, key.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: u64 = 1_000_000_000;
    const GCRA: &Quota = &Quota::per_second(1).burst(5);

    #[test]
    fn denies_only_what_the_bound_proves() {
        let cache = DenyCache::new(8);
        // A TAT of at least 7 s at 0: the bucket lacks 2 units, a cost of 1 passes at 3 s.
        cache.record(1, &"k", 0, 7 * S, 0);
        let decision = cache.check(1, &"k", 1, GCRA, S).unwrap();
        assert_eq!(
            decision.outcome,
            Outcome::Denied {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(decision.remaining, 0);
        assert!(cache.check(1, &"k", 1, GCRA, 3 * S).is_none());
        assert!(cache.check(1, &"k", 3, GCRA, 4 * S).is_some());
        assert!(
            cache.check(1, &"k", 0, GCRA, S).is_none(),
            "a look is never denied"
        );
        assert!(cache.check(2, &"k", 1, GCRA, S).is_none(), "another policy");
        // Bounds only grow.
        cache.record(1, &"k", 0, 6 * S, 0);
        assert!(cache.check(1, &"k", 1, GCRA, 2 * S).is_some());
    }

    #[test]
    fn stays_within_capacity_and_sweeps_expired_entries() {
        let cache = DenyCache::new(2);
        cache.record(0, &"a", 0, 10 * S, 0);
        cache.record(0, &"b", 0, 20 * S, 0);
        cache.record(0, &"c", 0, 30 * S, 0);
        assert_eq!(cache.entries.len(), 2, "full of live entries: not cached");
        cache.record(0, &"c", 0, 30 * S, 15 * S);
        assert!(cache.check(0, &"a", 1, GCRA, 15 * S).is_none());
        assert!(
            cache.check(0, &"c", 1, GCRA, 15 * S).is_some(),
            "room after the sweep"
        );
    }

    #[test]
    fn forgets_by_the_name_of_the_redis_key() {
        let cache = DenyCache::new(8);
        cache.record(1, &"k", name_hash(b"rl:{k}:1"), 7 * S, 0);
        assert!(cache.check(1, &"k", 1, GCRA, S).is_some());
        cache.forget_name(name_hash(b"rl:{other}:1"));
        assert!(cache.check(1, &"k", 1, GCRA, S).is_some());
        cache.forget_name(name_hash(b"rl:{k}:1"));
        assert!(cache.check(1, &"k", 1, GCRA, S).is_none());
    }
}
