//! [`Stats`]: live statistics of a limiter's decisions in fixed memory, fed by its decision
//! hook.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, Mutex, RwLock};

use super::sketch::SpaceSaving;
use crate::clock::{Clock, MonotonicClock};
use crate::observe::{outcome_index, OUTCOMES};
use crate::DecisionEvent;

/// Policies counted apart (by the name of the [decisive](crate::Decisions::decisive)
/// policy); the others are counted together as `(other)`.
const POLICIES: usize = 8;
/// Seconds of history kept, and shown.
const SECONDS: usize = 64;
pub(crate) const HISTORY: u64 = 60;
/// Minutes over which the top denied keys are counted.
pub(crate) const MINUTES: u64 = 5;
const NANOS: u64 = 1_000_000_000;

/// Counts by policy (the last row: the others) and outcome.
type Counts = [[AtomicU64; OUTCOMES.len()]; POLICIES + 1];

/// Live statistics of a limiter's decisions, in fixed memory: decisions per second by
/// policy and outcome over the last minute, totals since the start, and the keys denied
/// most over the last five minutes (a [space-saving sketch](https://doi.org/10.1007/978-3-540-30570-5_27)
/// of a fixed number of counters per minute). The [admin router](super::Admin) serves
/// them as JSON, as a stream of server-sent events and on its dashboard.
///
/// Fed by the limiter's decision hook, so a limiter without it pays nothing; with it, a
/// decision costs two atomic increments, and a denial a short lock.
///
/// ```
/// use tower_ratelimit::{admin::Stats, key, store::MemoryStore, Quota, RateLimitLayer};
///
/// let stats = Stats::new();
/// let layer = RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(5))
///     .on_decision(stats.observer());
/// ```
pub struct Stats<K> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    now: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The policies counted apart, in the order they were first seen.
    names: RwLock<Vec<Arc<str>>>,
    totals: Counts,
    seconds: Box<[Second]>,
    rolling: Mutex<()>,
    denied: Mutex<Denied<K>>,
}

/// One second's counts, in a ring.
struct Second {
    /// The second counted (plus one: 0 is none yet).
    at: AtomicU64,
    counts: Counts,
}

/// The denied keys: one sketch per minute, for the last minutes.
struct Denied<K> {
    capacity: usize,
    minutes: VecDeque<(u64, SpaceSaving<K>)>,
}

/// One policy's counts, for the answers.
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) totals: [u64; OUTCOMES.len()],
    /// The last [`HISTORY`] complete seconds, oldest first.
    pub(crate) per_second: Vec<[u64; OUTCOMES.len()]>,
}

/// A key among the most denied.
pub(crate) struct Heavy<K> {
    pub(crate) key: K,
    /// Denials over the window: never fewer than the key had in the minutes it was
    /// tracked.
    pub(crate) denied: u64,
    /// Denials it certainly had.
    pub(crate) at_least: u64,
}

