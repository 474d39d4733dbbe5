//! [`MemoryStore`]: rate-limit state in this process, one atomic word per key and policy.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::{mapref::entry::Entry, DashMap};
use foldhash::fast::RandomState;

use super::words::{apply_words, blocked, EMPTY};
use super::{Change, QuotaBoard, QuotaChange, Store, StoreError, StoreErrorKind};
use crate::clock::{Clock, MonotonicClock};
use crate::{Decisions, Outcome, Policies, Policy, Quota};

/// Keys tracked before the first sweep for idle keys.
const FIRST_SWEEP_AT: usize = 1024;
/// Locks for keys decided under several policies at once.
const LOCKS: usize = 64;
/// The most a state costs: a 32-byte entry in a table at least half full, rounded up.
const BYTES_PER_STATE: usize = 70;
/// Entries read to pick which to drop when the store is full.
const SAMPLE: usize = 1024;

/// An in-process store: a concurrent map from key and policy to one packed `u64` of state,
/// updated with a compare-and-swap loop. Deciding for a known key takes no lock and
/// allocates nothing; clones share the same state.
///
/// Policies that are decided together (a set, such as a burst limit and a daily
/// allowance) are checked and charged together under a short lock on the key, so a
/// request one policy refuses spends nothing under the others; each keeps its own word,
/// shared with the same policy used alone, as every store does (see [the state
/// identity](super#state-identity)).
///
/// # Memory is bounded
///
/// * Keys whose state carries no information (a full bucket) are dropped, losslessly: a
///   dropped key decides exactly as if it were still there. Sweeps run on the inserting
///   request when the key count doubles, so their cost is amortised; there is no background
///   task.
/// * At most [`max_keys`](MemoryStore::max_keys) states are kept (default 1 048 576;
///   [`max_bytes`](MemoryStore::max_bytes) sets it from a budget in bytes: keys are kept as
///   16-byte digests, so a state costs the same, at most about 70 bytes, whatever the
///   client sent). A
///   full store never refuses a newcomer: it first drops idle states, then, if it is
///   still more than 7/8 full, drops the eighth of its states that say least: those
///   closest to a full bucket (their deficit is the smallest, judged on a sample of 1024).
///   **Bound**: a dropped state's owner can gain at most its deficit `D` (what it had
///   spent and not yet got back), and no dropped deficit exceeds the eighth-smallest in
///   the sample. Under a flood of fresh keys (deficit 1 each) that is one extra request
///   per dropped key. A [fixed](crate::Quota::fixed) quota never refills, so its spent
///   count is never idle: it is dropped like any other state when the store is full, and
///   its owner then gets the count back.
///
/// ```
/// use tower_ratelimit::{store::MemoryStore, Limiter, Quota};
///
/// let limiter = Limiter::new(MemoryStore::new(), Quota::per_second(1).burst(2));
/// assert!(limiter.check_now(&"alice").is_allowed());
/// assert!(limiter.check_now(&"alice").is_allowed());
/// assert!(!limiter.check_now(&"alice").is_allowed());
/// assert!(limiter.check_now(&"bob").is_allowed());
/// ```
pub struct MemoryStore<K, C = MonotonicClock> {
    shared: Arc<Shared<C>>,
    _key: PhantomData<fn(&K)>,
}

struct Shared<C> {
    /// The keys' digests: foldhash under two random seeds per store, since keys are chosen
    /// by clients (a fixed hash would let them aim at one state) and SipHash would cost
    /// more than the rest of a decision.
    seeds: [RandomState; 2],
    /// Already a digest: hashed again by taking its bits.
    states: DashMap<Slot, AtomicU64, TakeBits>,
    /// Blocked keys under a policy, until when (clock nanoseconds).
    blocks: DashMap<Slot, u64, TakeBits>,
    /// `blocks.len()`, read without touching the map.
    blocked: AtomicUsize,
    /// The policies with state here, so sweeps can read each state word.
    registry: RwLock<Registry>,
    /// The fingerprint of the set of policies last found registered, so that inserting
    /// keys under one set reads the registry once, not per key.
    registered: AtomicU64,
    /// Whether any policy is decided in a set (then its words are only changed under a
    /// key lock).
    any_grouped: AtomicBool,
    locks: [Mutex<()>; LOCKS],
    clock: C,
    max_keys: AtomicUsize,
    len: AtomicUsize,
    sweep_at: AtomicUsize,
    sweeping: AtomicBool,
    /// Quotas changed at run time, for every limiter over this store.
    quotas: QuotaBoard,
}

