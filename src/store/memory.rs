//! [`MemoryStore`]: rate-limit state in this process, one atomic word per key.

use std::future::{ready, Ready};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::{mapref::entry::Entry, DashMap};
use foldhash::fast::RandomState;

use super::{Store, StoreError};
use crate::algorithm::{decide_all, EMPTY};
use crate::clock::{Clock, MonotonicClock};
use crate::{Decision, Decisions, Outcome, Policies, Policy};

/// Keys tracked before the first sweep for idle keys.
const FIRST_SWEEP_AT: usize = 1024;
/// At the key cap, the least time between two sweeps.
const CAP_SWEEP_GAP: Duration = Duration::from_secs(1);

/// An in-process store: a concurrent map from key to one packed `u64` of state, updated
/// with a compare-and-swap loop. Deciding for a known key takes no lock on the key and
/// allocates nothing; clones share the same state.
///
/// Under several [`Policies`] a key holds one word per policy, checked and charged
/// together under a short per-key lock, so a request one policy refuses spends nothing
/// under the others. Such a key's state is its own: apart from the same policies used
/// alone or in another set.
///
/// # Memory is bounded
///
/// * Keys whose state carries no information (a full bucket) are dropped, losslessly: a
///   dropped key decides exactly as if it were still there. Sweeps run on the inserting
///   request when the key count doubles, so their cost is amortised; there is no background
///   task.
/// * At most [`max_keys`](MemoryStore::max_keys) keys are tracked (default 1 048 576). When
///   the map is full of keys that are still limited, a **new** key is denied (`429`, retry
///   after one second) until a sweep frees room; a sweep at the cap runs at most once per
///   second. Known keys are unaffected. A flood of fresh keys therefore cannot grow memory
///   nor buy extra quota; it can only delay the first request of keys never seen before.
///
/// ```
/// use tower_ratelimit::{store::{MemoryStore, Store}, Algorithm, Policy, Quota};
///
/// let store = MemoryStore::<&str>::new();
/// let policy = Policy::new("default", Quota::per_second(1).burst(2), Algorithm::TokenBucket)?;
/// let policy = policy.into();
/// let decide = |key| store.decide(&key, 1, &policy).into_inner().unwrap();
/// assert!(decide("alice").is_allowed());
/// assert!(decide("alice").is_allowed());
/// assert!(!decide("alice").is_allowed());
/// assert!(decide("bob").is_allowed());
/// # Ok::<(), tower_ratelimit::QuotaError>(())
/// ```
pub struct MemoryStore<K, C = MonotonicClock> {
    shared: Arc<Shared<K, C>>,
}

struct Shared<K, C> {
    /// Keys under one policy. foldhash with a random seed per map: keys are chosen by
    /// clients, so not a fixed hash, and SipHash would cost more than the rest of a
    /// decision.
    states: DashMap<Slot<K>, AtomicU64, RandomState>,
    /// Keys under several policies, one state word each, decided together under a lock.
    sets: DashMap<Slot<K>, Mutex<Box<[u64]>>, RandomState>,
    /// The policies that have state here, so a sweep knows how to read each state word.
    policies: RwLock<Vec<Policies>>,
    clock: C,
    max_keys: AtomicUsize,
    len: AtomicUsize,
    sweep_at: AtomicUsize,
    sweeping: AtomicBool,
    next_cap_sweep: AtomicU64,
}

/// One key under its policies: state under another quota or algorithm is never shared.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Slot<K> {
    /// The low 32 bits of the policies' fingerprint: with the key, an entry fits in 32
    /// bytes for `IpAddr` keys. Two policies on one store collide with probability 2^-32.
    policy: u32,
    key: K,
}

impl<K: Hash + Eq> MemoryStore<K> {
    /// An empty store on the process's monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock::new())
    }
}

impl<K: Hash + Eq> Default for MemoryStore<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, C: Clock> MemoryStore<K, C> {
    /// An empty store reading time from `clock` (a [`ManualClock`](crate::clock::ManualClock)
    /// in tests).
    pub fn with_clock(clock: C) -> Self {
        Self {
            shared: Arc::new(Shared {
                states: DashMap::default(),
                sets: DashMap::default(),
                policies: RwLock::new(Vec::new()),
                clock,
                max_keys: AtomicUsize::new(1 << 20),
                len: AtomicUsize::new(0),
                sweep_at: AtomicUsize::new(FIRST_SWEEP_AT),
                sweeping: AtomicBool::new(false),
                next_cap_sweep: AtomicU64::new(0),
            }),
        }
    }

    /// Caps the number of keys tracked at once (at least 1). Applies to all clones.
    pub fn max_keys(self, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        self.shared.max_keys.store(max_keys, Relaxed);
        self.shared
            .sweep_at
            .store(FIRST_SWEEP_AT.min(max_keys), Relaxed);
        self
    }