impl<K: Hash + Eq + Clone + Send + 'static> Stats<K> {
    /// Statistics on the process's monotonic clock, the top denied keys from 64 counters
    /// a minute.
    pub fn new() -> Self {
        Self::with_clock(MonotonicClock::new())
    }

    /// Statistics on `clock` (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn with_clock(clock: impl Clock) -> Self {
        let counts = || std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)));
        Self {
            shared: Arc::new(Shared {
                now: Box::new(move || clock.now_nanos()),
                names: RwLock::default(),
                totals: counts(),
                seconds: (0..SECONDS)
                    .map(|_| Second {
                        at: AtomicU64::new(0),
                        counts: counts(),
                    })
                    .collect(),
                rolling: Mutex::new(()),
                denied: Mutex::new(Denied {
                    capacity: 64,
                    minutes: VecDeque::with_capacity(MINUTES as usize + 1),
                }),
            }),
        }
    }

    /// Tracks the denied keys with `counters` counters a minute (default 64, at least 1):
    /// a key denied more than `1 / counters` of a minute's denials is certain to be listed.
    pub fn counters(self, counters: usize) -> Self {
        self.shared.lock_denied().capacity = counters.max(1);
        self
    }

    /// A decision hook feeding these statistics, for
    /// [`LimiterBuilder::on_decision`](crate::LimiterBuilder::on_decision) or
    /// [`RateLimitLayer::on_decision`](crate::RateLimitLayer::on_decision). Call
    /// [`record`](Self::record) from a hook of your own to feed them as well.
    pub fn observer(&self) -> impl Fn(&DecisionEvent<'_, K>) + Send + Sync + 'static {
        let stats = self.clone();
        move |event| stats.record(event)
    }

    /// Counts one decision.
    pub fn record(&self, event: &DecisionEvent<'_, K>) {
        let shared = &*self.shared;
        let outcome = outcome_index(event.decision);
        let row = shared.row(event.policy.name());
        let now = (shared.now)();
        shared.totals[row][outcome].fetch_add(1, Relaxed);
        shared.second(now / NANOS).counts[row][outcome].fetch_add(1, Relaxed);
        if matches!(OUTCOMES[outcome], "denied" | "too_costly") {
            shared.lock_denied().add(event.key, now / (60 * NANOS));
        }
    }

    /// The current second (since the statistics started), and each policy's counts.
    pub(crate) fn rows(&self) -> (u64, Vec<Row>) {
        let shared = &*self.shared;
        let now = (shared.now)() / NANOS;
        let read = |counts: &Counts, row: usize| counts[row].each_ref().map(|n| n.load(Relaxed));
        let names = shared
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut rows: Vec<(String, usize)> = names.iter().map(|n| n.to_string()).zip(0..).collect();
        if read(&shared.totals, POLICIES).iter().any(|&n| n > 0) {
            rows.push(("(other)".to_owned(), POLICIES));
        }
        let rows = rows
            .into_iter()
            .map(|(name, row)| Row {
                name,
                totals: read(&shared.totals, row),
                per_second: (now..now + HISTORY)
                    .map(|ahead| {
                        // `ahead - HISTORY`, which is before the start for the first ones.
                        let second = ahead.checked_sub(HISTORY);
                        let slot = second.map(|second| &shared.seconds[second as usize % SECONDS]);
                        match (slot, second) {
                            (Some(slot), Some(second)) if slot.at.load(Acquire) == second + 1 => {
                                read(&slot.counts, row)
                            }
                            _ => [0; OUTCOMES.len()],
                        }
                    })
                    .collect(),
            })
            .collect();
        (now, rows)
    }

    /// The `n` keys denied most over the last [`MINUTES`] minutes, most first.
    pub(crate) fn top_denied(&self, n: usize) -> Vec<Heavy<K>> {
        let shared = &*self.shared;
        let minute = (shared.now)() / (60 * NANOS);
        let denied = shared.lock_denied();
        let mut merged: HashMap<&K, Heavy<K>> = HashMap::new();
        for (_, sketch) in denied
            .minutes
            .iter()
            .filter(|(at, _)| at + MINUTES > minute)
        {
            for counter in sketch.top() {
                let heavy = merged.entry(&counter.key).or_insert_with(|| Heavy {
                    key: counter.key.clone(),
                    denied: 0,
                    at_least: 0,
                });
                heavy.denied += counter.count;
                heavy.at_least += counter.count - counter.error;
            }
        }
        let mut top: Vec<Heavy<K>> = merged.into_values().collect();
        top.sort_by_key(|heavy| std::cmp::Reverse((heavy.denied, heavy.at_least)));
        top.truncate(n);
        top
    }

    /// The first key among those tracked (the denied ones of the last minutes) for which
    /// `f` holds.
    pub(crate) fn find(&self, mut f: impl FnMut(&K) -> bool) -> Option<K> {
        let denied = self.shared.lock_denied();
        let mut keys = denied.minutes.iter().flat_map(|(_, sketch)| sketch.top());
        keys.find(|counter| f(&counter.key))
            .map(|counter| counter.key.clone())
    }
}