/// One key under one policy, as a fixed-size digest: an entry is 32 bytes whatever the
/// key (an IP address or a 250-byte header value), so a budget of states is a budget of
/// bytes. Two keys share a state only if their 128-bit digests under the store's random
/// seeds meet (probability 2^-128 per pair); two policies, if their 32-bit tags do
/// (2^-32 per pair of policies on one store).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot {
    policy: u32,
    key: [u64; 2],
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key[0] ^ u64::from(self.policy).rotate_left(32));
    }
}

/// Hashes a [`Slot`] by taking the bits of its digest: they are random already.
#[derive(Clone, Default)]
struct TakeBits;

impl BuildHasher for TakeBits {
    type Hasher = Bits;

    fn build_hasher(&self) -> Bits {
        Bits(0)
    }
}

struct Bits(u64);

impl Hasher for Bits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input is folded in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[derive(Default)]
struct Registry {
    policies: HashMap<u32, Policy>,
    /// Policies decided in a set somewhere.
    grouped: HashMap<u32, ()>,
}

impl Registry {
    /// The policy of a tag, remembering the last one looked up: a sweep meets long runs of
    /// states under one policy.
    fn lookup<'a>(&'a self) -> impl FnMut(u32) -> Option<&'a Policy> + 'a {
        let mut last = None;
        move |tag| match last {
            Some((known, policy)) if known == tag => policy,
            _ => {
                let policy = self.policies.get(&tag);
                last = Some((tag, policy));
                policy
            }
        }
    }
}

/// Each policy with the tag of its state (the low 32 bits of its
/// [`state_id`](Policies::state_id)).
fn tagged(policies: &Policies) -> impl Iterator<Item = (u32, &Policy)> {
    let tag = |index| policies.state_id(index) as u32;
    policies
        .iter()
        .enumerate()
        .map(move |(i, policy)| (tag(i), policy))
}

/// A key's digest under each of `policies`.
fn slots(key: [u64; 2], policies: &Policies) -> impl Iterator<Item = Slot> + '_ {
    tagged(policies).map(move |(policy, _)| Slot { policy, key })
}

/// One policy's decisions after `change` to `state`, and its next state if it changed:
/// a charge straight from the algorithm.
#[inline(always)]
fn step_one(policies: &Policies, change: Change, now: u64, state: u64) -> (Decisions, Option<u64>) {
    match change {
        Change::Charge(cost) => {
            let policy = &policies[0];
            let (decision, next) = policy.algorithm().decide(state, now, cost, policy.quota());
            (Decisions::from(decision), next)
        }
        _ => {
            let mut next = [state];
            let (decisions, changed) = apply_words(policies, &mut next, now, change);
            (decisions, changed.then_some(next[0]))
        }
    }
}