    /// The number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.shared.len.load(Relaxed)
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, C: Clock> MemoryStore<K, C> {
    pub(crate) fn decide_now(&self, key: &K, cost: u64, policies: &Policies) -> Decisions {
        let shared = &*self.shared;
        let now = shared.clock.now_nanos();
        let slot = Slot {
            policy: policies.fingerprint() as u32,
            key: key.clone(),
        };
        match &**policies {
            [policy] => self.decide_in(
                &shared.states,
                slot,
                now,
                policies,
                |state| update(state, now, cost, policy).into(),
                || {
                    let quota = policy.quota();
                    let (decision, state) = policy.algorithm().decide(EMPTY, now, cost, quota);
                    (decision.into(), state.map(AtomicU64::new))
                },
            ),
            _ => self.decide_in(
                &shared.sets,
                slot,
                now,
                policies,
                |states| {
                    let mut states = states.lock().unwrap_or_else(|e| e.into_inner());
                    decide_all(policies, &mut states, now, cost).0
                },
                || {
                    let mut states = vec![EMPTY; policies.len()];
                    let (decisions, charged) = decide_all(policies, &mut states, now, cost);
                    (decisions, charged.then(|| Mutex::new(states.into())))
                },
            ),
        }
    }

    /// Decides in `map` with `update` on the slot's state or, for a new key, with `fresh`,
    /// whose state is kept only if the decision made one and the store has room.
    fn decide_in<S>(
        &self,
        map: &DashMap<Slot<K>, S, RandomState>,
        slot: Slot<K>,
        now: u64,
        policies: &Policies,
        update: impl Fn(&S) -> Decisions,
        fresh: impl FnOnce() -> (Decisions, Option<S>),
    ) -> Decisions {
        if let Some(state) = map.get(&slot) {
            return update(&state);
        }
        let (decisions, state) = fresh();
        let Some(state) = state else {
            // Nothing to remember: a denial or a zero-cost look.
            return decisions;
        };
        if !self.make_room(now, policies) {
            let next_sweep = self.shared.next_cap_sweep.load(Relaxed);
            return at_capacity(now, next_sweep, policies);
        }
        match map.entry(slot) {
            Entry::Occupied(entry) => update(entry.get()),
            Entry::Vacant(entry) => {
                entry.insert(state);
                self.shared.len.fetch_add(1, Relaxed);
                decisions
            }
        }
    }

    /// Registers `policies` and sweeps idle keys when due. Returns whether a new key fits.
    fn make_room(&self, now: u64, policies: &Policies) -> bool {
        let shared = &*self.shared;
        let known = |registered: &[Policies]| {
            registered
                .iter()
                .any(|p| p.fingerprint() == policies.fingerprint())
        };
        if !known(&shared.policies.read().unwrap_or_else(|e| e.into_inner())) {
            let mut registered = shared.policies.write().unwrap_or_else(|e| e.into_inner());
            if !known(&registered) {
                registered.push(policies.clone());
            }
        }
        let max_keys = shared.max_keys.load(Relaxed);
        if shared.len.load(Relaxed) < shared.sweep_at.load(Relaxed) {
            return true;
        }
        let at_cap = shared.len.load(Relaxed) >= max_keys;
        let sweep_due = !at_cap || now >= shared.next_cap_sweep.load(Relaxed);
        if sweep_due && !shared.sweeping.swap(true, Relaxed) {
            self.sweep(now);
            let len = shared.len.load(Relaxed);
            let next = len.saturating_mul(2).max(FIRST_SWEEP_AT).min(max_keys);
            shared.sweep_at.store(next, Relaxed);
            if len >= max_keys {
                shared
                    .next_cap_sweep
                    .store(now + CAP_SWEEP_GAP.as_nanos() as u64, Relaxed);
                tracing::warn!(
                    max_keys,
                    "rate-limit store is full of limited keys; new keys are denied for now"
                );
            }
            shared.sweeping.store(false, Relaxed);
        }
        shared.len.load(Relaxed) < max_keys
    }

    /// Drops every key whose state is idle at `now` under all its policies. Each shard is
    /// write-locked while it is swept, so no update can slip in between the check and the
    /// removal.
    fn sweep(&self, now: u64) {
        let shared = &*self.shared;
        let registered = shared
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let idle = |slot: &Slot<K>, states: &[u64]| {
            registered.iter().any(|policies| {
                policies.fingerprint() as u32 == slot.policy
                    && policies.len() == states.len()
                    && policies
                        .iter()
                        .zip(states)
                        .all(|(p, &state)| p.algorithm().is_idle(state, now, p.quota()))
            })
        };
        let mut removed = 0;
        shared.states.retain(|slot, state| {
            let drop = idle(slot, &[*state.get_mut()]);
            removed += usize::from(drop);
            !drop
        });
        shared.sets.retain(|slot, states| {
            let drop = idle(slot, states.get_mut().unwrap_or_else(|e| e.into_inner()));
            removed += usize::from(drop);
            !drop
        });
        let len = shared.len.fetch_sub(removed, Relaxed) - removed;
        if shared.states.capacity() > 4 * len.max(FIRST_SWEEP_AT) {
            shared.states.shrink_to_fit();
            shared.sets.shrink_to_fit();
        }
    }
}

/// Applies a decision to a known key's state word with a compare-and-swap loop.
fn update(state: &AtomicU64, now: u64, cost: u64, policy: &Policy) -> Decision {
    let mut current = state.load(Relaxed);
    loop {
        let (decision, next) = policy
            .algorithm()
            .decide(current, now, cost, policy.quota());
        let Some(next) = next else {
            return decision;
        };
        match state.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

/// The answer for a new key while the store is full: wait for the next sweep.
fn at_capacity(now: u64, next_sweep: u64, policies: &Policies) -> Decisions {
    let wait = Duration::from_nanos(next_sweep.saturating_sub(now)).max(Duration::from_millis(1));
    let denial = |policy: &Policy| Decision {
        outcome: Outcome::Denied {
            retry_after: Some(wait),
        },
        limit: policy.quota().burst_size(),
        remaining: 0,
        reset: Some(wait),
    };
    Decisions::new(policies.iter().map(denial).collect())
}

impl<K, C> Clone for MemoryStore<K, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, C> std::fmt::Debug for MemoryStore<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("len", &self.shared.len.load(Relaxed))
            .field("max_keys", &self.shared.max_keys.load(Relaxed))
            .finish()
    }
}

impl<K, C> Store<K> for MemoryStore<K, C>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Clock,
{
    type Future = Ready<Result<Decisions, StoreError>>;