impl<K> Shared<K> {
    /// The row of the policy named `name`.
    fn row(&self, name: &str) -> usize {
        let find = |names: &[Arc<str>]| names.iter().position(|known| **known == *name);
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = find(&names) {
            return row;
        }
        drop(names);
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = find(&names) {
            return row;
        }
        if names.len() == POLICIES {
            return POLICIES;
        }
        names.push(name.into());
        names.len() - 1
    }

    /// The counts of `second`, emptied first if they held an older one.
    fn second(&self, second: u64) -> &Second {
        let slot = &self.seconds[second as usize % SECONDS];
        if slot.at.load(Acquire) != second + 1 {
            let _rolling = self.rolling.lock().unwrap_or_else(|e| e.into_inner());
            if slot.at.load(Relaxed) != second + 1 {
                slot.counts
                    .iter()
                    .flatten()
                    .for_each(|n| n.store(0, Relaxed));
                slot.at.store(second + 1, Release);
            }
        }
        slot
    }

    fn lock_denied(&self) -> std::sync::MutexGuard<'_, Denied<K>> {
        self.denied.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq + Clone> Denied<K> {
    /// Counts a denial of `key` in `minute`.
    fn add(&mut self, key: &K, minute: u64) {
        if self.minutes.back().is_none_or(|(at, _)| *at != minute) {
            // The oldest minute's counters serve again, so memory stays as it was.
            let mut sketch = match self.minutes.len() as u64 >= MINUTES {
                true => self.minutes.pop_front().map(|(_, sketch)| sketch),
                false => None,
            }
            .unwrap_or_else(|| SpaceSaving::new(self.capacity));
            sketch.clear();
            self.minutes.push_back((minute, sketch));
        }
        if let Some((_, sketch)) = self.minutes.back_mut() {
            sketch.add(key, 1);
        }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for Stats<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> Clone for Stats<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> std::fmt::Debug for Stats<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.shared.names.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Stats")
            .field("policies", &names)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::{Algorithm, Decision, Decisions, Outcome, Policies, Policy, Quota};

    struct Feed {
        stats: Stats<u64>,
        clock: ManualClock,
        policies: Vec<Policies>,
    }

    impl Feed {
        fn new() -> Self {
            let clock = ManualClock::new();
            let policies = (0..12)
                .map(|i| {
                    let name = format!("p{i}");
                    Policy::new(&name, Quota::per_second(1), Algorithm::TokenBucket)
                        .unwrap()
                        .into()
                })
                .collect();
            Self {
                stats: Stats::with_clock(clock.clone()).counters(8),
                clock,
                policies,
            }
        }

        /// `n` decisions of `outcome` (`None`: unavailable) for `key` under policy `p`.
        fn feed(&self, p: usize, key: u64, outcome: Option<Outcome>, n: usize) {
            let policies = &self.policies[p];
            let decision = outcome.map(|outcome| Decision::new(outcome, 1, 0, None));
            let decisions = decision.map(Decisions::from);
            for _ in 0..n {
                self.stats.record(&DecisionEvent {
                    key: &key,
                    cost: 1,
                    policy: &policies[0],
                    decision: decision.as_ref(),
                    policies,
                    decisions: decisions.as_ref(),
                    source: crate::DecisionSource::Store,
                    error: None,
                    latency: Duration::ZERO,
                });
            }
        }

        fn advance(&self, secs: u64) {
            self.clock.advance(Duration::from_secs(secs));
        }
    }

    const DENIED: Option<Outcome> = Some(Outcome::Denied { retry_after: None });

    #[test]
    fn decisions_are_counted_per_second_by_policy_and_outcome() {
        let feed = Feed::new();
        feed.advance(10);
        feed.feed(0, 1, Some(Outcome::Allowed), 5);
        feed.feed(0, 1, DENIED, 2);
        feed.feed(1, 2, None, 1);
        feed.advance(1);
        feed.feed(0, 1, Some(Outcome::Allowed), 3);
        let delayed = Outcome::Delayed {
            wait: Duration::ZERO,
        };
        feed.feed(1, 2, Some(delayed), 4);
        feed.advance(1);
        let (second, rows) = feed.stats.rows();
        assert_eq!(second, 12);
        let (p0, p1) = (&rows[0], &rows[1]);
        assert_eq!((p0.name.as_str(), p1.name.as_str()), ("p0", "p1"));
        assert_eq!(p0.totals, [8, 0, 2, 0, 0]);
        assert_eq!(p1.totals, [0, 4, 0, 0, 1]);
        assert_eq!(p0.per_second.len() as u64, HISTORY);
        assert_eq!(p0.per_second[HISTORY as usize - 2], [5, 0, 2, 0, 0]);
        assert_eq!(p0.per_second[HISTORY as usize - 1], [3, 0, 0, 0, 0]);
        assert_eq!(p1.per_second[HISTORY as usize - 1], [0, 4, 0, 0, 0]);
        // A minute and more later the seconds are gone from the chart, not from the totals,
        // and a second's slot counts afresh when the ring comes round to it.
        feed.advance(SECONDS as u64);
        feed.feed(0, 1, Some(Outcome::Allowed), 1);
        feed.advance(1);
        let (_, rows) = feed.stats.rows();
        let chart: u64 = rows[0].per_second.iter().flatten().sum();
        assert_eq!((chart, rows[0].totals[0]), (1, 9));
    }

    #[test]
    fn policies_past_the_eighth_are_counted_together() {
        let feed = Feed::new();
        for p in 0..12 {
            feed.feed(p, 1, Some(Outcome::Allowed), p + 1);
        }
        let (_, rows) = feed.stats.rows();
        assert_eq!(rows.len(), POLICIES + 1);
        assert_eq!(rows[POLICIES].name, "(other)");
        assert_eq!(rows[POLICIES].totals[0], (9..=12).sum::<u64>());
    }

    #[test]
    fn the_top_denied_keys_cover_the_last_minutes_in_fixed_memory() {
        let feed = Feed::new();
        // Minute 0: key 7 is denied 2000 times among a flood of 10 000 keys denied once:
        // more than 1/8 of the denials, so 8 counters are sure to keep it.
        feed.feed(0, 7, DENIED, 2000);
        for key in 1000..11_000 {
            feed.feed(0, key, DENIED, 1);
        }
        // Allowed requests are not denials.
        feed.feed(0, 8, Some(Outcome::Allowed), 1000);
        feed.advance(60);
        feed.feed(0, 7, DENIED, 10);
        feed.feed(0, 9, DENIED, 50);
        let top = feed.stats.top_denied(20);
        assert_eq!(top[0].key, 7);
        let (denied, at_least) = (top[0].denied, top[0].at_least);
        assert!((2010..=2010 + 12_000 / 8).contains(&denied), "{denied}");
        assert!((10..=2010).contains(&at_least), "{at_least}");
        // In minute 1, two keys in eight counters: exact.
        let nine = top
            .iter()
            .find(|heavy| heavy.key == 9)
            .expect("key 9 is listed");
        assert_eq!((nine.denied, nine.at_least), (50, 50));
        assert!(feed.stats.find(|key| *key == 9).is_some());
        assert!(feed.stats.find(|key| *key == 8).is_none());
        {
            let denied = feed.stats.shared.lock_denied();
            assert_eq!(denied.minutes.len(), 2);
            assert!(denied
                .minutes
                .iter()
                .all(|(_, sketch)| sketch.top().len() <= 8));
        }
        // Each minute later a sketch is reused; five minutes on, minute 0 is forgotten.
        for _ in 0..10 {
            feed.advance(60);
            feed.feed(0, 3, DENIED, 1);
            assert!(feed.stats.shared.lock_denied().minutes.len() as u64 <= MINUTES);
        }
        let top = feed.stats.top_denied(3);
        assert_eq!((top.len(), top[0].key, top[0].denied), (1, 3, 5));
    }
}