/// [`step_one`] on `word`, in a compare-and-swap loop.
fn cas_one(word: &AtomicU64, policies: &Policies, change: Change, now: u64) -> Decisions {
    let mut current = word.load(Relaxed);
    loop {
        let (decisions, next) = step_one(policies, change, now, current);
        let Some(next) = next else {
            return decisions;
        };
        match word.compare_exchange_weak(current, next, Relaxed, Relaxed) {
            Ok(_) => return decisions,
            Err(actual) => current = actual,
        }
    }
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
            _key: PhantomData,
            shared: Arc::new(Shared {
                seeds: [RandomState::default(), RandomState::default()],
                states: DashMap::default(),
                blocks: DashMap::default(),
                blocked: AtomicUsize::new(0),
                registry: RwLock::default(),
                registered: AtomicU64::new(0),
                any_grouped: AtomicBool::new(false),
                locks: [const { Mutex::new(()) }; LOCKS],
                clock,
                max_keys: AtomicUsize::new(1 << 20),
                len: AtomicUsize::new(0),
                sweep_at: AtomicUsize::new(FIRST_SWEEP_AT),
                sweeping: AtomicBool::new(false),
                quotas: QuotaBoard::new(),
            }),
        }
    }

    /// Caps the number of states kept at once (at least 8). Applies to all clones.
    pub fn max_keys(self, max_keys: usize) -> Self {
        let max_keys = max_keys.max(8);
        self.shared.max_keys.store(max_keys, Relaxed);
        self.shared
            .sweep_at
            .store(FIRST_SWEEP_AT.min(max_keys), Relaxed);
        self
    }

    /// Caps the memory the states take at about `bytes`: a state costs at most about 70
    /// bytes whatever its key (a 32-byte entry in tables kept between half and 7/8 full;
    /// long keys are kept as digests), so this is [`max_keys`](Self::max_keys) of
    /// `bytes / 70`.
    pub fn max_bytes(self, bytes: usize) -> Self {
        self.max_keys(bytes / BYTES_PER_STATE)
    }

    /// The number of states (keys under a policy) currently kept.
    pub fn len(&self) -> usize {
        self.shared.len.load(Relaxed)
    }

    /// Whether no state is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone, C: Clock> MemoryStore<K, C> {
    /// The key's digest: what the store keeps in its place.
    fn digest(&self, key: &K) -> [u64; 2] {
        let [first, second] = &self.shared.seeds;
        [first.hash_one(key), second.hash_one(key)]
    }

    /// Applies `change` now; what [`Store::apply`] answers, without a future.
    #[inline]
    pub(crate) fn decide_now(&self, key: &K, change: Change, policies: &Policies) -> Decisions {
        self.decide::<true>(key, change, policies)
            .expect("every change is reported")
    }

    /// Applies `change` now. Unless `REPORT`, a charge that passes at once answers
    /// `None`, and its quota left is not computed.
    #[inline(always)]
    fn decide<const REPORT: bool>(
        &self,
        key: &K,
        change: Change,
        policies: &Policies,
    ) -> Option<Decisions> {
        let shared = &*self.shared;
        let now = shared.clock.now_nanos();
        // The common case: a charge under one policy, no block or set anywhere.
        if let (Change::Charge(cost), 1, 0, false) = (
            change,
            policies.len(),
            shared.blocked.load(Relaxed),
            shared.any_grouped.load(Relaxed),
        ) {
            return self.charge_one::<REPORT>(key, cost, policies, now);
        }
        reported::<REPORT>(self.decide_at(key, change, policies, now))
    }

    /// Applies `change` at `now`, in any case but the common one.
    fn decide_at(&self, key: &K, change: Change, policies: &Policies, now: u64) -> Decisions {
        let key = self.digest(key);
        let block = match change {
            Change::Block(duration) => Some(self.block(key, policies, now, duration)),
            Change::Reset => {
                self.unblock(key, policies);
                None
            }
            _ => self.blocked_until(key, policies, now),
        };
        if let Some(until) = block {
            let wait = Duration::from_nanos(until - now);
            if !matches!(change, Change::Charge(_) | Change::Block(_)) {
                self.apply_unblocked(key, change, policies, now);
            }
            return blocked(policies, wait);
        }
        self.apply_unblocked(key, change, policies, now)
    }

    #[inline]
    fn apply_unblocked(
        &self,
        key: [u64; 2],
        change: Change,
        policies: &Policies,
        now: u64,
    ) -> Decisions {
        match policies.len() {
            1 if !self.is_grouped(policies) => self.apply_one(key, change, policies, now),
            _ => self.apply_locked(key, change, policies, now),
        }
    }

    /// Whether the first of `policies` is also decided in a set.
    #[inline]
    fn is_grouped(&self, policies: &Policies) -> bool {
        let shared = &*self.shared;
        shared.any_grouped.load(Relaxed)
            && shared
                .registry
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .grouped
                .contains_key(&(policies.fingerprint() as u32))
    }

    /// A charge under one policy: for a known key, a compare-and-swap loop with the
    /// algorithm inlined. Its own loop rather than `cas_one`'s: going through that one
    /// (the change matched per step, `Decisions` built in the loop) cost 12 more
    /// instructions per check and 6 ns per refusal. Unless `REPORT`, `None` for a request
    /// that passes at once.
    #[inline]
    fn charge_one<const REPORT: bool>(
        &self,
        key: &K,
        cost: u64,
        policies: &Policies,
        now: u64,
    ) -> Option<Decisions> {
        let slot = Slot {
            policy: policies.fingerprint() as u32,
            key: self.digest(key),
        };
        let Some(word) = self.shared.states.get(&slot) else {
            let decisions = self.insert_one(slot, Change::Charge(cost), policies, now);
            return reported::<REPORT>(decisions);
        };
        let policy = &policies[0];
        let decide = |state| policy.algorithm().decide(state, now, cost, policy.quota());
        let mut current = word.load(Relaxed);
        // A charge that changes nothing (a refusal) is answered with its decision, as is
        // one that swaps when its decision is read. Otherwise the loop needs only the
        // outcome and the next state; a decision is computed after it, from the state it
        // was decided on, only for a request that did not pass at once.
        let (at_once, decided) = loop {
            let (decision, next) = decide(current);
            let at_once = decision.outcome == Outcome::Allowed;
            let Some(next) = next else {
                return (REPORT || !at_once).then(|| decision.into());
            };
            match word.compare_exchange_weak(current, next, Relaxed, Relaxed) {
                Ok(_) if REPORT => return Some(decision.into()),
                Ok(_) => break (at_once, current),
                Err(actual) => current = actual,
            }
        };
        (!at_once).then(|| decide(decided).0.into())
    }

    /// One policy: a compare-and-swap loop on its word, or a new word.
    fn apply_one(&self, key: [u64; 2], change: Change, policies: &Policies, now: u64) -> Decisions {
        let shared = &*self.shared;
        // One policy: its state's identity is the set's fingerprint, computed once.
        let slot = Slot {
            policy: policies.fingerprint() as u32,
            key,
        };
        if change == Change::Reset {
            if shared.states.remove(&slot).is_some() {
                shared.len.fetch_sub(1, Relaxed);
            }
            return step_one(policies, change, now, EMPTY).0;
        }
        match shared.states.get(&slot) {
            Some(word) => cas_one(&word, policies, change, now),
            None => self.insert_one(slot, change, policies, now),
        }
    }

    /// One policy, for a key without a word here: a new word if the change leaves any
    /// information (a compare-and-swap on the word a concurrent request made first).
    #[inline(never)]
    fn insert_one(&self, slot: Slot, change: Change, policies: &Policies, now: u64) -> Decisions {
        let shared = &*self.shared;
        let (decisions, fresh) = step_one(policies, change, now, EMPTY);
        let Some(fresh) = fresh.filter(|&fresh| fresh != EMPTY) else {
            // Nothing to remember: a denial, a look, or a change to an unknown key.
            return decisions;
        };
        self.make_room(now, policies);
        match shared.states.entry(slot) {
            Entry::Occupied(entry) => cas_one(entry.get(), policies, change, now),
            Entry::Vacant(entry) => {
                entry.insert(AtomicU64::new(fresh));
                shared.len.fetch_add(1, Relaxed);
                decisions
            }
        }
    }

    /// Several policies (or one also decided in a set): every word read, decided and
    /// written under the key's lock.
    fn apply_locked(
        &self,
        key: [u64; 2],
        change: Change,
        policies: &Policies,
        now: u64,
    ) -> Decisions {
        let shared = &*self.shared;
        self.group(policies);
        let slots: Vec<Slot> = slots(key, policies).collect();
        let lock = key[1] as usize % LOCKS;
        let _guard = shared.locks[lock].lock().unwrap_or_else(|e| e.into_inner());
        let read = |slot| shared.states.get(slot).map(|word| word.load(Relaxed));
        let before: Vec<Option<u64>> = slots.iter().map(read).collect();
        let mut words: Vec<u64> = before.iter().map(|word| word.unwrap_or(EMPTY)).collect();
        let (decisions, changed) = apply_words(policies, &mut words, now, change);
        if !changed {
            return decisions;
        }
        for ((slot, before), word) in slots.into_iter().zip(before).zip(words) {
            match before {
                Some(before) if before == word => {}
                Some(_) if word == EMPTY => {
                    shared.states.remove(&slot);
                    shared.len.fetch_sub(1, Relaxed);
                }
                Some(_) => {
                    if let Some(entry) = shared.states.get(&slot) {
                        entry.store(word, Relaxed);
                    }
                }
                None if word == EMPTY => {}
                None => {
                    self.make_room(now, policies);
                    shared.states.insert(slot, AtomicU64::new(word));
                    shared.len.fetch_add(1, Relaxed);
                }
            }
        }
        decisions
    }

    /// Marks the policies of a set as decided under key locks from now on.
    fn group(&self, policies: &Policies) {
        let shared = &*self.shared;
        if policies.len() == 1 {
            return;
        }
        let known = |registry: &Registry| {
            tagged(policies).all(|(tag, _)| registry.grouped.contains_key(&tag))
        };
        if known(&shared.registry.read().unwrap_or_else(|e| e.into_inner())) {
            return;
        }
        let mut registry = shared.registry.write().unwrap_or_else(|e| e.into_inner());
        for (tag, policy) in tagged(policies) {
            registry.grouped.insert(tag, ());
            registry.policies.insert(tag, policy.clone());
        }
        shared.any_grouped.store(true, Relaxed);
    }

    /// Blocks `key` under `policies` for `duration` from `now`; returns until when.
    fn block(&self, key: [u64; 2], policies: &Policies, now: u64, duration: Duration) -> u64 {
        let shared = &*self.shared;
        let until = now.saturating_add(duration.as_nanos().min(u128::from(u64::MAX)) as u64);
        let mut latest = until;
        for slot in slots(key, policies) {
            let mut entry = shared.blocks.entry(slot).or_insert_with(|| {
                shared.blocked.fetch_add(1, Relaxed);
                0
            });
            *entry = (*entry).max(until);
            latest = latest.max(*entry);
        }
        latest
    }

    fn unblock(&self, key: [u64; 2], policies: &Policies) {
        let shared = &*self.shared;
        if shared.blocked.load(Relaxed) == 0 {
            return;
        }
        for slot in slots(key, policies) {
            if shared.blocks.remove(&slot).is_some() {
                shared.blocked.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Until when `key` is blocked under any of `policies`, if it is at `now`.
    #[inline]
    fn blocked_until(&self, key: [u64; 2], policies: &Policies, now: u64) -> Option<u64> {
        let shared = &*self.shared;
        if shared.blocked.load(Relaxed) == 0 {
            return None;
        }
        slots(key, policies)
            .filter_map(|slot| shared.blocks.get(&slot).map(|until| *until))
            .filter(|&until| until > now)
            .max()
    }

    /// Registers `policies` and, when due, sweeps idle states; a store still full then
    /// drops the states that say least.
    fn make_room(&self, now: u64, policies: &Policies) {
        let shared = &*self.shared;
        let known = |registry: &Registry| {
            tagged(policies).all(|(tag, _)| registry.policies.contains_key(&tag))
        };
        let fingerprint = policies.fingerprint();
        if shared.registered.load(Relaxed) != fingerprint {
            if !known(&shared.registry.read().unwrap_or_else(|e| e.into_inner())) {
                let mut registry = shared.registry.write().unwrap_or_else(|e| e.into_inner());
                for (tag, policy) in tagged(policies) {
                    registry.policies.insert(tag, policy.clone());
                }
            }
            shared.registered.store(fingerprint, Relaxed);
        }
        if shared.len.load(Relaxed) < shared.sweep_at.load(Relaxed)
            || shared.sweeping.swap(true, Relaxed)
        {
            return;
        }
        let max_keys = shared.max_keys.load(Relaxed);
        self.sweep(now, 0);
        if shared.len.load(Relaxed) >= max_keys - max_keys / 8 {
            let threshold = self.eviction_threshold(now, max_keys / 8);
            self.sweep(now, threshold);
            tracing::warn!(
                max_keys,
                deficit = threshold,
                "rate-limit store is full: dropped the states closest to a full bucket"
            );
        }
        let len = shared.len.load(Relaxed);
        let next = len.saturating_mul(2).max(FIRST_SWEEP_AT).min(max_keys);
        shared.sweep_at.store(next, Relaxed);
        shared.sweeping.store(false, Relaxed);
    }

    /// The deficit at or below which about `count` states lie, judged on a sample.
    fn eviction_threshold(&self, now: u64, count: usize) -> u64 {
        let shared = &*self.shared;
        let registry = shared.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut policy_of = registry.lookup();
        let mut deficits: Vec<u64> = shared
            .states
            .iter()
            .take(SAMPLE)
            .filter_map(|entry| {
                let policy = policy_of(entry.key().policy)?;
                Some(deficit(policy, entry.load(Relaxed), now))
            })
            .collect();
        deficits.sort_unstable();
        let len = shared.len.load(Relaxed).max(1);
        let rank = deficits.len() * count / len;
        deficits
            .get(rank.min(deficits.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// Drops every state whose deficit at `now` is at most `threshold` (0: only idle
    /// states, losslessly). Each shard is write-locked while it is swept, so no update
    /// can slip in between the check and the removal.
    fn sweep(&self, now: u64, threshold: u64) {
        let shared = &*self.shared;
        let registry = shared.registry.read().unwrap_or_else(|e| e.into_inner());
        let mut removed = 0;
        let mut policy_of = registry.lookup();
        shared.states.retain(|slot, word| {
            let drop = match policy_of(slot.policy) {
                Some(policy) if threshold == 0 => {
                    let (algorithm, quota) = (policy.algorithm(), policy.quota());
                    algorithm.is_idle(*word.get_mut(), now, quota)
                }
                Some(policy) => deficit(policy, *word.get_mut(), now) <= threshold,
                None => false,
            };
            removed += usize::from(drop);
            !drop
        });
        drop(policy_of);
        drop(registry);
        let len = shared.len.fetch_sub(removed, Relaxed) - removed;
        if shared.states.capacity() > 4 * len.max(FIRST_SWEEP_AT) {
            shared.states.shrink_to_fit();
        }
        if shared.blocked.load(Relaxed) > 0 {
            shared.blocks.retain(|_, until| *until > now);
            shared.blocked.store(shared.blocks.len(), Relaxed);
        }
    }
}

/// `decisions` unless they are not `REPORT`ed and pass at once.
#[inline(always)]
fn reported<const REPORT: bool>(decisions: Decisions) -> Option<Decisions> {
    match REPORT {
        true => Some(decisions),
        false => decisions.unless_at_once(),
    }
}

/// What a state has spent and not got back, in units: what dropping it could give away.
fn deficit(policy: &Policy, state: u64, now: u64) -> u64 {
    let (algorithm, quota) = (policy.algorithm(), policy.quota());
    let look = algorithm.decide(state, now, 0, quota).0;
    quota.burst_size().saturating_sub(look.remaining).max(1)
}

impl<K, C> Clone for MemoryStore<K, C> {
    fn clone(&self) -> Self {
        Self {
            _key: PhantomData,
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

    #[inline]
    fn apply(&self, key: &K, change: Change, policies: &Policies) -> Self::Future {
        ready(Ok(self.decide_now(key, change, policies)))
    }

    #[inline]
    fn apply_now(
        &self,
        key: &K,
        change: Change,
        policies: &Policies,
    ) -> Option<Result<Decisions, StoreError>> {
        Some(Ok(self.decide_now(key, change, policies)))
    }

    #[inline]
    fn charge_now(
        &self,
        key: &K,
        cost: u64,
        policies: &Policies,
    ) -> Option<Result<Option<Decisions>, StoreError>> {
        Some(Ok(self.decide::<false>(
            key,
            Change::Charge(cost),
            policies,
        )))
    }

    /// Refuses a policy whose name and algorithm this store already holds under another
    /// quota (two layers or limiters would share state they count differently); name
    /// them apart. A policy whose quota was [changed at run time](Store::change_quota)
    /// is accepted with any quota: its limiters follow the change.
    fn supports(&self, policies: &Policies) -> Result<(), StoreError> {
        let changed = |index: usize| self.shared.quotas.get(policies.state_id(index)).is_some();
        let registry = self
            .shared
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for (index, (tag, policy)) in tagged(policies).enumerate() {
            if changed(index) {
                continue;
            }
            if let Some(known) = registry.policies.get(&tag) {
                if known.quota() != policy.quota() {
                    return Err(StoreError::new(
                        StoreErrorKind::Misconfigured,
                        format!(
                            "policy \"{}\" is already used on this store with another quota \
                             ({:?}); give one of them another name",
                            policy.name(),
                            known.quota()
                        ),
                    ));
                }
            }
        }
        drop(registry);
        let mut registry = self
            .shared
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for (index, (tag, policy)) in tagged(policies).enumerate() {
            if !changed(index) {
                registry.policies.insert(tag, policy.clone());
            }
        }
        drop(registry);
        self.group(policies);
        Ok(())
    }

    fn quotas(&self) -> Option<&QuotaBoard> {
        Some(&self.shared.quotas)
    }

    /// The change is on the board at once, for every limiter over this store; sweeps
    /// judge the policy's states by the new quota.
    fn change_quota(&self, policies: &Policies, index: usize, quota: Option<Quota>) -> QuotaChange {
        let own = &policies[index];
        let policy = match quota {
            Some(quota) => Policy::new(own.name(), quota, own.algorithm()),
            None => Ok(own.clone()),
        };
        let done = policy
            .map(|policy| {
                let mut registry = self
                    .shared
                    .registry
                    .write()
                    .unwrap_or_else(|e| e.into_inner());
                registry
                    .policies
                    .insert(policies.state_id(index) as u32, policy);
                self.shared.quotas.set(policies.state_id(index), quota);
            })
            .map_err(|error| StoreError::new(StoreErrorKind::InvalidChange, error.to_string()));
        Box::pin(std::future::ready(done))
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::thread;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, Outcome, Quota};

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
                            .filter(|_| {
                                store
                                    .decide_now(&"hot", Change::Charge(1), policies)
                                    .is_allowed()
                            })
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
    fn a_flood_of_fresh_keys_stays_within_the_cap_and_locks_no_one_out() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone()).max_keys(10_000);
        let policy = policy(Quota::per_hour(1).burst(100));
        let charge = |key: &u64| store.decide_now(key, Change::Charge(1), &policy);
        // A legitimate client spends most of its burst.
        for _ in 0..90 {
            assert!(charge(&7).is_allowed());
        }
        // xorshift: 1,000,000 distinct-looking random keys, one request each.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every newcomer passes: a full store makes room, it never refuses.
            assert!(charge(&x).is_allowed());
            assert!(store.len() <= 10_000);
        }
        // The flood dropped states of deficit 1, never the client's deficit of 90.
        assert_eq!(charge(&7)[0].remaining, 9);
    }

    #[test]
    fn a_full_store_of_fixed_quotas_still_admits_newcomers() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone()).max_keys(8);
        let policy = policy(Quota::fixed(5));
        for key in 0..8 {
            assert!(store
                .decide_now(&key, Change::Charge(1), &policy)
                .is_allowed());
        }
        clock.advance(Duration::from_secs(365 * 86_400));
        // Spent fixed allowances never become idle, yet a newcomer is admitted at once.
        let newcomer = store.decide_now(&8, Change::Charge(1), &policy);
        assert_eq!(newcomer[0].outcome, Outcome::Allowed);
        assert!(store.len() <= 8);
    }

    #[test]
    fn sweeps_drop_only_full_buckets() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let quick = named("quick", Quota::per_second(1).burst(2));
        let slow = named("slow", Quota::per_hour(1).burst(2));
        for key in 0..FIRST_SWEEP_AT as u64 / 2 {
            store.decide_now(&key, Change::Charge(1), &quick);
            store.decide_now(&key, Change::Charge(1), &slow);
        }
        assert_eq!(store.len(), FIRST_SWEEP_AT);
        clock.advance(Duration::from_secs(1));
        // This insert reaches the sweep threshold: every `quick` bucket is full again.
        store.decide_now(&u64::MAX, Change::Charge(1), &quick);
        assert_eq!(store.len(), FIRST_SWEEP_AT / 2 + 1);
        // The `slow` buckets kept their state: one unit left each, then denial.
        assert_eq!(
            store.decide_now(&0, Change::Charge(1), &slow)[0].remaining,
            0
        );
        assert!(!store.decide_now(&0, Change::Charge(1), &slow).is_allowed());
        // A dropped `quick` bucket decides exactly as a full one.
        assert_eq!(
            store.decide_now(&0, Change::Charge(1), &quick)[0].remaining,
            1
        );
    }

    #[test]
    fn a_policy_is_its_name_and_algorithm() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let one = policy(Quota::per_hour(1));
        let two = policy(Quota::per_hour(2));
        assert!(store.decide_now(&"k", Change::Charge(1), &one).is_allowed());
        assert!(!store.decide_now(&"k", Change::Charge(1), &one).is_allowed());
        // A new quota under the same name inherits the debt: an hour, two units of 30 min.
        assert!(!store.decide_now(&"k", Change::Charge(1), &two).is_allowed());
        // The same quota under another name counts apart.
        let other = named("other", Quota::per_hour(1));
        assert!(store
            .decide_now(&"k", Change::Charge(1), &other)
            .is_allowed());
    }

    #[test]
    fn an_unreported_charge_answers_only_what_is_held_back() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let (burst, shaped) = (policy(Quota::per_hour(2)), {
            let shaper = Algorithm::LeakyBucketShaper {
                max_delay: Duration::from_secs(3600),
            };
            Policies::from(Policy::new("shaped", Quota::per_hour(1), shaper).unwrap())
        });
        let charge = |key: &'static str, policies: &Policies| {
            store.charge_now(&key, 1, policies).unwrap().unwrap()
        };
        // A new key, then a known one: passed at once, and charged.
        assert_eq!(charge("k", &burst), None);
        assert_eq!(charge("k", &burst), None);
        let denied = charge("k", &burst).expect("refused");
        assert_eq!((denied.is_allowed(), denied[0].remaining), (false, 0));
        // A delayed request is held back: its wait is answered.
        assert_eq!(charge("s", &shaped), None);
        let delayed = charge("s", &shaped).expect("delayed");
        assert!(matches!(delayed[0].outcome, Outcome::Delayed { .. }));
        // Several policies go the general way, and answer the same.
        let both = both(&burst, &named("other", Quota::per_hour(5)));
        assert_eq!(charge("m", &both), None);
        assert_eq!(
            store.decide_now(&"m", Change::Charge(0), &both)[0].remaining,
            1
        );
    }

    #[test]
    fn a_window_whose_burst_changes_keeps_its_count() {
        let store = MemoryStore::with_clock(ManualClock::new());
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let window = |burst| {
                let quota = Quota::per_hour(burst);
                Policies::from(Policy::new("default", quota, algorithm).unwrap())
            };
            let key = if algorithm == Algorithm::FixedWindow {
                "f"
            } else {
                "s"
            };
            assert_eq!(
                store.decide_now(&key, Change::Charge(4), &window(5))[0].remaining,
                1
            );
            // Lowered below the count: denied, nothing more spent, and a penalty keeps it.
            let lowered = store.decide_now(&key, Change::Charge(1), &window(3));
            assert_eq!((lowered.is_allowed(), lowered[0].remaining), (false, 0));
            store.decide_now(&key, Change::Penalize(1), &window(3));
            // Raised: what the window spent still counts.
            let raised = store.decide_now(&key, Change::Charge(1), &window(10));
            assert_eq!(
                (raised.is_allowed(), raised[0].remaining),
                (true, 5),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn looking_and_denying_remember_nothing() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy(Quota::per_second(1).burst(2));
        assert_eq!(
            store.decide_now(&"k", Change::Charge(0), &policy)[0].remaining,
            2
        );
        assert_eq!(
            store.decide_now(&"k", Change::Charge(3), &policy)[0].outcome,
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
        let look = store.decide_now(&"hot", Change::Charge(0), &policies);
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
            let decisions = store.decide_now(&"k", Change::Charge(1), &policies);
            assert!(decisions.is_allowed());
            assert_eq!((decisions[0].remaining, decisions[1].remaining), left);
        }
        let refused = store.decide_now(&"k", Change::Charge(1), &policies);
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
        let too_costly = store.decide_now(&"k", Change::Charge(4), &policies);
        assert_eq!(too_costly.summary().outcome, Outcome::CostExceedsBurst);
        clock.advance(Duration::from_secs(1));
        let decisions = store.decide_now(&"k", Change::Charge(2), &policies);
        assert_eq!((decisions[0].remaining, decisions[1].remaining), (0, 1));
        // A policy keeps one state, alone or in a set.
        assert_eq!(
            store.decide_now(&"k", Change::Charge(0), &hour)[0].remaining,
            1
        );
    }

    #[test]
    fn sweeps_drop_the_idle_policies_of_a_set() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let policies = both(
            &named("second", Quota::per_second(1)),
            &named("minute", Quota::per_minute(1)),
        );
        for key in 0..FIRST_SWEEP_AT as u64 / 2 {
            store.decide_now(&key, Change::Charge(1), &policies);
        }
        assert_eq!(store.len(), FIRST_SWEEP_AT);
        clock.advance(Duration::from_secs(1));
        store.decide_now(&u64::MAX, Change::Charge(1), &policies);
        // Full again under "second" only: those states go, the others stay.
        assert_eq!(store.len(), FIRST_SWEEP_AT / 2 + 2);
        assert!(!store
            .decide_now(&0, Change::Charge(1), &policies)
            .is_allowed());
        clock.advance(Duration::from_secs(60));
        assert!(store
            .decide_now(&0, Change::Charge(1), &policies)
            .is_allowed());
    }
}