    fn decide(&self, key: &K, cost: u64, policies: &Policies) -> Self::Future {
        ready(Ok(self.decide_now(key, cost, policies)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::thread;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, Quota};

    fn policy(quota: Quota) -> Policies {
        named("default", quota)
    }

    fn named(name: &str, quota: Quota) -> Policies {
        Policy::new(name, quota, Algorithm::TokenBucket)
            .unwrap()
            .into()
    }

    fn both(a: &Policies, b: &Policies) -> Policies {
        Policies::new([a[0].clone(), b[0].clone()]).unwrap()
    }

    /// How many of 8 threads × 1000 requests on one key `store` admits.
    fn admitted_by_threads(store: &MemoryStore<&str, ManualClock>, policies: &Policies) -> usize {
        let threads = 8;
        let barrier = Barrier::new(threads);
        thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        (0..1000)
                            .filter(|_| store.decide_now(&"hot", 1, policies).is_allowed())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }

    #[test]
    fn concurrent_threads_on_one_key_admit_exactly_the_burst() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy(Quota::per_hour(1).burst(100));
        assert_eq!(admitted_by_threads(&store, &policy), 100);
    }

    #[test]
    fn a_flood_of_fresh_keys_stays_within_the_cap() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone()).max_keys(10_000);
        let policy = policy(Quota::per_hour(1));
        // xorshift: 1,000,000 distinct-looking random keys.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let mut admitted = 0;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            admitted += usize::from(store.decide_now(&x, 1, &policy).is_allowed());
            assert!(store.len() <= 10_000);
        }
        // Every key admitted was remembered: the flood bought no extra quota.
        assert_eq!(admitted, store.len());
        assert_eq!(store.len(), 10_000);
        // Once the buckets refill, a sweep frees the room and new keys pass again.
        clock.advance(Duration::from_secs(3600));
        assert!(store.decide_now(&1, 1, &policy).is_allowed());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_new_key_at_the_cap_is_denied_with_a_retry() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone()).max_keys(2);
        let policy = policy(Quota::per_hour(1));
        assert!(store.decide_now(&1, 1, &policy).is_allowed());
        assert!(store.decide_now(&2, 1, &policy).is_allowed());
        let denied = store.decide_now(&3, 1, &policy);
        assert_eq!(
            denied[0].outcome,
            Outcome::Denied {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        // Known keys are unaffected by the cap.
        assert!(!store.decide_now(&1, 1, &policy).is_allowed());
    }

    #[test]
    fn sweeps_drop_only_full_buckets() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let quick = policy(Quota::per_second(1).burst(2));
        let slow = policy(Quota::per_hour(1).burst(2));
        for key in 0..FIRST_SWEEP_AT as u64 / 2 {
            store.decide_now(&key, 1, &quick);
            store.decide_now(&key, 1, &slow);
        }
        assert_eq!(store.len(), FIRST_SWEEP_AT);
        clock.advance(Duration::from_secs(1));
        // This insert reaches the sweep threshold: every `quick` bucket is full again.
        store.decide_now(&u64::MAX, 1, &quick);
        assert_eq!(store.len(), FIRST_SWEEP_AT / 2 + 1);
        // The `slow` buckets kept their state: one unit left each, then denial.
        assert_eq!(store.decide_now(&0, 1, &slow)[0].remaining, 0);
        assert!(!store.decide_now(&0, 1, &slow).is_allowed());
        // A dropped `quick` bucket decides exactly as a full one.
        assert_eq!(store.decide_now(&0, 1, &quick)[0].remaining, 1);
    }

    #[test]
    fn policies_keep_separate_state_for_one_key() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let one = policy(Quota::per_hour(1));
        let two = policy(Quota::per_hour(2));
        assert!(store.decide_now(&"k", 1, &one).is_allowed());
        assert!(!store.decide_now(&"k", 1, &one).is_allowed());
        assert!(store.decide_now(&"k", 1, &two).is_allowed());
        // The same quota under another name counts apart too.
        assert!(store
            .decide_now(&"k", 1, &named("other", Quota::per_hour(1)))
            .is_allowed());
    }

    #[test]
    fn looking_and_denying_remember_nothing() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy(Quota::per_second(1).burst(2));
        assert_eq!(store.decide_now(&"k", 0, &policy)[0].remaining, 2);
        assert_eq!(
            store.decide_now(&"k", 3, &policy)[0].outcome,
            Outcome::CostExceedsBurst
        );
        assert!(store.is_empty());
    }

    #[test]
    fn several_policies_charge_all_or_nothing_across_threads() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let (wide, narrow) = (
            named("wide", Quota::per_hour(100)),
            named("narrow", Quota::per_hour(60)),
        );
        let policies = both(&wide, &narrow);
        assert_eq!(admitted_by_threads(&store, &policies), 60);
        // Thousands of refusals by "narrow" spent nothing of "wide".
        let look = store.decide_now(&"hot", 0, &policies);
        assert_eq!((look[0].remaining, look[1].remaining), (40, 0));
    }

    #[test]
    fn a_refusal_by_one_policy_reports_the_others_uncharged() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let (second, hour) = (
            named("second", Quota::per_second(2)),
            named("hour", Quota::per_hour(5)),
        );
        let policies = both(&second, &hour);
        for left in [(1, 4), (0, 3)] {
            let decisions = store.decide_now(&"k", 1, &policies);
            assert!(decisions.is_allowed());
            assert_eq!((decisions[0].remaining, decisions[1].remaining), left);
        }
        let refused = store.decide_now(&"k", 1, &policies);
        assert_eq!(refused.violated().collect::<Vec<_>>(), [0]);
        assert_eq!(refused[1].outcome, Outcome::Allowed);
        assert_eq!(refused[1].remaining, 3);
        assert_eq!(
            refused.summary().outcome,
            Outcome::Denied {
                retry_after: Some(Duration::from_millis(500))
            }
        );
        // A cost above one burst is refused as such, and charges the other nothing.
        let too_costly = store.decide_now(&"k", 4, &policies);
        assert_eq!(too_costly.summary().outcome, Outcome::CostExceedsBurst);
        clock.advance(Duration::from_secs(1));
        let decisions = store.decide_now(&"k", 2, &policies);
        assert_eq!((decisions[0].remaining, decisions[1].remaining), (0, 1));
        // Each set keeps its own state, apart from the same policies alone.
        assert_eq!(store.decide_now(&"k", 0, &hour)[0].remaining, 5);
    }

    #[test]
    fn sweeps_drop_sets_once_every_policy_is_idle() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let policies = both(
            &named("second", Quota::per_second(1)),
            &named("minute", Quota::per_minute(1)),
        );
        for key in 0..FIRST_SWEEP_AT as u64 - 1 {
            store.decide_now(&key, 1, &policies);
        }
        clock.advance(Duration::from_secs(1));
        store.decide_now(&u64::MAX, 1, &policies);
        // Full again under "second" only: nothing may be dropped.
        assert_eq!(store.len(), FIRST_SWEEP_AT);
        assert!(!store.decide_now(&0, 1, &policies).is_allowed());
        clock.advance(Duration::from_secs(60));
        store.decide_now(&(u64::MAX - 1), 1, &policies);
        assert_eq!(store.len(), 1);
        assert!(store.decide_now(&0, 1, &policies).is_allowed());
    }
}
