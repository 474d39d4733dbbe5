//! [`SpaceSaving`]: the heaviest keys of a stream in a fixed number of counters.

use std::collections::HashMap;
use std::hash::Hash;

/// The space-saving sketch (Metwally, Agrawal, El Abbadi, 2005): `capacity` counters, each
/// a key, its count and how much of that count may belong to keys it replaced. A key seen
/// once more increments its counter; a new key, once the counters are taken, replaces the
/// key with the smallest count and inherits that count as its error.
///
/// **Bounds**, for `n` keys added in all: every count is at least the key's true count and
/// at most `n / capacity` above it (`count − error` is a lower bound); every key seen more
/// than `n / capacity` times holds a counter. Memory is fixed: `capacity` counters and an
/// index of as many keys, allocated once.
pub(crate) struct SpaceSaving<K> {
    capacity: usize,
    counters: Vec<Counter<K>>,
    /// Where each key's counter is in `counters`.
    index: HashMap<K, usize>,
}

/// One key's counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Counter<K> {
    pub(crate) key: K,
    /// At least the key's true count.
    pub(crate) count: u64,
    /// At most this much of `count` may belong to keys it replaced.
    pub(crate) error: u64,
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    /// An empty sketch of `capacity` counters (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            counters: Vec::with_capacity(capacity),
            // Twice the keys it holds, so that a table worn by replacements is tidied in
            // place, never grown.
            index: HashMap::with_capacity(2 * capacity),
        }
    }

    /// Counts `key` `n` more times.
    pub(crate) fn add(&mut self, key: &K, n: u64) {
        if let Some(&at) = self.index.get(key) {
            self.counters[at].count += n;
            return;
        }
        if self.counters.len() < self.capacity {
            self.index.insert(key.clone(), self.counters.len());
            self.counters.push(Counter {
                key: key.clone(),
                count: n,
                error: 0,
            });
            return;
        }
        // Full: the smallest counter goes to the newcomer, its count kept as the error.
        let (at, smallest) = self
            .counters
            .iter()
            .enumerate()
            .min_by_key(|(_, counter)| counter.count)
            .map(|(at, counter)| (at, counter.count))
            .expect("a full sketch has counters");
        let replaced = std::mem::replace(
            &mut self.counters[at],
            Counter {
                key: key.clone(),
                count: smallest + n,
                error: smallest,
            },
        );
        self.index.remove(&replaced.key);
        self.index.insert(key.clone(), at);
    }

    /// The counters, heaviest first.
    pub(crate) fn top(&self) -> Vec<&Counter<K>> {
        let mut top: Vec<&Counter<K>> = self.counters.iter().collect();
        top.sort_by_key(|counter| std::cmp::Reverse(counter.count));
        top
    }

    /// Forgets everything, keeping the memory.
    pub(crate) fn clear(&mut self) {
        self.counters.clear();
        self.index.clear();
    }

    /// The counters allocated and the keys the index holds without growing.
    #[cfg(test)]
    fn allocated(&self) -> (usize, usize) {
        (self.counters.capacity(), self.index.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a deterministic stream of random numbers.
    fn random(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// Asserts that `sketch` allocated nothing since it read `start` (`allocated()`). The
    /// index's capacity reads lower while replaced keys leave tombstones, until a rehash in
    /// place tidies them; growing would have at least doubled it.
    fn assert_kept(sketch: &SpaceSaving<u64>, start: (usize, usize)) {
        let (counters, index) = sketch.allocated();
        assert_eq!(
            counters, start.0,
            "no counter was allocated after the start"
        );
        assert!(index <= start.1, "the index grew: {index} > {}", start.1);
    }

    /// A skewed flood: key `i` of `keys` drawn with probability ∝ 1/(i+1) (Zipf, s = 1).
    fn zipf_flood(events: usize, keys: u64) -> Vec<u64> {
        let weights: Vec<f64> = (0..keys).map(|i| 1.0 / (i + 1) as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut sum = 0.0;
        for weight in weights {
            sum += weight / total;
            cumulative.push(sum);
        }
        let mut next = random(0x9E37_79B9_7F4A_7C15);
        (0..events)
            .map(|_| {
                let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
                cumulative
                    .partition_point(|&c| c < u)
                    .min(keys as usize - 1) as u64
            })
            .collect()
    }

    #[test]
    fn a_skewed_flood_keeps_the_heavy_keys_within_the_bounds() {
        let (events, capacity) = (200_000, 64);
        let flood = zipf_flood(events, 100_000);
        let mut sketch = SpaceSaving::new(capacity);
        let mut truth: HashMap<u64, u64> = HashMap::new();
        let allocated = sketch.allocated();
        for key in &flood {
            sketch.add(key, 1);
            *truth.entry(*key).or_default() += 1;
        }
        assert_kept(&sketch, allocated);
        assert_eq!(sketch.top().len(), capacity);
        let slack = events as u64 / capacity as u64;
        for counter in sketch.top() {
            let real = truth[&counter.key];
            assert!(counter.count >= real, "{counter:?} undercounts {real}");
            assert!(
                counter.count - counter.error <= real,
                "{counter:?} over {real}"
            );
            assert!(counter.count - real <= slack, "{counter:?}: {real}");
        }
        // Every key seen more than n / capacity times holds a counter.
        let mut heavy: Vec<(u64, u64)> = truth.into_iter().filter(|&(_, n)| n > slack).collect();
        heavy.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        assert!(heavy.len() >= 4, "the flood is skewed: {heavy:?}");
        for (key, _) in &heavy {
            assert!(sketch.top().iter().any(|c| c.key == *key), "{key} lost");
        }
        // And the heaviest come first, in their true order.
        let top: Vec<u64> = sketch.top().iter().take(3).map(|c| c.key).collect();
        assert_eq!(top, [0, 1, 2]);
    }

    #[test]
    fn a_flood_of_distinct_keys_fills_the_counters_and_no_more() {
        let mut sketch = SpaceSaving::new(16);
        let allocated = sketch.allocated();
        let mut next = random(7);
        for _ in 0..100_000 {
            sketch.add(&next(), 1);
        }
        // One heavy key arriving late still surfaces.
        for _ in 0..100_000 / 16 + 1 {
            sketch.add(&u64::MAX, 1);
        }
        assert_eq!(sketch.top().len(), 16);
        assert_kept(&sketch, allocated);
        assert_eq!(sketch.top()[0].key, u64::MAX);
        sketch.clear();
        assert!(sketch.top().is_empty());
        assert_eq!(sketch.allocated(), allocated, "cleared, the memory stays");
    }
}