#[cfg(test)]
mod management {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, Outcome, Quota};

    fn policy(name: &str, quota: Quota) -> Policies {
        Policy::new(name, quota, Algorithm::TokenBucket)
            .unwrap()
            .into()
    }

    /// How many of 4 threads × `requests` on one key `store` admits.
    fn charged_by_threads(
        store: &MemoryStore<&str, ManualClock>,
        policy: &Policies,
        requests: usize,
    ) -> u64 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..requests)
                            .filter(|_| {
                                store
                                    .decide_now(&"k", Change::Charge(1), policy)
                                    .is_allowed()
                            })
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        })
    }

    #[test]
    fn refunds_racing_charges_never_over_admit() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy("default", Quota::per_hour(1).burst(50));
        let refunded = AtomicU64::new(0);
        let admitted = std::thread::scope(|scope| {
            scope.spawn(|| {
                for _ in 0..200 {
                    // Count the units each refund really gave back.
                    let before = store.decide_now(&"k", Change::Charge(0), &policy)[0].remaining;
                    let after = store.decide_now(&"k", Change::Refund(1), &policy)[0].remaining;
                    refunded.fetch_add(after.saturating_sub(before).min(1), Relaxed);
                }
            });
            charged_by_threads(&store, &policy, 2000)
        });
        // Every admission was paid by the burst or by a refund (at most one unit each,
        // at least what was seen), and nothing was lost.
        let left = store.decide_now(&"k", Change::Charge(0), &policy)[0].remaining;
        assert!(admitted + left <= 50 + 200, "{admitted} + {left}");
        assert!(
            admitted + left >= 50 + refunded.load(Relaxed) / 2,
            "{admitted} + {left}"
        );
    }

    #[test]
    fn resets_racing_charges_admit_the_burst_after_each_reset() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy("default", Quota::per_hour(1).burst(10));
        for _ in 0..50 {
            store.decide_now(&"k", Change::Reset, &policy);
            assert_eq!(charged_by_threads(&store, &policy, 20), 10);
        }
    }

    #[test]
    fn management_of_unknown_keys_remembers_nothing() {
        let store = MemoryStore::with_clock(ManualClock::new());
        let policy = policy("default", Quota::per_second(1).burst(3));
        assert_eq!(
            store.decide_now(&"k", Change::Reset, &policy)[0].remaining,
            3
        );
        assert_eq!(
            store.decide_now(&"k", Change::Refund(2), &policy)[0].remaining,
            3
        );
        assert!(store.is_empty());
    }

    #[test]
    fn a_block_holds_a_fixed_quota_too_then_lifts() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(clock.clone());
        let fixed = policy("trial", Quota::fixed(3));
        let blocked = store.decide_now(&"k", Change::Block(Duration::from_secs(60)), &fixed);
        let retry = Some(Duration::from_secs(60));
        assert_eq!(blocked[0].outcome, Outcome::Denied { retry_after: retry });
        clock.advance(Duration::from_secs(60));
        let decision = store.decide_now(&"k", Change::Charge(1), &fixed);
        assert_eq!((decision.is_allowed(), decision[0].remaining), (true, 2));
    }
}
